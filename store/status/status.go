// Package status is an error that carries the HTTP status it should be
// answered with, shared by a storage node's services (store/files,
// store/kvserver) and the node's HTTP front (store), which answers with
// it. It imports nothing of tide.
package status

import "fmt"

// Error is an error with the HTTP status it should be answered with.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Errorf makes an Error with code and a formatted message.
func Errorf(code int, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

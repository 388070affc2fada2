// Package status is an error that carries the HTTP status it should be
// answered with, and the Responder that answers with it, shared by a
// storage node's services (store/files, store/kvserver, store/engine)
// and the node (store), with the two helpers both ends of a node's HTTP
// API use (GetJSON, TrimNL). It imports nothing of tide.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNoRing refuses a request to a node that is in no ring and follows
// none: neither service can find a key's or a file's owner.
var ErrNoRing = errors.New("this node is not in a ring and knows none: POST /hash_ring, add_node, or a create or join over msgpack-rpc gives it one")

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

// Responder answers failed requests with their errors' statuses (500 for
// an error that carries none), counts requests by operation and status
// code, and logs the server errors.
type Responder struct {
	Requests *prometheus.CounterVec
	Log      *slog.Logger
}

// Fail answers w with err and counts the request under op.
func (r Responder) Fail(w http.ResponseWriter, op string, err error) {
	code := http.StatusInternalServerError
	var se *Error
	if errors.As(err, &se) {
		code = se.Code
	}
	r.Requests.WithLabelValues(op, strconv.Itoa(code)).Inc()
	if code >= 500 {
		r.Log.Warn("request failed", "op", op, "code", code, "err", err)
	}
	http.Error(w, err.Error(), code)
}

// OK counts a request under op that was answered with code.
func (r Responder) OK(op string, code int) {
	r.Requests.WithLabelValues(op, strconv.Itoa(code)).Inc()
}

// GetJSON GETs u and decodes its JSON body into v.
func GetJSON(ctx context.Context, hc *http.Client, u string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// TrimNL drops the line ends that end b: an error body as a message.
func TrimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

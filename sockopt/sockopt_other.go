//go:build !linux

package sockopt

import (
	"net"
	"syscall"
)

// control does nothing where TCP_USER_TIMEOUT is not offered: a
// connection to a peer cut off under it recovers at TCP's own pace.
func control(string, string, syscall.RawConn) error { return nil }

// Check accepts every connection where TCP_USER_TIMEOUT is not offered.
func Check(net.Conn) error { return nil }

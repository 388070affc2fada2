//go:build !linux

package transport

import (
	"net"
	"time"
)

// setUserTimeout does nothing where TCP_USER_TIMEOUT is not offered: a
// connection to a peer cut off under it recovers at TCP's own pace.
func setUserTimeout(net.Conn, time.Duration) error { return nil }

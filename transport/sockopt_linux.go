package transport

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT on c's socket: the kernel drops the
// connection once data it sent has gone unacknowledged for d.
func setUserTimeout(c net.Conn, d time.Duration) error {
	raw, err := rawConn(c)
	if err != nil || raw == nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	}); err != nil {
		return err
	}
	return serr
}

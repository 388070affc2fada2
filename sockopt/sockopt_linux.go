package sockopt

import (
	"crypto/tls"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// control sets TCP_USER_TIMEOUT on a socket before it connects.
func control(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(UnackedLimit.Milliseconds()))
	}); err != nil {
		return err
	}
	return serr
}

// Check reports an error unless c's socket (a TCP connection, or TLS
// over one) drops data unacknowledged for UnackedLimit: for the tests of
// the packages that dial.
func Check(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("a %T, not a TCP connection", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var ms int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		ms, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	if got := time.Duration(ms) * time.Millisecond; got != UnackedLimit {
		return fmt.Errorf("TCP_USER_TIMEOUT of the connection to %s is %v, want %v", c.RemoteAddr(), got, UnackedLimit)
	}
	return nil
}

package transport

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialSetsUserTimeout: every connection the transport dials drops
// itself once its data has gone unacknowledged for unackedLimit, so a
// peer cut off under an open connection is redialled instead of waiting
// for TCP's doubling resends (the chaos suite's autoscale scenario: a
// read waited 3 s for a node whose partition had healed 2 s before).
func TestDialSetsUserTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	var tr Transport
	c, err := tr.dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := userTimeout(c)
	if err != nil {
		t.Fatal(err)
	}
	if got != unackedLimit {
		t.Fatalf("TCP_USER_TIMEOUT of a dialled connection = %v, want %v", got, unackedLimit)
	}
}

// userTimeout reads TCP_USER_TIMEOUT back from c's socket.
func userTimeout(c net.Conn) (time.Duration, error) {
	raw, err := rawConn(c)
	if err != nil || raw == nil {
		return 0, err
	}
	var ms int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		ms, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil {
		return 0, err
	}
	return time.Duration(ms) * time.Millisecond, serr
}

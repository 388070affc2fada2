package transport

import (
	"net"
	"testing"

	"tide/sockopt"
)

// TestDialSetsUserTimeout: every connection the transport dials drops
// itself once its data has gone unacknowledged for sockopt.UnackedLimit, so a
// peer cut off under an open connection is redialled instead of waiting
// for TCP's doubling resends (the chaos suite's autoscale scenario: a
// read waited 3 s for a node whose partition had healed 2 s before).
func TestDialSetsUserTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The kernel completes the handshake; nothing needs to accept.
	var tr Transport
	c, err := tr.dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := sockopt.Check(c); err != nil {
		t.Fatal(err)
	}
}

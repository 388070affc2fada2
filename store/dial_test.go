package store

import (
	"context"
	"net"
	"testing"
	"time"

	"tide/sockopt"
)

// TestNodeDialerDropsUnacked: the connections a node's HTTP client dials
// to other nodes carry sockopt.UnackedLimit, so a file request queued on
// a connection to a node that was cut off is not held for TCP's doubling
// resends once the network heals.
func TestNodeDialerDropsUnacked(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The kernel completes the handshake; nothing needs to accept.
	c, err := nodeDialer(nil, time.Second)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := sockopt.Check(c); err != nil {
		t.Fatal(err)
	}
}

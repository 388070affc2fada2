package sockopt

import (
	"net"
	"testing"
)

// TestDialerSetsUserTimeout: a connection from Dialer carries
// UnackedLimit (on Linux).
func TestDialerSetsUserTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The kernel completes the handshake; nothing needs to accept.
	c, err := Dialer(0).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := Check(c); err != nil {
		t.Fatal(err)
	}
}

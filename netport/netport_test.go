package netport

import (
	"net"
	"strconv"
	"testing"
)

func TestPick(t *testing.T) {
	for _, tc := range []struct{ elo, ehi, lo, hi int }{
		{32768, 60999, 20000, 32767}, // Linux's default
		{49152, 65535, 20000, 49151}, // IANA's
		{1024, 60999, 61000, 65535},  // little below, room above
		{1024, 65000, 1, 0},          // no room
		{20500, 65000, 1, 0},
	} {
		lo, hi := pick(tc.elo, tc.ehi)
		if lo != tc.lo || hi != tc.hi {
			t.Errorf("pick(%d, %d) = %d, %d; want %d, %d", tc.elo, tc.ehi, lo, hi, tc.lo, tc.hi)
		}
	}
}

func TestParseRange(t *testing.T) {
	if lo, hi, err := parseRange("32768\t60999\n"); err != nil || lo != 32768 || hi != 60999 {
		t.Errorf("parseRange: %d %d %v", lo, hi, err)
	}
	for _, bad := range []string{"", "1", "a b", "5 4", "0 10", "1 70000", "1 2 3"} {
		if _, _, err := parseRange(bad); err == nil {
			t.Errorf("parseRange(%q) took it", bad)
		}
	}
}

// A listener asked for any port gets one outside the ephemeral range,
// where no outgoing connection takes it.
func TestListenOutsideEphemeral(t *testing.T) {
	lo, hi := stableRange()
	if lo > hi {
		t.Skip("this machine's ephemeral range leaves too few ports outside it")
	}
	for range 20 {
		ln, err := Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if p < lo || p > hi {
			t.Fatalf("Listen took port %d, outside [%d, %d]", p, lo, hi)
		}
	}
	// A given port is bound as given.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if _, err := Listen("127.0.0.1:" + strconv.Itoa(port)); err == nil {
		t.Fatal("Listen bound a port another listener holds")
	}
	ln.Close()
	if _, err := Listen("127.0.0.1"); err == nil {
		t.Fatal("Listen took an address without a port")
	}
}

// Package chord implements Chord ring membership: identifiers, the finger
// table, the successor list, and the periodic stabilize, notify, fix_fingers
// and check_predecessor work (Stoica et al., 2001).
//
// A Node holds no sockets, goroutines or clocks. It reaches other nodes only
// through the Transport seam and advances only when its driver calls Tick, so
// the same code runs over msgpack-rpc in production and over the
// deterministic in-memory network in package sim. It imports nothing of
// tide.
package chord

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
)

// ID is a position on the 32-bit Chord identifier circle.
type ID uint32

// Bits is the size of the identifier space and of the finger table.
const Bits = 32

// KeyOf maps a file name to its ring position: the low 32 bits of
// MD5(name), i.e. the last four bytes of the digest read big-endian.
// KeyOf("a.txt") is 607204990.
func KeyOf(name string) ID {
	sum := md5.Sum([]byte(name))
	return ID(binary.BigEndian.Uint32(sum[12:]))
}

// IDOfAddr gives a node the ring position of its "ip:port" address.
func IDOfAddr(addr string) ID { return KeyOf(addr) }

// Between reports whether x lies in the open interval (a, b) walking
// clockwise. When a == b the interval is the whole ring except a.
func Between(x, a, b ID) bool {
	if a < b {
		return a < x && x < b
	}
	return x > a || x < b
}

// InHalfOpen reports whether x lies in (a, b]. When a == b the interval is
// the whole ring.
func InHalfOpen(x, a, b ID) bool {
	return x == b || Between(x, a, b)
}

// Ref names a node on the wire: its Chord address and its identifier. The
// zero Ref is the empty node ["", 0, 0].
type Ref struct {
	IP   string
	Port int
	ID   ID
}

// IsZero reports whether r is the empty node.
func (r Ref) IsZero() bool { return r.IP == "" && r.Port == 0 }

// Addr is the node's Chord address as "ip:port".
func (r Ref) Addr() string { return net.JoinHostPort(r.IP, strconv.Itoa(r.Port)) }

func (r Ref) String() string {
	if r.IsZero() {
		return "<none>"
	}
	return fmt.Sprintf("%s#%d", r.Addr(), r.ID)
}

// RefFor builds the Ref of a node listening on addr ("ip:port"), with the
// identifier id.
func RefFor(addr string, id ID) (Ref, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Ref{}, fmt.Errorf("chord address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return Ref{}, fmt.Errorf("chord address %q: bad port", addr)
	}
	return Ref{IP: host, Port: p, ID: id}, nil
}

// SuccessorAmong is the brute-force answer to find_successor(id) over a
// known set of nodes: the first node at or after id, wrapping around. Tests
// and benchmarks check lookups against it.
func SuccessorAmong(refs []Ref, id ID) Ref {
	var best, lowest Ref
	for _, r := range refs {
		if lowest.IsZero() || r.ID < lowest.ID {
			lowest = r
		}
		if r.ID >= id && (best.IsZero() || r.ID < best.ID) {
			best = r
		}
	}
	if best.IsZero() {
		return lowest
	}
	return best
}

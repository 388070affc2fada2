package bench

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"tide/paxos"
)

// The synthetic peers of `tide bench component` share the machine with
// the role they flood, so they must cost it far less than the role does:
// they never encode a message in the loop (a stamp is encoded once and
// copied with a few fields patched) and never decode one in full (peek
// reads the few fields they need and skips the rest).

// marker returns the i-th placeholder value of a stamp's fields: a value
// no real field holds, so that its bytes are found in the encoding.
func marker(i int) uint64 { return 0x5a17_c0de_0000_0000 | uint64(i+1) }

// markerKey returns the placeholder for a string field of 16 characters
// that a stamp fills with the hexadecimal digits of a number.
func markerKey(i int) string { return fmt.Sprintf("%016x", marker(i)) }

// stamp is a message encoded once, with placeholder fields at known
// offsets that fill replaces in a fresh copy. It relies on msgpack's
// encoding of a uint64 field in a fixed 9 bytes (0xcf and 8 bytes, the
// library's default), and of a string in its own bytes.
type stamp struct {
	frame  []byte
	fields []stampField
}

type stampField struct {
	off int
	hex bool // 16 hexadecimal digits, not 8 big-endian bytes
}

// newStamp encodes m, in which the caller put marker(i) or markerKey(i)
// in each of n fields, i from 0 to n-1; fill takes their values in that
// order.
func newStamp(m *paxos.Message, n int) (stamp, error) {
	b, err := paxos.Encode(m)
	if err != nil {
		return stamp{}, err
	}
	s := stamp{frame: b}
	for i := range n {
		num := binary.BigEndian.AppendUint64([]byte{0xcf}, marker(i))
		key := []byte(markerKey(i))
		f := stampField{}
		pat := num
		if bytes.Count(b, num) == 0 {
			f.hex, pat = true, key
		}
		if c := bytes.Count(b, pat); c != 1 {
			return stamp{}, fmt.Errorf("stamp of %s: placeholder %d found %d times", m.Kind, i, c)
		}
		f.off = bytes.Index(b, pat)
		if !f.hex {
			f.off++ // past 0xcf
		}
		s.fields = append(s.fields, f)
	}
	return s, nil
}

// fill returns a copy of the stamp with its fields set to vals, in order.
func (s stamp) fill(vals ...uint64) []byte {
	b := bytes.Clone(s.frame)
	var num [8]byte
	for i, f := range s.fields {
		if f.hex {
			binary.BigEndian.PutUint64(num[:], vals[i])
			hex.Encode(b[f.off:f.off+16], num[:])
		} else {
			binary.BigEndian.PutUint64(b[f.off:], vals[i])
		}
	}
	return b
}

// head is what a synthetic peer reads of a message.
type head = paxos.Head

// peek reads a message's head, skipping everything else.
func peek(frame []byte) (head, error) { return paxos.Peek(frame) }

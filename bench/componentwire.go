package bench

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

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
type head struct {
	Kind   paxos.Kind
	From   string
	Ballot paxos.Ballot
	Slot   uint64
	// Items counts the commands of a batch or the replies of a reply
	// batch.
	Items int
	// LastSeq is the sequence number of a reply batch's last reply.
	LastSeq uint64
	// Refused counts replies with an error (a reply, or those of a reply
	// batch).
	Refused int
}

// peek reads a message's head, skipping everything else.
func peek(frame []byte) (head, error) {
	var h head
	d := msgpack.GetDecoder()
	defer msgpack.PutDecoder(d)
	d.Reset(bytes.NewReader(frame))
	n, err := d.DecodeMapLen()
	if err != nil {
		return h, err
	}
	for range n {
		k, err := d.DecodeString()
		if err != nil {
			return h, err
		}
		switch k {
		case "k":
			var v uint8
			v, err = d.DecodeUint8()
			h.Kind = paxos.Kind(v)
		case "f":
			h.From, err = d.DecodeString()
		case "b":
			err = d.Decode(&h.Ballot)
		case "s":
			h.Slot, err = d.DecodeUint64()
		case "bt":
			h.Items, err = skipArray(d)
		case "rp":
			err = peekReplies(d, &h)
		case "r":
			var refused bool
			_, refused, err = peekReply(d)
			if refused {
				h.Refused++
			}
		default:
			err = d.Skip()
		}
		if err != nil {
			return h, fmt.Errorf("peek at field %q: %w", k, err)
		}
	}
	return h, nil
}

func skipArray(d *msgpack.Decoder) (int, error) {
	n, err := d.DecodeArrayLen()
	for i := 0; i < n && err == nil; i++ {
		err = d.Skip()
	}
	return max(n, 0), err
}

func peekReplies(d *msgpack.Decoder, h *head) error {
	n, err := d.DecodeArrayLen()
	if err != nil {
		return err
	}
	for range n {
		seq, refused, err := peekReply(d)
		if err != nil {
			return err
		}
		h.Items++
		h.LastSeq = seq
		if refused {
			h.Refused++
		}
	}
	return nil
}

// peekReply reads a paxos.Reply's sequence number and whether it carries
// an error.
func peekReply(d *msgpack.Decoder) (seq uint64, refused bool, err error) {
	n, err := d.DecodeMapLen()
	for i := 0; i < n && err == nil; i++ {
		var k string
		if k, err = d.DecodeString(); err != nil {
			break
		}
		switch k {
		case "s":
			seq, err = d.DecodeUint64()
		case "e":
			var e string
			e, err = d.DecodeString()
			refused = e != ""
		default:
			err = d.Skip()
		}
	}
	return seq, refused, err
}

// Package wire frames and bounds MessagePack values before they are
// decoded. The msgpack library trusts length headers and allocates whatever
// they claim, so a few bytes of garbage could ask for gigabytes; every
// decoder of untrusted input in tide runs its bytes through here first.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrBad wraps every malformed-input error.
var ErrBad = errors.New("malformed msgpack")

// source hands out the next n bytes of a value.
type source interface {
	next(n int) ([]byte, error)
	used() int
}

type sliceSource struct {
	b   []byte
	off int
}

func (s *sliceSource) next(n int) ([]byte, error) {
	if n < 0 || n > len(s.b)-s.off {
		return nil, fmt.Errorf("%w: value runs past the end of its %d bytes", ErrBad, len(s.b))
	}
	p := s.b[s.off : s.off+n]
	s.off += n
	return p, nil
}

func (s *sliceSource) used() int { return s.off }

type readerSource struct {
	r   *bufio.Reader
	buf []byte
	max int
}

func (s *readerSource) next(n int) ([]byte, error) {
	if n < 0 || len(s.buf)+n > s.max {
		return nil, fmt.Errorf("%w: message longer than %d bytes", ErrBad, s.max)
	}
	start := len(s.buf)
	s.buf = append(s.buf, make([]byte, n)...)
	if _, err := io.ReadFull(s.r, s.buf[start:]); err != nil {
		if start > 0 && err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return s.buf[start:], nil
}

func (s *readerSource) used() int { return len(s.buf) }

// head is what a value's first byte says of its size.
type head struct {
	// lenSize is the bytes of a length field after the byte (0: none).
	lenSize int
	// fixed is the payload bytes, or the elements, of a value with no
	// length field.
	fixed int
	// elems says the length (or fixed) counts child values, perLen of
	// them per unit (2 for a map's key and value), rather than bytes.
	elems  bool
	perLen int
	// ext: an extension has a type byte beyond its length.
	ext bool
	bad bool // a reserved byte
	// bytes: a str or a bin, whose payload is its bytes.
	bytes bool
}

// heads classifies every first byte once.
var heads = func() (t [256]head) {
	for i := range t {
		c := byte(i)
		h := head{perLen: 1}
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			h.elems, h.fixed, h.perLen = true, int(c&0x0f), 2
		case c >= 0x90 && c <= 0x9f:
			h.elems, h.fixed = true, int(c&0x0f)
		case c >= 0xa0 && c <= 0xbf:
			h.fixed, h.bytes = int(c&0x1f), true
		case c == 0xc4 || c == 0xd9:
			h.lenSize, h.bytes = 1, true
		case c == 0xc5 || c == 0xda:
			h.lenSize, h.bytes = 2, true
		case c == 0xc6 || c == 0xdb:
			h.lenSize, h.bytes = 4, true
		case c == 0xc7:
			h.lenSize, h.ext = 1, true
		case c == 0xc8:
			h.lenSize, h.ext = 2, true
		case c == 0xc9:
			h.lenSize, h.ext = 4, true
		case c == 0xca || c == 0xce || c == 0xd2:
			h.fixed = 4
		case c == 0xcb || c == 0xcf || c == 0xd3:
			h.fixed = 8
		case c == 0xcc || c == 0xd0:
			h.fixed = 1
		case c == 0xcd || c == 0xd1:
			h.fixed = 2
		case c >= 0xd4 && c <= 0xd8:
			h.fixed = 1 + 1<<(c-0xd4)
		case c == 0xdc:
			h.elems, h.lenSize = true, 2
		case c == 0xdd:
			h.elems, h.lenSize = true, 4
		case c == 0xde:
			h.elems, h.lenSize, h.perLen = true, 2, 2
		case c == 0xdf:
			h.elems, h.lenSize, h.perLen = true, 4, 2
		default:
			h.bad = true
		}
		t[i] = h
	}
	return t
}()

// sizeOf returns what follows the header of a value h classifies, given
// its length field (if it has one): payload bytes, or child values; ok
// is false for a length beyond limit.
func (h *head) sizeOf(length uint64, limit int) (payload, children int, ok bool) {
	n := h.fixed
	if h.lenSize > 0 {
		if length > uint64(limit) {
			return 0, 0, false
		}
		n = int(length)
	}
	if h.elems {
		return 0, n * h.perLen, true
	}
	if h.ext {
		n++
	}
	return n, 0, true
}

func tooLong(length uint64, limit int) error {
	return fmt.Errorf("%w: length %d exceeds %d", ErrBad, length, limit)
}

// lengthOf reads a big-endian length field of 1, 2 or 4 bytes.
func lengthOf(b []byte) uint64 {
	switch len(b) {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(binary.BigEndian.Uint16(b))
	default:
		return uint64(binary.BigEndian.Uint32(b))
	}
}

// scan walks exactly one value, checking that no container claims more
// elements, and no string, binary or extension more bytes, than can remain
// within limit bytes.
func scan(src source, limit int) error {
	for pending := 1; pending > 0; pending-- {
		if pending > limit-src.used() {
			return fmt.Errorf("%w: more elements than bytes allowed", ErrBad)
		}
		b, err := src.next(1)
		if err != nil {
			return err
		}
		h := &heads[b[0]]
		if h.bad {
			return fmt.Errorf("%w: reserved byte 0x%02x", ErrBad, b[0])
		}
		var length uint64
		if h.lenSize > 0 {
			if b, err = src.next(h.lenSize); err != nil {
				return err
			}
			length = lengthOf(b)
		}
		payload, children, ok := h.sizeOf(length, limit)
		if !ok {
			return tooLong(length, limit)
		}
		pending += children
		if _, err := src.next(payload); err != nil {
			return err
		}
	}
	return nil
}

// scanSlice is scan over a slice, without an interface call per byte or
// an allocation (every decoder of every message runs it): it returns the
// bytes the value used.
func scanSlice(b []byte) (int, error) {
	off, limit := 0, len(b)
	past := func() error {
		return fmt.Errorf("%w: value runs past the end of its %d bytes", ErrBad, limit)
	}
	for pending := 1; pending > 0; pending-- {
		if pending > limit-off {
			return 0, fmt.Errorf("%w: more elements than bytes allowed", ErrBad)
		}
		if off >= limit {
			return 0, past()
		}
		h := &heads[b[off]]
		if h.bad {
			return 0, fmt.Errorf("%w: reserved byte 0x%02x", ErrBad, b[off])
		}
		off++
		var length uint64
		if h.lenSize > 0 {
			if h.lenSize > limit-off {
				return 0, past()
			}
			length = lengthOf(b[off : off+h.lenSize])
			off += h.lenSize
		}
		payload, children, ok := h.sizeOf(length, limit)
		if !ok {
			return 0, tooLong(length, limit)
		}
		pending += children
		if payload > limit-off {
			return 0, past()
		}
		off += payload
	}
	return off, nil
}

// Bytes reads the str or bin at b[i:] (msgpack's decoder takes either
// for a string or a byte slice) and returns its payload, a slice of b,
// and the index after it; ok is false for any other type or a value
// that runs past b.
func Bytes(b []byte, i int) (payload []byte, next int, ok bool) {
	if i < 0 || i >= len(b) {
		return nil, 0, false
	}
	h := &heads[b[i]]
	if !h.bytes {
		return nil, 0, false
	}
	i++
	n := h.fixed
	if h.lenSize > 0 {
		if h.lenSize > len(b)-i {
			return nil, 0, false
		}
		v := lengthOf(b[i : i+h.lenSize])
		i += h.lenSize
		if v > uint64(len(b)-i) {
			return nil, 0, false
		}
		n = int(v)
	}
	if n > len(b)-i {
		return nil, 0, false
	}
	return b[i : i+n : i+n], i + n, true
}

// Check reports whether b holds exactly one well-bounded msgpack value.
func Check(b []byte) error {
	n, err := scanSlice(b)
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("%w: %d bytes after the value", ErrBad, len(b)-n)
	}
	return nil
}

// ReadValue reads the bytes of exactly one msgpack value of at most max
// bytes from r.
func ReadValue(r *bufio.Reader, max int) ([]byte, error) {
	src := &readerSource{r: r, buf: make([]byte, 0, 64), max: max}
	if err := scan(src, max); err != nil {
		return nil, err
	}
	return src.buf, nil
}

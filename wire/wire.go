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

// scan walks exactly one value, checking that no container claims more
// elements, and no string, binary or extension more bytes, than can remain
// within limit bytes.
func scan(src source, limit int) error {
	length := func(size int) (int, error) {
		b, err := src.next(size)
		if err != nil {
			return 0, err
		}
		var v uint64
		switch size {
		case 1:
			v = uint64(b[0])
		case 2:
			v = uint64(binary.BigEndian.Uint16(b))
		default:
			v = uint64(binary.BigEndian.Uint32(b))
		}
		if v > uint64(limit) {
			return 0, fmt.Errorf("%w: length %d exceeds %d", ErrBad, v, limit)
		}
		return int(v), nil
	}
	for pending := 1; pending > 0; pending-- {
		if pending > limit-src.used() {
			return fmt.Errorf("%w: more elements than bytes allowed", ErrBad)
		}
		h, err := src.next(1)
		if err != nil {
			return err
		}
		c := h[0]
		var payload, children int
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			children = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			children = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			payload = int(c & 0x1f)
		case c == 0xc4 || c == 0xd9:
			payload, err = length(1)
		case c == 0xc5 || c == 0xda:
			payload, err = length(2)
		case c == 0xc6 || c == 0xdb:
			payload, err = length(4)
		case c == 0xc7:
			payload, err = length(1)
			payload++
		case c == 0xc8:
			payload, err = length(2)
			payload++
		case c == 0xc9:
			payload, err = length(4)
			payload++
		case c == 0xca || c == 0xce || c == 0xd2:
			payload = 4
		case c == 0xcb || c == 0xcf || c == 0xd3:
			payload = 8
		case c == 0xcc || c == 0xd0:
			payload = 1
		case c == 0xcd || c == 0xd1:
			payload = 2
		case c >= 0xd4 && c <= 0xd8:
			payload = 1 + 1<<(c-0xd4)
		case c == 0xdc:
			children, err = length(2)
		case c == 0xdd:
			children, err = length(4)
		case c == 0xde:
			children, err = length(2)
			children *= 2
		case c == 0xdf:
			children, err = length(4)
			children *= 2
		default:
			return fmt.Errorf("%w: reserved byte 0x%02x", ErrBad, c)
		}
		if err != nil {
			return err
		}
		if _, err := src.next(payload); err != nil {
			return err
		}
		pending += children
	}
	return nil
}

// Check reports whether b holds exactly one well-bounded msgpack value.
func Check(b []byte) error {
	src := &sliceSource{b: b}
	if err := scan(src, len(b)); err != nil {
		return err
	}
	if src.off != len(b) {
		return fmt.Errorf("%w: %d bytes after the value", ErrBad, len(b)-src.off)
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

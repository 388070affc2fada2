package antipode

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// The lineage encoding, format versions 1 and 2. Binary form, every
// integer an unsigned LEB128 varint (encoding/binary's Uvarint):
//
//	format    1 byte, = 1 or 2
//	nstores   varint; then per store: length varint, name bytes (UTF-8, non-empty)
//	nwrites   varint; then per write: store index varint (< nstores),
//	          key length varint, key bytes, version varint,
//	          and in format 2 only: origin varint (WriteID.Origin, 0: none)
//
// A lineage none of whose writes has an origin is written in format 1, so
// that builds that read format 1 only still read it.
//
// Store names are listed once and writes refer to them by index, so a
// lineage of many writes to a few stores costs little more than its keys.
// The text form, for HTTP headers, message attributes and gRPC metadata, is
// the binary form in unpadded base64url (RFC 4648 §5): header-safe, no
// escaping needed.
//
// A decoder reads only the format versions it knows and fails with
// ErrFormatVersion on a newer one rather than guess. Decoders bound their
// work by the input's length, which is at most MaxEncodedLen bytes.
const (
	// FormatVersion is the newest encoding this build reads and writes.
	FormatVersion = 2
	// MaxEncodedLen bounds the binary form a decoder accepts.
	MaxEncodedLen = 64 << 10
	// Header is the HTTP header (and NATS header, and gRPC metadata key in
	// lower case) that carries a lineage's text form.
	Header = "Antipode-Lineage"
)

// ErrFormatVersion is returned (wrapped) for a lineage encoded in a format
// version this build does not read, typically one written by a newer
// release: upgrade the reader.
var ErrFormatVersion = errors.New("unsupported lineage format version")

// ErrMalformed is returned (wrapped) for bytes that are not a lineage.
var ErrMalformed = errors.New("malformed lineage")

// MarshalBinary encodes the lineage in the binary form.
func (l *Lineage) MarshalBinary() ([]byte, error) {
	ws := l.Writes()
	stores := sortedStores(ws)
	format := byte(1)
	for _, w := range ws {
		if w.Origin != 0 {
			format = 2
			break
		}
	}
	b := make([]byte, 0, 16+len(ws)*12)
	b = append(b, format)
	b = binary.AppendUvarint(b, uint64(len(stores)))
	for _, s := range stores {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(ws)))
	for _, w := range ws {
		i, _ := slices.BinarySearch(stores, w.Store)
		b = binary.AppendUvarint(b, uint64(i))
		b = binary.AppendUvarint(b, uint64(len(w.Key)))
		b = append(b, w.Key...)
		b = binary.AppendUvarint(b, w.Version)
		if format >= 2 {
			b = binary.AppendUvarint(b, w.Origin)
		}
	}
	if len(b) > MaxEncodedLen {
		return nil, fmt.Errorf("lineage of %d writes encodes to %d bytes, over the %d-byte limit", len(ws), len(b), MaxEncodedLen)
	}
	return b, nil
}

// UnmarshalBinary decodes the binary form into l, replacing its writes.
func (l *Lineage) UnmarshalBinary(b []byte) error {
	ws, err := decode(b)
	if err != nil {
		return err
	}
	n := NewLineage(ws...)
	l.mu.Lock()
	l.writes = n.writes
	l.mu.Unlock()
	return nil
}

// MarshalText encodes the lineage in the text form.
func (l *Lineage) MarshalText() ([]byte, error) {
	b, err := l.MarshalBinary()
	if err != nil {
		return nil, err
	}
	out := make([]byte, base64.RawURLEncoding.EncodedLen(len(b)))
	base64.RawURLEncoding.Encode(out, b)
	return out, nil
}

// UnmarshalText decodes the text form into l, replacing its writes.
func (l *Lineage) UnmarshalText(t []byte) error {
	if base64.RawURLEncoding.DecodedLen(len(t)) > MaxEncodedLen {
		return fmt.Errorf("%w: %d characters, over the %d-byte limit", ErrMalformed, len(t), MaxEncodedLen)
	}
	b := make([]byte, base64.RawURLEncoding.DecodedLen(len(t)))
	n, err := base64.RawURLEncoding.Decode(b, t)
	if err != nil {
		return fmt.Errorf("%w: not base64url: %v", ErrMalformed, err)
	}
	return l.UnmarshalBinary(b[:n])
}

// Encode returns the text form of ctx's lineage, "" if it has none.
func Encode(ctx context.Context) (string, error) {
	l := FromContext(ctx)
	if l.Len() == 0 {
		return "", nil
	}
	t, err := l.MarshalText()
	return string(t), err
}

// Decode parses a text form into a lineage; "" is an empty one.
func Decode(s string) (*Lineage, error) {
	l := &Lineage{}
	if s == "" {
		return l, nil
	}
	return l, l.UnmarshalText([]byte(s))
}

// Carrier is what a lineage is injected into and extracted from:
// http.Header and nats.Header both satisfy it.
type Carrier interface {
	Get(key string) string
	Set(key, value string)
}

// Inject writes ctx's lineage into c under Header; it writes nothing when
// ctx has no lineage.
func Inject(ctx context.Context, c Carrier) error {
	s, err := Encode(ctx)
	if err != nil || s == "" {
		return err
	}
	c.Set(Header, s)
	return nil
}

// Extract returns ctx carrying the lineage found in c (merged with one ctx
// may already carry), or ctx unchanged when c has none. A malformed or
// newer-format lineage is an error: a request that silently lost its
// lineage would read without waiting.
func Extract(ctx context.Context, c Carrier) (context.Context, error) {
	s := c.Get(Header)
	if s == "" {
		return ctx, nil
	}
	l, err := Decode(s)
	if err != nil {
		return ctx, fmt.Errorf("%s header: %w", Header, err)
	}
	return Transfer(ctx, NewContext(context.Background(), l)), nil
}

// decoder reads varints and byte strings, remembering the first error.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: at byte %d: %s", ErrMalformed, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad %s varint", what)
		return 0
	}
	d.off += n
	return v
}

// count reads a count of items that each take at least minSize bytes, and
// refuses one the remaining input cannot hold.
func (d *decoder) count(what string, minSize int) int {
	v := d.uvarint(what)
	if d.err == nil && v > uint64((len(d.b)-d.off)/minSize) {
		d.fail("%d %s cannot fit in %d bytes", v, what, len(d.b)-d.off)
		return 0
	}
	return int(v)
}

func (d *decoder) str(what string) string {
	n := d.uvarint(what + " length")
	if d.err == nil && n > uint64(len(d.b)-d.off) {
		d.fail("%s of %d bytes runs past the end", what, n)
	}
	if d.err != nil {
		return ""
	}
	s := string(d.b[d.off : d.off+int(n)])
	d.off += int(n)
	return s
}

func decode(b []byte) ([]WriteID, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(b) > MaxEncodedLen {
		return nil, fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrMalformed, len(b), MaxEncodedLen)
	}
	format := b[0]
	switch v := format; {
	case v == 0:
		return nil, fmt.Errorf("%w: format version 0", ErrMalformed)
	case v > FormatVersion:
		return nil, fmt.Errorf("%w: lineage is in format version %d, this build reads version %d only: upgrade the reader", ErrFormatVersion, v, FormatVersion)
	}
	d := &decoder{b: b, off: 1}
	stores := make([]string, d.count("stores", 2))
	for i := range stores {
		if stores[i] = d.str("store name"); d.err == nil && stores[i] == "" {
			d.fail("empty store name")
		}
	}
	minWrite := 3 // index, key length, version
	if format >= 2 {
		minWrite++ // origin
	}
	ws := make([]WriteID, d.count("writes", minWrite))
	for i := range ws {
		si := d.uvarint("store index")
		if d.err == nil && si >= uint64(len(stores)) {
			d.fail("store index %d, but %d stores", si, len(stores))
		}
		key := d.str("key")
		ver := d.uvarint("version")
		var origin uint64
		if format >= 2 {
			origin = d.uvarint("origin")
		}
		if d.err != nil {
			return nil, d.err
		}
		ws[i] = WriteID{Store: stores[si], Key: key, Version: ver, Origin: origin}
	}
	if d.err == nil && d.off != len(b) {
		d.fail("%d trailing bytes", len(b)-d.off)
	}
	return ws, d.err
}

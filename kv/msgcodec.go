package kv

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync/atomic"
)

// Messages are encoded by hand too: every client request costs a few of
// them, and reflection was a fifth of a coordinator's CPU. The bytes are
// the positional msgpack array the reflective encoder writes for Message
// (fields in declaration order, records through AppendRecord), so either
// side can read the other's.

// messageFields is the number of positional fields of Message.
const messageFields = 17

// AppendMessage appends m's encoding to b.
func AppendMessage(b []byte, m *Message) []byte {
	b = append(b, 0xdc, 0, messageFields) // array16: more than 15 fields
	b = appendUint(b, uint64(m.Kind))
	b = appendStr(b, m.From)
	b = appendStr(b, m.To)
	b = appendUint(b, m.ID)
	b = AppendRecord(b, &m.Rec)
	b = appendBool(b, m.Found)
	b = appendStr(b, m.Err)
	b = appendInt(b, int64(m.W))
	b = appendUint(b, uint64(m.Lo))
	b = appendUint(b, uint64(m.Hi))
	b = appendInt(b, int64(m.Buckets))
	b = appendArray(b, m.Hashes, func(b []byte, h *uint64) []byte { return appendUint(b, *h) })
	b = appendArray(b, m.Versions, func(b []byte, v *KeyVersion) []byte {
		b = append(b, 0x93)
		b = appendBin(b, v.Key)
		b = appendUint(b, v.Version)
		return appendBool(b, v.Tomb)
	})
	b = appendArray(b, m.Records, AppendRecord)
	b = appendArray(b, m.Keys, func(b []byte, k *[]byte) []byte { return appendBin(b, *k) })
	b = appendUint(b, m.Horizon)
	b = appendUint(b, m.Ballot)
	return b
}

// messageSize is an upper bound of m's encoding, to allocate once.
// EncodedSize bounds the bytes AppendMessage appends for m.
func EncodedSize(m *Message) int { return messageSize(m) }

func messageSize(m *Message) int {
	// 108 bytes of headers and fixed-size fields at most (array header 3,
	// kind 2, three string headers 15, ID 9, record 21, found 1, W 9, Lo and
	// Hi 10, buckets 9, four array headers 20, horizon 9).
	n := 124 + len(m.From) + len(m.To) + len(m.Err) + len(m.Rec.Key) + len(m.Rec.Value) + 9*len(m.Hashes)
	for i := range m.Versions {
		n += 16 + len(m.Versions[i].Key)
	}
	for i := range m.Records {
		n += 34 + len(m.Records[i].Key) + len(m.Records[i].Value)
	}
	for _, k := range m.Keys {
		n += 5 + len(k)
	}
	return n
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

func appendInt(b []byte, v int64) []byte {
	if v >= 0 {
		return appendUint(b, uint64(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n <= 31:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

// appendArray appends xs as an array, each element by f; nil as nil.
func appendArray[T any](b []byte, xs []T, f func([]byte, *T) []byte) []byte {
	if xs == nil {
		return append(b, 0xc0)
	}
	b = appendArrayLen(b, len(xs))
	for i := range xs {
		b = f(b, &xs[i])
	}
	return b
}

func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n <= 15:
		return append(b, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
}

// internTab holds recently decoded node addresses: a cluster has few, and
// every message names two, so decoding them need not allocate.
var internTab [256]atomic.Pointer[string]

// intern returns b as a string, shared with earlier calls for the same
// bytes while its slot of internTab holds it.
func intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > 128 {
		return string(b)
	}
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	slot := &internTab[h%uint32(len(internTab))]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	s := string(b)
	slot.Store(&s)
	return s
}

// DecodeMessage parses an encoded message. Byte slices in the result point
// into b, which the caller must not reuse. Lengths are checked against
// what is left of b before anything is allocated.
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	d := decoder{b: b}
	n := d.arrayLen()
	if d.err == nil && n < 3 {
		d.err = fmt.Errorf("%w: message of %d fields", errRecord, n)
	}
	field := 0
	next := func() bool { field++; return field <= n && d.err == nil }
	if next() {
		k := d.uint()
		if k > math.MaxUint8 {
			d.err = errRecord
		}
		m.Kind = Kind(k)
	}
	if next() {
		m.From = intern(d.bytes(true))
	}
	if next() {
		m.To = intern(d.bytes(true))
	}
	if next() {
		m.ID = d.uint()
	}
	if next() {
		m.Rec = d.record()
	}
	if next() {
		m.Found = d.bool()
	}
	if next() {
		m.Err = string(d.bytes(true))
	}
	if next() {
		m.W = int(d.int())
	}
	if next() {
		m.Lo = d.uint32()
	}
	if next() {
		m.Hi = d.uint32()
	}
	if next() {
		m.Buckets = int(d.int())
	}
	if next() {
		m.Hashes = decodeArray(&d, 1, d.uint)
	}
	if next() {
		m.Versions = decodeArray(&d, 3, func() KeyVersion {
			f := d.arrayLen()
			if d.err == nil && (f < 2 || f > 3) {
				d.err = errRecord
			}
			v := KeyVersion{Key: d.bytes(true), Version: d.uint()}
			if f == 3 {
				v.Tomb = d.bool()
			}
			return v
		})
	}
	if next() {
		m.Records = decodeArray(&d, 4, d.record)
	}
	if next() {
		m.Keys = decodeArray(&d, 1, func() []byte { return d.bytes(true) })
	}
	if next() {
		m.Horizon = d.uint()
	}
	if next() {
		m.Ballot = d.uint()
	}
	if d.err == nil && n > messageFields {
		d.err = fmt.Errorf("%w: message of %d fields", errRecord, n)
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%w: %d bytes after the message", errRecord, len(d.b))
	}
	if d.err != nil {
		return Message{}, d.err
	}
	return m, nil
}

// decodeArray reads an array (nil stays nil) of elements read by f, each
// taking minSize bytes at least, so that the allocation is bounded by the
// bytes left.
func decodeArray[T any](d *decoder, minSize int, f func() T) []T {
	c, ok := d.nilOrArray()
	if !ok {
		return nil
	}
	out := make([]T, 0, min(c, len(d.b)/minSize))
	for i := 0; i < c && d.err == nil; i++ {
		out = append(out, f())
	}
	return out
}

// record reads one record in place (see DecodeRecord).
func (d *decoder) record() Record {
	if d.err != nil {
		return Record{}
	}
	if len(d.b) > 0 && d.b[0] == 0xc0 {
		d.b = d.b[1:]
		return Record{}
	}
	n := d.arrayLen()
	if d.err == nil && (n < 3 || n > 6 || n == 5) {
		d.err = errRecord
	}
	r := Record{Key: d.bytes(true), Value: d.bytes(true), Version: d.uint()}
	if n >= 4 {
		r.Tomb = d.bool()
	}
	if n == 6 {
		if d.err == nil && (len(d.b) == 0 || d.b[0] != 0xc0) {
			d.err = errRecord
		} else if d.err == nil {
			d.b = d.b[1:]
		}
		r.Expire = d.uint()
	}
	if d.err != nil {
		return Record{}
	}
	return r
}

// nilOrArray reads an array header, or nil (ok false).
func (d *decoder) nilOrArray() (int, bool) {
	if d.err != nil {
		return 0, false
	}
	if len(d.b) > 0 && d.b[0] == 0xc0 {
		d.b = d.b[1:]
		return 0, false
	}
	if len(d.b) > 0 && d.b[0] == 0xdd {
		v := d.take(5)
		if v == nil {
			return 0, false
		}
		c := binary.BigEndian.Uint32(v[1:])
		if uint64(c) > uint64(len(d.b)) { // every element takes a byte at least
			d.err = errRecord
			return 0, false
		}
		return int(c), true
	}
	c := d.arrayLen()
	if d.err == nil && c > len(d.b) {
		d.err = errRecord
	}
	return c, d.err == nil
}

func (d *decoder) int() int64 {
	if d.err != nil || len(d.b) == 0 {
		return int64(d.uint()) // sets the error
	}
	switch c := d.b[0]; {
	case c >= 0xe0: // negative fixint
		d.b = d.b[1:]
		return int64(int8(c))
	case c >= 0xd0 && c <= 0xd3:
		size := 1 << (c - 0xd0)
		v := d.take(1 + size)
		if v == nil {
			return 0
		}
		switch size {
		case 1:
			return int64(int8(v[1]))
		case 2:
			return int64(int16(binary.BigEndian.Uint16(v[1:])))
		case 4:
			return int64(int32(binary.BigEndian.Uint32(v[1:])))
		}
		return int64(binary.BigEndian.Uint64(v[1:]))
	}
	u := d.uint()
	if u > math.MaxInt64 {
		d.err = errRecord
		return 0
	}
	return int64(u)
}

func (d *decoder) uint32() uint32 {
	u := d.uint()
	if u > math.MaxUint32 {
		d.err = errRecord
		return 0
	}
	return uint32(u)
}

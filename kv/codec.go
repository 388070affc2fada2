package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Records are encoded by hand on the hot paths (storage, every scan of
// anti-entropy): the bytes are the msgpack array [key, value, version, tomb]
// that the reflective encoder also writes and reads, without reflection.

// AppendRecord appends r's encoding to b. A record with a deadline has
// six fields: [key, value, version, tomb, nil, expire] (the fifth is the
// stub's value length, see AppendStub).
func AppendRecord(b []byte, r *Record) []byte {
	if r.Expire != 0 {
		b = append(b, 0x96)
	} else {
		b = append(b, 0x94)
	}
	b = appendBin(b, r.Key)
	b = appendBin(b, r.Value)
	b = append(b, 0xcf)
	b = binary.BigEndian.AppendUint64(b, r.Version)
	if r.Tomb {
		b = append(b, 0xc3)
	} else {
		b = append(b, 0xc2)
	}
	if r.Expire != 0 {
		b = append(b, 0xc0, 0xcf)
		b = binary.BigEndian.AppendUint64(b, r.Expire)
	}
	return b
}

func appendBin(b, v []byte) []byte {
	switch n := len(v); {
	case v == nil:
		return append(b, 0xc0)
	case n <= math.MaxUint8:
		b = append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		b = append(b, 0xc5)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0xc6)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	}
	return append(b, v...)
}

var errRecord = errors.New("malformed record")

// DecodeRecord parses an encoded record. Key and Value are copied out of
// b unless alias is set, in which case they point into b.
func DecodeRecord(b []byte, alias bool) (Record, error) {
	r, _, sep, err := decodeRecord(b, alias, false)
	if err == nil && sep {
		err = fmt.Errorf("%w: a stub, its value kept apart", errRecord)
	}
	return r, err
}

// AppendStub appends the stored stub of a record whose value is kept
// elsewhere (storage keeps large values apart from keys and versions, so
// scans that need no values read no values): the record without its
// value, and the value's length as a fifth field.
func AppendStub(b []byte, r *Record) []byte {
	if r.Expire != 0 {
		b = append(b, 0x96)
	} else {
		b = append(b, 0x95)
	}
	b = appendBin(b, r.Key)
	b = append(b, 0xc0, 0xcf)
	b = binary.BigEndian.AppendUint64(b, r.Version)
	if r.Tomb {
		b = append(b, 0xc3)
	} else {
		b = append(b, 0xc2)
	}
	b = append(b, 0xce)
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.Value)))
	if r.Expire != 0 {
		b = append(b, 0xcf)
		b = binary.BigEndian.AppendUint64(b, r.Expire)
	}
	return b
}

// DecodeStored parses what AppendRecord or AppendStub wrote. For a stub,
// sep is set and valueLen is the length of the value kept elsewhere.
func DecodeStored(b []byte, alias bool) (r Record, valueLen int, sep bool, err error) {
	return decodeRecord(b, alias, true)
}

func decodeRecord(b []byte, alias, stub bool) (Record, int, bool, error) {
	var r Record
	d := decoder{b: b}
	n := d.arrayLen()
	if d.err == nil && (n < 3 || n > 6) {
		d.err = fmt.Errorf("%w: %d fields", errRecord, n)
	}
	r.Key = d.bytes(alias)
	r.Value = d.bytes(alias)
	r.Version = d.uint()
	if n >= 4 {
		r.Tomb = d.bool()
	}
	var valueLen uint64
	sep := false
	if n >= 5 {
		if d.err == nil && len(d.b) > 0 && d.b[0] == 0xc0 && n == 6 {
			d.b = d.b[1:] // no value kept apart
		} else {
			sep = true
			valueLen = d.uint()
			if d.err == nil && (len(r.Value) != 0 || valueLen > math.MaxInt32) {
				d.err = errRecord
			}
		}
	}
	if n == 6 {
		r.Expire = d.uint()
	}
	if d.err == nil && len(d.b) != 0 && stub {
		d.err = fmt.Errorf("%w: %d bytes after it", errRecord, len(d.b))
	}
	if d.err != nil {
		return Record{}, 0, false, d.err
	}
	return r, int(valueLen), sep, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errRecord
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1() byte {
	v := d.take(1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (d *decoder) arrayLen() int {
	switch c := d.byte1(); {
	case d.err != nil:
		return 0
	case c&0xf0 == 0x90:
		return int(c & 0x0f)
	case c == 0xdc:
		if v := d.take(2); v != nil {
			return int(binary.BigEndian.Uint16(v))
		}
	default:
		d.err = errRecord
	}
	return 0
}

func (d *decoder) bytes(alias bool) []byte {
	var n int
	switch c := d.byte1(); {
	case d.err != nil:
		return nil
	case c == 0xc0:
		return nil
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xc4 || c == 0xd9:
		n = int(d.byte1())
	case c == 0xc5 || c == 0xda:
		if v := d.take(2); v != nil {
			n = int(binary.BigEndian.Uint16(v))
		}
	case c == 0xc6 || c == 0xdb:
		if v := d.take(4); v != nil {
			n = int(binary.BigEndian.Uint32(v))
		}
	default:
		d.err = errRecord
		return nil
	}
	v := d.take(n)
	if v == nil || alias {
		if v == nil && d.err == nil {
			return []byte{}
		}
		return v
	}
	return append([]byte{}, v...)
}

func (d *decoder) uint() uint64 {
	switch c := d.byte1(); {
	case d.err != nil:
		return 0
	case c <= 0x7f:
		return uint64(c)
	case c == 0xcc:
		return uint64(d.byte1())
	case c == 0xcd:
		if v := d.take(2); v != nil {
			return uint64(binary.BigEndian.Uint16(v))
		}
	case c == 0xce:
		if v := d.take(4); v != nil {
			return uint64(binary.BigEndian.Uint32(v))
		}
	case c == 0xcf:
		if v := d.take(8); v != nil {
			return binary.BigEndian.Uint64(v)
		}
	case c == 0xd0, c == 0xd1, c == 0xd2, c == 0xd3:
		size := map[byte]int{0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8}[c]
		v := d.take(size)
		if v == nil {
			return 0
		}
		var x int64
		switch size {
		case 1:
			x = int64(int8(v[0]))
		case 2:
			x = int64(int16(binary.BigEndian.Uint16(v)))
		case 4:
			x = int64(int32(binary.BigEndian.Uint32(v)))
		default:
			x = int64(binary.BigEndian.Uint64(v))
		}
		if x < 0 {
			d.err = errRecord
			return 0
		}
		return uint64(x)
	default:
		d.err = errRecord
	}
	return 0
}

func (d *decoder) bool() bool {
	switch c := d.byte1(); {
	case d.err != nil:
		return false
	case c == 0xc3:
		return true
	case c == 0xc2 || c == 0xc0:
		return false
	default:
		d.err = errRecord
	}
	return false
}

// MarshalMsgpack makes the reflective encoder write a Record (inside
// messages) through the hand-written codec.
func (r *Record) MarshalMsgpack() ([]byte, error) { return AppendRecord(nil, r), nil }

// UnmarshalMsgpack makes the reflective decoder read a Record through the
// hand-written codec.
func (r *Record) UnmarshalMsgpack(b []byte) error {
	d, err := DecodeRecord(b, false)
	if err != nil {
		return err
	}
	*r = d
	return nil
}

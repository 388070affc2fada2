package wire

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestCheck(t *testing.T) {
	good, _ := msgpack.Marshal(map[string]any{"a": []any{1, "x", []byte("yz"), 3.5, nil, true}})
	if err := Check(good); err != nil {
		t.Fatalf("valid value rejected: %v", err)
	}
	for name, b := range map[string][]byte{
		"array32 claiming 4G":  {0xdd, 0xff, 0xff, 0xff, 0xff},
		"bin32 claiming 4GB":   {0xc6, 0xff, 0xff, 0xff, 0xf0, 1},
		"str8 past the end":    {0xd9, 0x10, 'a'},
		"reserved byte":        {0xc1},
		"trailing bytes":       append(append([]byte(nil), good...), 0x01),
		"map16 missing values": {0xde, 0x00, 0x02, 0x01},
		"empty":                {},
	} {
		if err := Check(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestReadValueSplitsAStream(t *testing.T) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.Encode([]any{0, 1, "m", []any{}})
	enc.Encode("second")
	r := bufio.NewReader(&buf)
	for _, want := range []any{[]any{int8(0), int8(1), "m", []any{}}, "second"} {
		b, err := ReadValue(r, 1024)
		if err != nil {
			t.Fatal(err)
		}
		var got any
		if err := msgpack.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		gb, _ := msgpack.Marshal(got)
		wb, _ := msgpack.Marshal(want)
		if !bytes.Equal(gb, wb) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if _, err := ReadValue(bufio.NewReader(bytes.NewReader(bytes.Repeat([]byte{0x91}, 2000))), 1024); err == nil {
		t.Fatal("a value longer than the limit was accepted")
	}
}

// FuzzCheck runs Check (the slice walk every decoder runs) against the
// stream walk ReadValue uses, on the same bytes: they must accept the same
// values, and never panic.
func FuzzCheck(f *testing.F) {
	good, _ := msgpack.Marshal(map[string]any{"a": []any{1, "x", []byte("yz"), 3.5, nil, true, int64(-1) << 40, uint16(300)}})
	f.Add(good)
	ext, _ := msgpack.Marshal(msgpack.RawMessage{0xc7, 0x02, 0x05, 0x01, 0x02})
	f.Add(ext)
	for _, b := range [][]byte{{0xdd, 0xff, 0xff, 0xff, 0xff}, {0xc6, 0xff, 0xff, 0xff, 0xf0, 1}, {0xd9, 0x10, 'a'},
		{0xc1}, {0xde, 0x00, 0x02, 0x01}, {}, {0x92, 0xc7, 0x01, 0x05, 0x00, 0xd4, 0x01, 0x02}, {0x81, 0xa1, 'k', 0xc0, 0x00}} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := Check(b)
		src := &sliceSource{b: b}
		ref := scan(src, len(b))
		if ref == nil && src.off != len(b) {
			ref = ErrBad
		}
		if (err == nil) != (ref == nil) {
			t.Fatalf("% x: Check says %v, the stream walk %v", b, err, ref)
		}
		got, rerr := ReadValue(bufio.NewReader(bytes.NewReader(b)), len(b))
		if err == nil && (rerr != nil || !bytes.Equal(got, b)) {
			t.Fatalf("% x: Check accepts it, ReadValue read % x, %v", b, got, rerr)
		}
		if err != nil && rerr == nil && len(got) == len(b) {
			t.Fatalf("% x: Check refuses it (%v), ReadValue read all of it", b, err)
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	v := make([]any, 40)
	for i := range v {
		v[i] = []any{uint64(i) << 40, uint64(i), []byte("0123456789abcdef0123456789"), "127.0.0.1:40000", false}
	}
	frame, _ := msgpack.Marshal([]any{2, 7, 15, "127.0.0.1:1", []any{1, 2}, 99, []any{false, v, nil}})
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if err := Check(frame); err != nil {
			b.Fatal(err)
		}
	}
}

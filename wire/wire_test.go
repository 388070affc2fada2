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

package antipode

import (
	"bytes"
	"slices"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the decoder: it must not panic or
// allocate beyond the input's size, and whatever it accepts must encode
// back to a form that decodes to the same writes. `go test` replays the
// seeds; `go test -fuzz FuzzDecode ./antipode` explores.
func FuzzDecode(f *testing.F) {
	for _, l := range []*Lineage{
		NewLineage(),
		NewLineage(WriteID{Store: "posts", Key: "post-1", Version: 1}),
		NewLineage(WriteID{Store: "posts", Key: "o", Version: 5, Origin: 1<<64 - 1}, WriteID{Store: "posts", Key: "p", Version: 6}),
		NewLineage(WriteID{Store: "posts", Key: "a", Version: 1 << 62}, WriteID{Store: "posts", Key: "b", Version: 0}, WriteID{Store: "notes", Key: "topic", Version: 99}),
	} {
		b, _ := l.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0})
	f.Add([]byte{3, 0, 0})
	f.Add([]byte{2, 1, 1, 'p', 1, 0, 1, 'k', 1})               // format 2 without the origin
	f.Add([]byte{2, 1, 1, 'p', 1, 0, 1, 'k', 1, 0})            // format 2, origin 0: re-encodes as format 1
	f.Add([]byte{1, 1, 1, 'p', 2, 0, 1, 'k', 1, 0, 1, 'k', 2}) // one key twice
	f.Fuzz(func(t *testing.T, b []byte) {
		var l Lineage
		if err := l.UnmarshalBinary(b); err != nil {
			return
		}
		enc, err := l.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted %x but cannot encode it: %v", b, err)
		}
		var again Lineage
		if err := again.UnmarshalBinary(enc); err != nil {
			t.Fatalf("re-encoding %x of %x does not decode: %v", enc, b, err)
		}
		if !slices.Equal(again.Writes(), l.Writes()) {
			t.Fatalf("%x decodes to %v, its re-encoding to %v", b, &l, &again)
		}
		enc2, _ := again.MarshalBinary()
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not canonical: %x then %x", enc, enc2)
		}
	})
}

// FuzzDecodeText does the same through the header form.
func FuzzDecodeText(f *testing.F) {
	t, _ := NewLineage(WriteID{Store: "posts", Key: "post-1", Version: 77}).MarshalText()
	f.Add(string(t))
	f.Add("")
	f.Add("AQ")
	f.Add("====")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Decode(s)
		if err != nil {
			return
		}
		txt, err := l.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(string(txt))
		if err != nil || !slices.Equal(back.Writes(), l.Writes()) {
			t.Fatalf("%q: round trip gave %v, %v", s, back, err)
		}
	})
}

package antipode

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestLineageKeepsNewestVersionPerKey(t *testing.T) {
	l := NewLineage(
		WriteID{Store: "posts", Key: "b", Version: 7},
		WriteID{Store: "posts", Key: "a", Version: 3},
		WriteID{Store: "posts", Key: "b", Version: 5},
		WriteID{Store: "users", Key: "a", Version: 1},
		WriteID{Store: "posts", Key: "a", Version: 9},
	)
	want := []WriteID{{Store: "posts", Key: "a", Version: 9}, {Store: "posts", Key: "b", Version: 7}, {Store: "users", Key: "a", Version: 1}}
	if got := l.Writes(); !slices.Equal(got, want) {
		t.Fatalf("writes = %v, want %v", got, want)
	}
	if s := l.String(); s != "[posts/a@9 posts/b@7 users/a@1]" {
		t.Fatalf("String = %q", s)
	}
}

func TestRoundTrip(t *testing.T) {
	cases := []*Lineage{
		NewLineage(),
		NewLineage(WriteID{Store: "posts", Key: "post-1", Version: 1}),
		NewLineage(WriteID{Store: "posts", Key: "", Version: 0}, WriteID{Store: "posts", Key: "k", Version: math.MaxUint64}),
		NewLineage(WriteID{Store: "a", Key: "x", Version: 1}, WriteID{Store: "b", Key: "ünïcode key", Version: 1 << 40}, WriteID{Store: "c", Key: strings.Repeat("k", 300), Version: 12345}),
	}
	for _, l := range cases {
		b, err := l.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Lineage
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("decode %x: %v", b, err)
		}
		if !slices.Equal(got.Writes(), l.Writes()) {
			t.Fatalf("binary round trip: %v became %v", l, &got)
		}
		txt, err := l.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.ContainsAny(txt, "+/=\r\n ") {
			t.Fatalf("text form %q is not header-safe", txt)
		}
		var got2 Lineage
		if err := got2.UnmarshalText(txt); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got2.Writes(), l.Writes()) {
			t.Fatalf("text round trip: %v became %v", l, &got2)
		}
	}
}

// The store table makes the per-write cost the key plus a few bytes.
func TestEncodingIsCompact(t *testing.T) {
	l := NewLineage()
	for i := range 100 {
		l.Add(WriteID{Store: "posts", Key: "post-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Version: uint64(1_000_000 + i)})
	}
	b, _ := l.MarshalBinary()
	// 1 format + 1 + 1+5 store table + 1 count; per write: 1 index + 1 len + 7 key + 3 version.
	if want := 9 + 100*12; len(b) != want {
		t.Fatalf("100 writes encode to %d bytes, want %d", len(b), want)
	}
}

func TestDecodeNewerFormatFailsClearly(t *testing.T) {
	b, _ := NewLineage(WriteID{Store: "posts", Key: "k", Version: 1}).MarshalBinary()
	b[0] = FormatVersion + 1
	var l Lineage
	err := l.UnmarshalBinary(b)
	if !errors.Is(err, ErrFormatVersion) {
		t.Fatalf("err = %v, want ErrFormatVersion", err)
	}
	if !strings.Contains(err.Error(), "format version 3") || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("error %q does not say which version or what to do", err)
	}
	h := http.Header{}
	h.Set(Header, "Aw") // base64url of the single byte 0x03
	if _, err := Extract(context.Background(), h); !errors.Is(err, ErrFormatVersion) {
		t.Fatalf("Extract of a version-3 header: %v", err)
	}
}

// Writes with an origin take format 2, which carries it; a lineage with
// none is still written in format 1, as builds that read only format 1
// expect. Adding a write again keeps the newer version with its origin.
func TestEncodingOrigins(t *testing.T) {
	plain := NewLineage(WriteID{Store: "posts", Key: "k", Version: 7})
	b, _ := plain.MarshalBinary()
	if want := []byte{1, 1, 5, 'p', 'o', 's', 't', 's', 1, 0, 1, 'k', 7}; !slices.Equal(b, want) {
		t.Fatalf("without origins: %x, want format 1 %x", b, want)
	}
	l := NewLineage(WriteID{Store: "posts", Key: "k", Version: 7, Origin: 1 << 63}, WriteID{Store: "posts", Key: "j", Version: 3})
	b, _ = l.MarshalBinary()
	if b[0] != 2 {
		t.Fatalf("with an origin: format %d, want 2", b[0])
	}
	var got Lineage
	if err := got.UnmarshalBinary(b); err != nil || !slices.Equal(got.Writes(), l.Writes()) {
		t.Fatalf("round trip of %v: %v, %v", l, &got, err)
	}
	l.Add(WriteID{Store: "posts", Key: "k", Version: 6, Origin: 5})
	l.Add(WriteID{Store: "posts", Key: "j", Version: 4, Origin: 9})
	want := []WriteID{{Store: "posts", Key: "j", Version: 4, Origin: 9}, {Store: "posts", Key: "k", Version: 7, Origin: 1 << 63}}
	if !slices.Equal(l.Writes(), want) {
		t.Fatalf("after adds: %v, want %v", l.Writes(), want)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":           {},
		"version 0":       {0},
		"no stores count": {1},
		"store past end":  {1, 1, 9, 'a'},
		"empty store":     {1, 1, 0, 0},
		"bad index":       {1, 1, 1, 'p', 1, 1, 0, 0},
		"trailing":        {1, 0, 0, 0},
		"huge count":      {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"key past end":    {1, 1, 1, 'p', 1, 0, 5, 'k'},
		"no version":      {1, 1, 1, 'p', 1, 0, 1, 'k'},
	} {
		var l Lineage
		if err := l.UnmarshalBinary(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s (%x): err = %v, want ErrMalformed", name, b, err)
		}
	}
	if _, err := Decode("not base64!"); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad base64: %v", err)
	}
}

func TestContextWriteAndTransfer(t *testing.T) {
	ctx := context.Background()
	if FromContext(ctx) != nil {
		t.Fatal("background has a lineage")
	}
	ctx1 := Write(ctx, WriteID{Store: "posts", Key: "a", Version: 1})
	ctx2 := Write(ctx1, WriteID{Store: "posts", Key: "b", Version: 2})
	if ctx2 != ctx1 {
		t.Fatal("Write on a context with a lineage returned another context")
	}
	if n := FromContext(ctx1).Len(); n != 2 {
		t.Fatalf("lineage has %d writes, want 2 (shared by the request)", n)
	}
	other := Write(context.Background(), WriteID{Store: "users", Key: "u", Version: 5})
	moved := Transfer(other, ctx1)
	want := []WriteID{{Store: "posts", Key: "a", Version: 1}, {Store: "posts", Key: "b", Version: 2}, {Store: "users", Key: "u", Version: 5}}
	if got := FromContext(moved).Writes(); !slices.Equal(got, want) {
		t.Fatalf("transferred = %v, want %v", got, want)
	}
	if FromContext(other).Len() != 1 {
		t.Fatal("Transfer changed the destination's own lineage")
	}
	if Transfer(other, context.Background()) != other {
		t.Fatal("Transfer from a context without lineage changed dst")
	}
}

func TestInjectExtract(t *testing.T) {
	h := http.Header{}
	if err := Inject(context.Background(), h); err != nil || len(h) != 0 {
		t.Fatalf("inject of no lineage wrote %v (%v)", h, err)
	}
	ctx := Write(context.Background(), WriteID{Store: "posts", Key: "p1", Version: 42})
	if err := Inject(ctx, h); err != nil {
		t.Fatal(err)
	}
	got, err := Extract(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	if w := FromContext(got).Writes(); !slices.Equal(w, []WriteID{{Store: "posts", Key: "p1", Version: 42}}) {
		t.Fatalf("extracted %v", w)
	}
	h.Set(Header, "%%%")
	if _, err := Extract(context.Background(), h); err == nil || !strings.Contains(err.Error(), Header) {
		t.Fatalf("malformed header: err = %v", err)
	}
}

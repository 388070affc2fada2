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
		WriteID{"posts", "b", 7},
		WriteID{"posts", "a", 3},
		WriteID{"posts", "b", 5},
		WriteID{"users", "a", 1},
		WriteID{"posts", "a", 9},
	)
	want := []WriteID{{"posts", "a", 9}, {"posts", "b", 7}, {"users", "a", 1}}
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
		NewLineage(WriteID{"posts", "post-1", 1}),
		NewLineage(WriteID{"posts", "", 0}, WriteID{"posts", "k", math.MaxUint64}),
		NewLineage(WriteID{"a", "x", 1}, WriteID{"b", "ünïcode key", 1 << 40}, WriteID{"c", strings.Repeat("k", 300), 12345}),
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
		l.Add(WriteID{"posts", "post-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), uint64(1_000_000 + i)})
	}
	b, _ := l.MarshalBinary()
	// 1 format + 1 + 1+5 store table + 1 count; per write: 1 index + 1 len + 7 key + 3 version.
	if want := 9 + 100*12; len(b) != want {
		t.Fatalf("100 writes encode to %d bytes, want %d", len(b), want)
	}
}

func TestDecodeNewerFormatFailsClearly(t *testing.T) {
	b, _ := NewLineage(WriteID{"posts", "k", 1}).MarshalBinary()
	b[0] = FormatVersion + 1
	var l Lineage
	err := l.UnmarshalBinary(b)
	if !errors.Is(err, ErrFormatVersion) {
		t.Fatalf("err = %v, want ErrFormatVersion", err)
	}
	if !strings.Contains(err.Error(), "format version 2") || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("error %q does not say which version or what to do", err)
	}
	h := http.Header{}
	h.Set(Header, "Ag") // base64url of the single byte 0x02
	if _, err := Extract(context.Background(), h); !errors.Is(err, ErrFormatVersion) {
		t.Fatalf("Extract of a version-2 header: %v", err)
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
	ctx1 := Write(ctx, WriteID{"posts", "a", 1})
	ctx2 := Write(ctx1, WriteID{"posts", "b", 2})
	if ctx2 != ctx1 {
		t.Fatal("Write on a context with a lineage returned another context")
	}
	if n := FromContext(ctx1).Len(); n != 2 {
		t.Fatalf("lineage has %d writes, want 2 (shared by the request)", n)
	}
	other := Write(context.Background(), WriteID{"users", "u", 5})
	moved := Transfer(other, ctx1)
	want := []WriteID{{"posts", "a", 1}, {"posts", "b", 2}, {"users", "u", 5}}
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
	ctx := Write(context.Background(), WriteID{"posts", "p1", 42})
	if err := Inject(ctx, h); err != nil {
		t.Fatal(err)
	}
	got, err := Extract(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	if w := FromContext(got).Writes(); !slices.Equal(w, []WriteID{{"posts", "p1", 42}}) {
		t.Fatalf("extracted %v", w)
	}
	h.Set(Header, "%%%")
	if _, err := Extract(context.Background(), h); err == nil || !strings.Contains(err.Error(), Header) {
		t.Fatalf("malformed header: err = %v", err)
	}
}

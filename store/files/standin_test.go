package files

import (
	"testing"

	"tide/chord"
)

func TestParseStandIn(t *testing.T) {
	r, err := chord.RefFor("10.0.0.2:5057", 123456)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseStandIn(r.String())
	if err != nil || got != r {
		t.Fatalf("parseStandIn(%q) = %v, %v; want %v", r.String(), got, err, r)
	}
	for _, bad := range []string{"", "10.0.0.2:5057", "10.0.0.2:5057#", "10.0.0.2:5057#x", "10.0.0.2#1", "10.0.0.2:0#1", "10.0.0.2:5057#4294967296", "#1"} {
		if got, err := parseStandIn(bad); err == nil {
			t.Errorf("parseStandIn(%q) = %v, want an error", bad, got)
		}
	}
}

func FuzzParseStandIn(f *testing.F) {
	for _, s := range []string{"10.0.0.2:5057#123456", "[::1]:1#0", "", "a#b", ":#"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		r, err := parseStandIn(h)
		if err != nil {
			return
		}
		if back, err := parseStandIn(r.String()); err != nil || back != r {
			t.Fatalf("%q parsed as %v, which does not parse back: %v, %v", h, r, back, err)
		}
	})
}

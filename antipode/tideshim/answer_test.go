package tideshim

import (
	"strings"
	"testing"
)

func TestParseAnswer(t *testing.T) {
	for _, c := range []struct {
		line string
		want answer
		bad  bool
	}{
		{line: "ok 0 17", want: answer{i: 0, ok: true, version: 17}},
		{line: "no 2 5", want: answer{i: 2, version: 5}},
		{line: "no 1 0", want: answer{i: 1}},
		{line: "err 1 kv: no quorum", want: answer{i: 1}},
		{line: "ok 3 1", bad: true},  // index out of range
		{line: "ok -1 1", bad: true}, // negative index
		{line: "ok 0 x", bad: true},
		{line: "maybe 0 1", bad: true},
		{line: "", bad: true},
	} {
		a, err := parseAnswer(c.line, 3)
		if c.bad {
			if err == nil {
				t.Errorf("%q: parsed as %+v, want an error", c.line, a)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.line, err)
			continue
		}
		if strings.HasPrefix(c.line, "err ") {
			if a.err == nil || a.err.Error() != "kv: no quorum" || a.ok {
				t.Errorf("%q: %+v", c.line, a)
			}
			continue
		}
		if a != c.want {
			t.Errorf("%q: %+v, want %+v", c.line, a, c.want)
		}
	}
}

func FuzzParseAnswer(f *testing.F) {
	for _, s := range []string{"ok 0 17", "no 1 0", "err 0 x y", "ok 99999999999999999999 1", "no 0 -1"} {
		f.Add(s, 2)
	}
	f.Fuzz(func(t *testing.T, line string, n int) {
		a, err := parseAnswer(line, n)
		if err != nil {
			return
		}
		if a.i < 0 || a.i >= n {
			t.Fatalf("%q with %d writes: index %d accepted", line, n, a.i)
		}
		if a.ok && a.err != nil {
			t.Fatalf("%q: both ok and an error", line)
		}
	})
}

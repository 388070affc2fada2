package main

import (
	"slices"
	"testing"
)

func TestWithSteadySysmon(t *testing.T) {
	for _, c := range []struct {
		env, want []string
		changed   bool
	}{
		{[]string{"HOME=/h"}, []string{"HOME=/h", "GODEBUG=" + steadySchedtrace}, true},
		{[]string{"GODEBUG=", "A=b"}, []string{"GODEBUG=" + steadySchedtrace, "A=b"}, true},
		{[]string{"GODEBUG=madvdontneed=0"}, []string{"GODEBUG=madvdontneed=0," + steadySchedtrace}, true},
		// A schedtrace of the user's, 0 (opting out) or not, is kept.
		{[]string{"GODEBUG=schedtrace=0"}, []string{"GODEBUG=schedtrace=0"}, false},
		{[]string{"GODEBUG=gctrace=1,schedtrace=1000"}, []string{"GODEBUG=gctrace=1,schedtrace=1000"}, false},
		// Only the key counts, not a value that happens to mention it.
		{[]string{"X=schedtrace=0"}, []string{"X=schedtrace=0", "GODEBUG=" + steadySchedtrace}, true},
	} {
		in := slices.Clone(c.env)
		got, changed := withSteadySysmon(in)
		if !slices.Equal(got, c.want) || changed != c.changed {
			t.Errorf("withSteadySysmon(%q) = %q, %v; want %q, %v", c.env, got, changed, c.want, c.changed)
		}
		if !slices.Equal(in, c.env) {
			t.Errorf("withSteadySysmon(%q) changed its argument to %q", c.env, in)
		}
	}
}

package kv

import (
	"strings"
	"testing"
)

// TestWriteUnknownNamesViews checks that a write that timed out while
// ring views disagree names the view whose replicas fell short.
func TestWriteUnknownNamesViews(t *testing.T) {
	o := &op{write: true, need: 2, replicas: []string{"a", "b", "c", "d"},
		sets: [][]string{{"a", "b", "c"}, {"a", "d", "c"}}, answered: addrSet{"a", "b"}}
	msg := writeUnknown(o)
	if !strings.Contains(msg, "view 2 of 2 short among a, d, c") || strings.Contains(msg, "view 1 of 2") {
		t.Errorf("writeUnknown = %q; want view 2 named short, view 1 not", msg)
	}
	if !strings.Contains(msg, "may still take effect") {
		t.Errorf("writeUnknown = %q; want it to say the write may still take effect", msg)
	}
	o.sets = o.sets[:1]
	if msg := writeUnknown(o); strings.Contains(msg, "view") {
		t.Errorf("writeUnknown with one view = %q; want no view named", msg)
	}
}

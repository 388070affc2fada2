package store

import (
	"testing"
	"time"

	"tide/chord"
)

// TestFirstTable checks which first ring tables a node that joined through
// another member may install: only one holding that member and every
// member a walk from it finds, unless the wait is over.
func TestFirstTable(t *testing.T) {
	ref := func(port int) chord.Ref { return chord.Ref{IP: "10.0.0.1", Port: port, ID: chord.ID(port * 1000)} }
	ring := func(ports ...int) []member {
		var ms []member
		for _, p := range ports {
			ms = append(ms, member{ref: ref(p)})
		}
		return ms
	}
	via := ref(1)
	stale := ref(4)
	stale.ID = 7 // this node's entry from before its restart: same address, other ID
	for _, c := range []struct {
		name     string
		ms       []member
		via      *chord.Ref
		theirs   []member
		waited   time.Duration
		ok, late bool
	}{
		{"created the ring", ring(4), nil, nil, 0, true, false},
		{"whole ring", ring(1, 2, 3, 4), &via, ring(1, 2, 3, 4), 0, true, false},
		{"alone after a restart", ring(4), &via, ring(1, 2, 3, 4), 0, false, false},
		{"partial, with via", ring(1, 4), &via, ring(1, 2, 3, 4), 0, false, false},
		{"partial, without via", ring(2, 3, 4), &via, ring(1, 2, 3, 4), 0, false, false},
		{"via's walk failed", ring(1, 2, 3, 4), &via, nil, 0, false, false},
		{"via's walk holds this node's old entry", ring(1, 2, 3, 4), &via, append(ring(1, 2, 3), member{ref: stale}), 0, true, false},
		{"via sees less than this node", ring(1, 2, 3, 4, 5), &via, ring(1, 2, 3), 0, true, false},
		{"partial, the wait over", ring(1, 4), &via, ring(1, 2, 3, 4), firstTableWait, true, true},
	} {
		ok, late := firstTable(c.ms, c.via, c.theirs, c.waited)
		if ok != c.ok || late != c.late {
			t.Errorf("%s: firstTable = %v, %v; want %v, %v", c.name, ok, late, c.ok, c.late)
		}
	}
}

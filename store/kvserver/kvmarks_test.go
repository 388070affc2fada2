package kvserver

import (
	"testing"
	"time"

	"tide/kv"
)

// TestMarkTable: a wait fires once the origin's mark reaches its version
// and not before; marks only rise; a cancelled wait never fires; an
// origin never heard from is unknown; a mark that stands still for
// markStale is stale.
func TestMarkTable(t *testing.T) {
	var tb markTable
	t0 := time.Unix(1000, 0)
	if _, _, known := tb.add(7, 10, func() {}); known {
		t.Fatal("an origin never heard from is known")
	}
	if !tb.stale(7, t0) {
		t.Fatal("an origin never heard from is not stale")
	}
	tb.raise([]kv.RegionMark{{Origin: 7, Version: 5}}, t0)
	fired := map[string]int{}
	w10, passed, known := tb.add(7, 10, func() { fired["10"]++ })
	if passed || !known || w10 == nil {
		t.Fatalf("add at 10 with mark 5: passed %v known %v", passed, known)
	}
	w20, _, _ := tb.add(7, 20, func() { fired["20"]++ })
	w30, _, _ := tb.add(7, 30, func() { fired["30"]++ })
	if _, passed, _ := tb.add(7, 5, func() { t.Error("a passed wait fired") }); !passed {
		t.Fatal("add at the mark is not passed")
	}
	tb.raise([]kv.RegionMark{{Origin: 7, Version: 9}, {Origin: 8, Version: 100}}, t0.Add(time.Second))
	if len(fired) != 0 {
		t.Fatalf("fired %v below their versions", fired)
	}
	tb.raise([]kv.RegionMark{{Origin: 7, Version: 25}, {Origin: 7, Version: 3}}, t0.Add(2*time.Second))
	if fired["10"] != 1 || fired["20"] != 1 || fired["30"] != 0 {
		t.Fatalf("mark 25: fired %v", fired)
	}
	if tb.remove(7, w10) {
		t.Fatal("a fired wait was still registered")
	}
	if !tb.remove(7, w30) {
		t.Fatal("cancelling a waiting wait failed")
	}
	tb.raise([]kv.RegionMark{{Origin: 7, Version: 40}}, t0.Add(3*time.Second))
	if fired["30"] != 0 || fired["20"] != 1 {
		t.Fatalf("after cancel: fired %v", fired)
	}
	_ = w20
	if tb.stale(7, t0.Add(3*time.Second+markStale/2)) || !tb.stale(7, t0.Add(3*time.Second+markStale+time.Millisecond)) {
		t.Fatal("staleness does not follow the last rise")
	}
	// An old mark arriving late does not count as a move.
	tb.raise([]kv.RegionMark{{Origin: 7, Version: 39}}, t0.Add(4*time.Second))
	if !tb.stale(7, t0.Add(3*time.Second+markStale+time.Millisecond)) {
		t.Fatal("a late, lower mark refreshed the origin")
	}
}

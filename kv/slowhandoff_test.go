package kv

import (
	"fmt"
	"slices"
	"testing"
)

// TestSlowHandOffStaleRead: a replaced ring view counts until the data
// has moved, not for a fixed time. Three nodes join in front of a key's
// replicas a, b, c, whose write b and c acknowledged (a missed it), and
// nothing migrates (a slow hand-off). Long past TransitionTicks, a read
// through the new replicas must still find the write, in the old view's
// quorum; once migration runs, the old view retires everywhere and the
// new replicas answer the write on their own.
func TestSlowHandOffStaleRead(t *testing.T) {
	slowHandOff(t, func(m Message) bool { return m.Kind >= KindDigest && m.Kind <= KindOfferResp })
}

// TestStrayKeepsViews: the same, with only the hand-off slow: the new
// replicas compare their ranges and find them equal (none of them has
// the write), but b and c still hold a write they no longer replicate,
// which keeps the old view in force until they have handed it off.
func TestStrayKeepsViews(t *testing.T) {
	slowHandOff(t, func(m Message) bool { return m.Kind == KindOffer || m.Kind == KindOfferResp })
}

// slowHandOff runs the join of TestSlowHandOffStaleRead, losing the
// messages lost says while migration is slow.
func slowHandOff(t *testing.T, lost func(Message) bool) {
	pos := Partitioners["md5-low32"]
	old := []Member{{"a", 1 << 30}, {"b", 2 << 30}, {"c", 3 << 30}, {"e", 4<<30 - 1}}
	joiners := []Member{{"d1", 1<<29 + 1}, {"d2", 1<<29 + 2}, {"d3", 1<<29 + 3}}
	var key []byte
	for i := 0; key == nil; i++ {
		if k := fmt.Appendf(nil, "key-%d", i); pos(k) < 1<<29 {
			key = k
		}
	}
	oldRing := NewStaticRing(pos, old)
	newRing := NewStaticRing(pos, append(slices.Clone(old), joiners...))
	if p := oldRing.Preference(pos(key), 3); !slices.Equal(p, []string{"a", "b", "c"}) {
		t.Fatalf("old preference %v", p)
	}
	if p := newRing.Preference(pos(key), 3); !slices.Equal(p, []string{"d1", "d2", "d3"}) {
		t.Fatalf("new preference %v", p)
	}
	clock := func() uint64 { return 1 << 40 }
	nodes := map[string]*Node{}
	st := map[string]*MemStorage{}
	var names []string
	for _, m := range append(slices.Clone(old), joiners...) {
		names = append(names, m.Addr)
		st[m.Addr] = NewMemStorage(pos)
		r := oldRing
		if m.Addr[0] == 'd' {
			r = NewStaticRing(pos, []Member{m})
		}
		nodes[m.Addr] = NewNode(Config{N: 3, W: 2, R: 2}, m.Addr, r, st[m.Addr], clock, nil)
	}
	var answers []Message
	slow := true
	deliver := func() {
		for moved := true; moved; {
			moved = false
			for _, x := range names {
				rd := nodes[x].Ready()
				st[x].Apply(rd.Persist)
				for _, m := range rd.Messages {
					switch {
					case m.To == "client":
						answers = append(answers, m)
						continue
					case m.To == "a" && (m.Kind == KindPut || m.Kind == KindPutBatch):
						continue // a missed the write, and its hints
					case slow && lost(m):
						continue // migration: the hand-off is slow
					}
					nodes[m.To].Step(m)
					moved = true
				}
			}
		}
	}
	tick := func(k int) {
		for range k {
			for _, x := range names {
				nodes[x].Tick()
			}
			deliver()
		}
	}
	nodes["b"].Step(Message{Kind: KindClientPut, From: "client", ID: 1, Rec: Record{Key: key, Value: []byte("v")}})
	deliver()
	tick(300)
	if len(answers) != 1 || answers[0].Err != "" {
		t.Fatalf("put: %v", answers)
	}
	for _, x := range names {
		nodes[x].SetRing(newRing)
	}
	tick(1200) // past TransitionTicks
	answers = answers[:0]
	nodes["d1"].Step(Message{Kind: KindClientGet, From: "client", ID: 2, Rec: Record{Key: key}})
	deliver()
	for range 300 {
		if len(answers) > 0 {
			break
		}
		tick(1)
	}
	if len(answers) != 1 || !answers[0].Found || string(answers[0].Rec.Value) != "v" {
		t.Fatalf("read after the transition window: %+v; the put was acknowledged by b and c", answers)
	}
	for _, x := range names {
		if v := nodes[x].Views(); v < 2 {
			t.Errorf("%s: %d views while the hand-off has not run, want the old one kept", x, v)
		}
	}

	// Migration runs: the views retire, and the new replicas hold the
	// write.
	slow = false
	for i := 0; i < 100; i++ {
		tick(100)
		retired := true
		for _, x := range names {
			retired = retired && nodes[x].Views() == 1
		}
		if retired {
			break
		}
	}
	for _, x := range names {
		if v := nodes[x].Views(); v != 1 {
			all, settled, done := nodes[x].Transition()
			t.Errorf("%s: %d views 10,000 ticks after migration resumed (all on the view %v, settled %v, done %v)", x, v, all, settled, done)
		}
	}
	for _, x := range joiners {
		if r, ok, _ := st[x.Addr].Get(key); !ok || string(r.Value) != "v" {
			t.Errorf("new replica %s holds %q (%v) once the old view retired", x.Addr, r.Value, ok)
		}
	}
}

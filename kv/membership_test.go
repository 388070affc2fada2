package kv

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestRemoveWithinTransition is the Dynamo seed's reconfiguration on a
// two-node ring: a and b at 3000 and 8000, c added at 5000, then b removed
// while the views of the add are still in their transition window. Every
// request through a or c afterwards must be answered by a and c alone,
// before the first retry would be sent: no view may still wait for b,
// which has left (here it is gone and drops everything).
func TestRemoveWithinTransition(t *testing.T) {
	pos := Partitioners["md5-mod10000"]
	ab := NewStaticRing(pos, []Member{{"a", 3000}, {"b", 8000}})
	abc := NewStaticRing(pos, []Member{{"a", 3000}, {"b", 8000}, {"c", 5000}})
	ac := NewStaticRing(pos, []Member{{"a", 3000}, {"c", 5000}})
	clock := func() uint64 { return 1 << 40 }
	nodes := map[string]*Node{}
	st := map[string]*MemStorage{}
	for _, x := range []string{"a", "b", "c"} {
		st[x] = NewMemStorage(pos)
		// c starts knowing only itself, as a store node does before its
		// first walk of the ring.
		r := Ring(ab)
		if x == "c" {
			r = NewStaticRing(pos, []Member{{"c", 5000}})
		}
		nodes[x] = NewNode(Config{N: 3, W: 2, R: 2}, x, r, st[x], clock, nil)
	}
	down := map[string]bool{}
	deliver := func() (answers []Message) {
		for moved := true; moved; {
			moved = false
			for _, x := range []string{"a", "b", "c"} {
				if down[x] {
					continue
				}
				rd := nodes[x].Ready()
				st[x].Apply(rd.Persist)
				for _, m := range rd.Messages {
					switch {
					case m.To == "client":
						answers = append(answers, m)
					case down[m.To]:
					default:
						nodes[m.To].Step(m)
						moved = true
					}
				}
			}
		}
		return answers
	}
	var id uint64
	request := func(via string, m Message) Message {
		t.Helper()
		id++
		m.From, m.ID = "client", id
		nodes[via].Step(m)
		got := deliver()
		if len(got) != 1 {
			t.Fatalf("%s %s through %s: %d answers without a tick (want 1): a view still waits for a node that is gone", m.Kind, m.Rec.Key, via, len(got))
		}
		if got[0].Err != "" {
			t.Fatalf("%s %s through %s: %s", m.Kind, m.Rec.Key, via, got[0].Err)
		}
		return got[0]
	}
	keys := []string{"bed", "roof", "apple", "chair", "lamp", "rug", "sofa", "vase"}
	for _, k := range keys {
		request("a", Message{Kind: KindClientPut, Rec: Record{Key: []byte(k), Value: []byte("v1")}})
	}
	for _, x := range []string{"a", "b", "c"} {
		nodes[x].SetRing(abc)
	}
	for range 100 { // a second of ticks: well inside the transition window
		for _, x := range []string{"a", "b", "c"} {
			nodes[x].Tick()
		}
		deliver()
	}
	// b leaves: it is out of every view, and gone, and says so.
	down["b"] = true
	for _, x := range []string{"a", "c"} {
		nodes[x].SetRing(ac)
		nodes[x].MemberLeft("b")
	}
	for _, via := range []string{"a", "c"} {
		for _, k := range keys {
			v := fmt.Sprint("v2-", via)
			request(via, Message{Kind: KindClientPut, Rec: Record{Key: []byte(k), Value: []byte(v)}})
			got := request(via, Message{Kind: KindClientGet, Rec: Record{Key: []byte(k)}})
			if !got.Found || string(got.Rec.Value) != v {
				t.Fatalf("get %s through %s = %q (found %v), want %q", k, via, got.Rec.Value, got.Found, v)
			}
		}
	}
	for _, x := range []string{"a", "c"} {
		if r := nodes[x].Stats.Resends; r != 0 {
			t.Fatalf("%s sent %d requests again", x, r)
		}
	}
}

// TestSetRingPrunesDeparted checks that no view of the transition window
// keeps a member that has left the ring and said so, however it got there:
// a join's replaced view, or a node's first full view.
func TestSetRingPrunesDeparted(t *testing.T) {
	pos := Partitioners["md5-mod10000"]
	ring := func(ms ...Member) *StaticRing { return NewStaticRing(pos, ms) }
	a, b, c, d := Member{"a", 1000}, Member{"b", 4000}, Member{"c", 6000}, Member{"d", 8000}
	for _, tc := range []struct {
		name  string
		self  string
		steps []*StaticRing
	}{
		{"join then leave", "a", []*StaticRing{ring(a, b), ring(a, b, c), ring(a, c)}},
		{"first view then leave", "c", []*StaticRing{ring(c), ring(a, b, c), ring(a, c)}},
		{"two joins then leave", "a", []*StaticRing{ring(a, b), ring(a, b, c), ring(a, b, c, d), ring(a, c, d)}},
		{"leave then join", "a", []*StaticRing{ring(a, b, c), ring(a, c), ring(a, c, d)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := NewNode(Config{N: 3, W: 2, R: 2}, tc.self, tc.steps[0], NewMemStorage(pos), func() uint64 { return 1 }, nil)
			for _, r := range tc.steps[1:] {
				n.SetRing(r)
				n.MemberLeft("b") // b announces its leave, before or after the ring drops it
				n.Tick()
			}
			cur := tc.steps[len(tc.steps)-1]
			var live []string
			for _, m := range cur.Members() {
				live = append(live, m.Addr)
			}
			for p := uint32(0); p < 10000; p += 100 {
				sets, union := n.prefSets(p)
				for _, a := range union {
					if !slices.Contains(live, a) {
						t.Fatalf("position %d: preference lists %v wait for %s, which has left", p, sets, a)
					}
				}
			}
		})
	}
}

// TestWriteTimeoutOutcomeUnknown: a write that times out without its
// quorum was stored by the replicas that acknowledged it and is held as a
// hint for the rest, so its error must not say it failed: it says the
// outcome is unknown, and where the write is.
func TestWriteTimeoutOutcomeUnknown(t *testing.T) {
	tr := newTrio(abcRing())
	a := tr.nodes["a"]
	a.Step(Message{Kind: KindClientPut, From: "client", ID: 1, Rec: Record{Key: []byte("k"), Value: []byte("v")}})
	var answers []Message
	for range a.cfg.TimeoutTicks + 1 {
		a.Tick()
		rd := a.Ready()
		tr.st["a"].Apply(rd.Persist)
		for _, m := range rd.Messages {
			if m.To == "client" {
				answers = append(answers, m)
			}
		}
	}
	if len(answers) != 1 {
		t.Fatalf("%d answers, want 1", len(answers))
	}
	e := answers[0].Err
	if !strings.Contains(e, "outcome unknown") || !strings.Contains(e, "stored on a") || !strings.Contains(e, "held for b, c") {
		t.Fatalf("error %q: want the outcome unknown, stored on a, held for b, c", e)
	}
	if _, ok, _ := tr.st["a"].Get([]byte("k")); !ok {
		t.Fatal("the coordinator did not keep its copy")
	}
	if a.Hints() != 2 {
		t.Fatalf("%d hints held, want 2", a.Hints())
	}
}

// TestCrashedMemberStillCounts: a member that drops out of the ring
// without announcing a leave may hold one of the two copies of an
// acknowledged write, so the replaced view keeps counting it: a read must
// still reach a replica of that view, and nothing is answered from the
// new preference list alone.
func TestCrashedMemberStillCounts(t *testing.T) {
	pos := Partitioners["md5-mod10000"]
	ring := func(ms ...Member) *StaticRing { return NewStaticRing(pos, ms) }
	a, b, c, d := Member{"a", 1000}, Member{"b", 4000}, Member{"c", 6000}, Member{"d", 8000}
	n := NewNode(Config{N: 3, W: 2, R: 2}, "a", ring(a, b, c, d), NewMemStorage(pos), func() uint64 { return 1 }, nil)
	n.SetRing(ring(a, c, d)) // b vanished: a crash, as far as a can tell
	n.Tick()
	waits := false
	for p := uint32(0); p < 10000; p += 100 {
		sets, union := n.prefSets(p)
		if len(sets) < 2 && slices.Contains(ring(a, b, c, d).Preference(p, 3), "b") {
			t.Fatalf("position %d: only %v counts; the view with b (which may hold a write's other copy) was dropped", p, sets)
		}
		waits = waits || slices.Contains(union, "b")
	}
	if !waits {
		t.Fatal("no preference list counts b")
	}
	// Once b says it left (it handed its data off), nothing waits for it.
	n.MemberLeft("b")
	for p := uint32(0); p < 10000; p += 100 {
		if sets, union := n.prefSets(p); slices.Contains(union, "b") {
			t.Fatalf("position %d: %v still waits for b, which left", p, sets)
		}
	}
}

// TestHintsDroppedForDeparted checks that the hints held for a node that
// is out of the ring are dropped, durably, once it has been out for
// HintDropTicks, while those of a member are kept; and that a node back
// in the ring within the time keeps its hints.
func TestHintsDroppedForDeparted(t *testing.T) {
	for _, back := range []bool{false, true} {
		tr := newTrio(abcRing())
		a := tr.nodes["a"]
		a.cfg.HintDropTicks = 500
		a.Step(Message{Kind: KindClientPut, From: "client", ID: 1, Rec: Record{Key: []byte("k"), Value: []byte("v")}})
		var persisted []PersistOp
		run := func(ticks int) {
			for range ticks {
				a.Tick()
				rd := a.Ready()
				tr.st["a"].Apply(rd.Persist)
				persisted = append(persisted, rd.Persist...)
				a.Release(rd)
			}
		}
		run(a.cfg.TimeoutTicks + 1) // b and c never answer: a hint for each
		if a.Hints() != 2 {
			t.Fatalf("%d hints held, want 2", a.Hints())
		}
		// c leaves the ring.
		a.SetRing(NewStaticRing(Partitioners["md5-low32"], []Member{{Addr: "a", Token: 1 << 30}, {Addr: "b", Token: 2 << 30}}))
		run(a.cfg.HintDropTicks / 2)
		if a.Hints() != 2 {
			t.Fatalf("%d hints held halfway through HintDropTicks, want 2", a.Hints())
		}
		if back {
			a.SetRing(abcRing())
		}
		persisted = nil
		run(a.cfg.HintDropTicks)
		if back {
			if a.Hints() != 2 || a.Stats.HintsDropped != 0 {
				t.Fatalf("c came back: %d hints held, %d dropped; want 2 and 0", a.Hints(), a.Stats.HintsDropped)
			}
			continue
		}
		if a.Hints() != 1 || a.Stats.HintsDropped != 1 {
			t.Fatalf("c left: %d hints held, %d dropped; want 1 (for b) and 1", a.Hints(), a.Stats.HintsDropped)
		}
		var done []string
		for _, op := range persisted {
			if op.DoneHint != nil {
				done = append(done, op.DoneHint.Target)
			}
		}
		if !slices.Equal(done, []string{"c"}) {
			t.Fatalf("hints finished durably for %v, want [c]", done)
		}
	}
}

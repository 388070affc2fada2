package kv

import (
	"fmt"
	"testing"
)

// TestReadAsksQuorum checks that a read asks only the replicas its quorum
// needs (the coordinator and one more, with N=3 and R=2), answers from
// them, and leaves no op behind; and that a replica that is slow to
// answer is asked after SpeculateTicks, and the op still ends.
func TestReadAsksQuorum(t *testing.T) {
	pos := Partitioners["md5-low32"]
	ring := NewStaticRing(pos, []Member{{Addr: "a", Token: 1 << 30}, {Addr: "b", Token: 2 << 30}, {Addr: "c", Token: 3 << 30}})
	nodes := map[string]*Node{}
	st := map[string]*MemStorage{}
	clock := func() uint64 { return 1 << 40 }
	for _, a := range []string{"a", "b", "c"} {
		st[a] = NewMemStorage(pos)
		nodes[a] = NewNode(Config{N: 3, W: 2, R: 2}, a, ring, st[a], clock, nil)
	}
	for i := range 20 {
		r := Record{Key: fmt.Appendf(nil, "k%02d", i), Value: []byte("v"), Version: 100}
		for _, s := range st {
			s.Apply([]PersistOp{{Put: &r}})
		}
	}
	// run delivers messages until none is left, except those to hold,
	// and returns the client's answers and the requests sent per node.
	run := func(held map[string]bool) (answers []Message, gets map[string]int) {
		gets = map[string]int{}
		for moved := true; moved; {
			moved = false
			for _, name := range []string{"a", "b", "c"} {
				rd := nodes[name].Ready()
				st[name].Apply(rd.Persist)
				for _, m := range rd.Messages {
					switch {
					case m.To == "client":
						answers = append(answers, m)
						continue
					case m.Kind == KindGet:
						gets[m.To]++
					case m.Kind == KindGetBatch:
						gets[m.To] += len(m.Keys) // a round's reads, together
					}
					if held[m.To] && (m.Kind == KindGet || m.Kind == KindGetBatch) {
						continue
					}
					nodes[m.To].Step(m)
					moved = true
				}
			}
		}
		return answers, gets
	}
	a := nodes["a"]
	for i := range 20 {
		a.Step(Message{Kind: KindClientGet, From: "client", ID: uint64(i + 1), Rec: Record{Key: fmt.Appendf(nil, "k%02d", i)}})
	}
	answers, gets := run(nil)
	if len(answers) != 20 {
		t.Fatalf("%d answers to 20 reads", len(answers))
	}
	for _, m := range answers {
		if !m.Found || string(m.Rec.Value) != "v" {
			t.Fatalf("read answered %+v", m)
		}
	}
	// Each read asks the coordinator itself and one other replica.
	if total := gets["b"] + gets["c"]; total != 20 {
		t.Fatalf("20 reads sent %d requests to other replicas (%v), want 20", total, gets)
	}
	if len(a.ops) != 0 {
		t.Fatalf("%d ops left after every read was answered", len(a.ops))
	}

	// b and c do not answer at first: after SpeculateTicks the read asks
	// the replica it had spared, and the op ends once everyone answered.
	a.Step(Message{Kind: KindClientGet, From: "client", ID: 100, Rec: Record{Key: []byte("k00")}})
	answers, _ = run(map[string]bool{"b": true, "c": true})
	if len(answers) != 0 {
		t.Fatalf("a read answered without a quorum: %+v", answers)
	}
	for range a.cfg.SpeculateTicks {
		a.Tick()
	}
	answers, gets = run(nil)
	if len(answers) != 1 || !answers[0].Found {
		t.Fatalf("after speculation the read answered %+v", answers)
	}
	if gets["b"]+gets["c"] != 1 {
		t.Fatalf("speculation sent %v, want one request to the spared replica", gets)
	}
	// The first request is still unanswered; the op waits for it, then
	// ends once it is resent and answered.
	for range a.cfg.ResendTicks {
		a.Tick()
	}
	run(nil)
	if len(a.ops) != 0 {
		t.Fatalf("%d ops left after every replica answered", len(a.ops))
	}
}

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
	tr := newTrio(abcRing())
	for i := range 20 {
		tr.store(Record{Key: fmt.Appendf(nil, "k%02d", i), Value: []byte("v"), Version: 100}, trioNames...)
	}
	// run delivers messages until none is left, except requests to the
	// nodes held, and returns the client's answers and the reads asked
	// of each node.
	run := func(held map[string]bool) (answers []Message, gets map[string]int) {
		gets = map[string]int{}
		answers = tr.deliver(func(m Message) bool {
			switch m.Kind {
			case KindGet:
				gets[m.To]++
			case KindGetBatch:
				gets[m.To] += len(m.Keys) // a round's reads, together
			default:
				return true
			}
			return !held[m.To]
		})
		return answers, gets
	}
	a := tr.nodes["a"]
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

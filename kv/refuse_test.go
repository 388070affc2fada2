package kv

import (
	"strings"
	"testing"
)

// refusing returns a route for trio.deliver under which the nodes named
// full turn away every write sent to them (as a driver does when its disk
// is full) and everything else is delivered.
func refusing(tr *trio, full ...string) func(Message) bool {
	return func(m Message) bool {
		for _, x := range full {
			if m.To == x && (m.Kind == KindPut || m.Kind == KindPutBatch) {
				tr.nodes[x].Refuse(m, "disk full: test")
				return false
			}
		}
		return true
	}
}

// TestWriteRefusedFailsFast checks that a write whose replicas refuse it
// (their disks are full) fails at once with their reason when too few are
// left for a quorum, that the coordinator still keeps hints for them,
// and that a write with enough replicas left succeeds.
func TestWriteRefusedFailsFast(t *testing.T) {
	tr := newTrio(abcRing())
	a := tr.nodes["a"]

	// One replica of three refuses: W=2 still holds.
	a.Step(Message{Kind: KindClientPut, From: "client", ID: 1, Rec: Record{Key: []byte("k1"), Value: []byte("v")}})
	answers := tr.deliver(refusing(tr, "c"))
	if len(answers) != 1 || answers[0].Err != "" || !answers[0].Found {
		t.Fatalf("a write refused by one replica of three answered %+v, want success", answers)
	}

	// Two refuse: the write fails before any tick, with their reason.
	a.Step(Message{Kind: KindClientPut, From: "client", ID: 2, Rec: Record{Key: []byte("k2"), Value: []byte("v")}})
	answers = tr.deliver(refusing(tr, "b", "c"))
	if len(answers) != 1 {
		t.Fatalf("a write refused by two replicas of three: %d answers before any tick, want 1", len(answers))
	}
	if e := answers[0].Err; !strings.HasPrefix(e, "disk full") || !strings.Contains(e, "b, c") && !strings.Contains(e, "c, b") || !strings.Contains(e, "may still take effect") {
		t.Fatalf("a refused write answered %q, want the refusal, the replicas and an unknown outcome", e)
	}
	if a.Stats.WriteFailures != 1 {
		t.Fatalf("%d write failures counted, want 1", a.Stats.WriteFailures)
	}
	// At its timeout the op keeps hints for the replicas that refused,
	// and answers nothing more.
	for range a.cfg.TimeoutTicks {
		a.Tick()
		if more := tr.deliver(refusing(tr, "b", "c")); len(more) != 0 {
			t.Fatalf("a failed write answered again: %+v", more)
		}
	}
	if h := a.Hints(); h != 3 {
		t.Fatalf("%d hints held after the refused write timed out, want 3 (c for k1, b and c for k2)", h)
	}
	if a.Stats.WriteFailures != 1 {
		t.Fatalf("%d write failures counted after the timeout, want 1", a.Stats.WriteFailures)
	}
	// Space returns: the hints reach b and c.
	for range 20 * a.cfg.ResendTicks {
		a.Tick()
		tr.deliver(nil)
		if a.Hints() == 0 {
			break
		}
	}
	for _, x := range []string{"b", "c"} {
		if r, ok := tr.nodes[x].local([]byte("k2")); !ok || string(r.Value) != "v" {
			t.Fatalf("%s lacks the refused write once it took writes again", x)
		}
	}
}

// TestReadWritebackRefusedFailsFast checks that a read whose newest
// version cannot be written back to a write quorum, because the replicas
// that lack it refuse it, fails with their reason before its timeout
// rather than answering a version no quorum holds.
func TestReadWritebackRefusedFailsFast(t *testing.T) {
	tr := newTrio(abcRing())
	a := tr.nodes["a"]
	tr.store(Record{Key: []byte("k"), Value: []byte("new"), Version: 100}, "a")
	tr.store(Record{Key: []byte("k"), Value: []byte("old"), Version: 50}, "b", "c")
	a.Step(Message{Kind: KindClientGet, From: "client", ID: 1, Rec: Record{Key: []byte("k")}})
	var answers []Message
	ticks := 0
	for ; ticks < a.cfg.TimeoutTicks && len(answers) == 0; ticks++ {
		answers = tr.deliver(refusing(tr, "b", "c"))
		a.Tick()
	}
	if len(answers) != 1 {
		t.Fatalf("the read answered %d times", len(answers))
	}
	if ticks >= a.cfg.TimeoutTicks {
		t.Fatalf("the read answered only at its timeout: %+v", answers[0])
	}
	if e := answers[0].Err; !strings.HasPrefix(e, "disk full") || answers[0].Found {
		t.Fatalf("the read answered %+v, want the refusal", answers[0])
	}
	if a.Stats.ReadFailures != 1 {
		t.Fatalf("%d read failures counted, want 1", a.Stats.ReadFailures)
	}

	// One replica refuses: the other takes the write-back and the read
	// answers the newest version.
	tr.store(Record{Key: []byte("j"), Value: []byte("new"), Version: 100}, "a")
	tr.store(Record{Key: []byte("j"), Value: []byte("old"), Version: 50}, "b", "c")
	a.Step(Message{Kind: KindClientGet, From: "client", ID: 2, Rec: Record{Key: []byte("j")}})
	answers = nil
	for ticks = 0; ticks < a.cfg.TimeoutTicks && len(answers) == 0; ticks++ {
		answers = tr.deliver(refusing(tr, "b"))
		a.Tick()
	}
	if len(answers) != 1 || !answers[0].Found || string(answers[0].Rec.Value) != "new" {
		t.Fatalf("a read with one replica refusing its write-back answered %+v, want \"new\"", answers)
	}
}

package kv

import (
	"fmt"
	"testing"
)

// TestPutBatches checks that a round's client writes reach each other
// replica as one KindPutBatch, acknowledged once, and that every write is
// acknowledged to its client with nothing left behind; and that when a
// replica misses a batch, its writes are still acknowledged (W=2) and
// resent to it one by one until it holds them all.
func TestPutBatches(t *testing.T) {
	pos := Partitioners["md5-low32"]
	ring := NewStaticRing(pos, []Member{{Addr: "a", Token: 1 << 30}, {Addr: "b", Token: 2 << 30}, {Addr: "c", Token: 3 << 30}})
	nodes := map[string]*Node{}
	st := map[string]*MemStorage{}
	clock := func() uint64 { return 1 << 40 }
	for _, x := range []string{"a", "b", "c"} {
		st[x] = NewMemStorage(pos)
		nodes[x] = NewNode(Config{N: 3, W: 2, R: 2}, x, ring, st[x], clock, nil)
	}
	// run delivers messages until none is left, dropping those of the
	// kinds in drop to the nodes in it, and returns the client's answers
	// and the messages sent by kind.
	run := func(drop map[string]Kind) (answers []Message, sent map[Kind]int) {
		sent = map[Kind]int{}
		for moved := true; moved; {
			moved = false
			for _, name := range []string{"a", "b", "c"} {
				rd := nodes[name].Ready()
				st[name].Apply(rd.Persist)
				for _, m := range rd.Messages {
					if m.To == "client" {
						answers = append(answers, m)
						continue
					}
					sent[m.Kind]++
					if k, ok := drop[m.To]; ok && k == m.Kind {
						continue
					}
					nodes[m.To].Step(m)
					moved = true
				}
			}
		}
		return answers, sent
	}
	a := nodes["a"]
	write := func(from, to int) {
		for i := from; i < to; i++ {
			a.Step(Message{Kind: KindClientPut, From: "client", ID: uint64(i + 1), Rec: Record{Key: fmt.Appendf(nil, "k%02d", i), Value: fmt.Appendf(nil, "v%d", i)}})
		}
	}
	holds := func(name string, from, to int) int {
		n := 0
		for i := from; i < to; i++ {
			if r, ok, _ := st[name].Get(fmt.Appendf(nil, "k%02d", i)); ok && string(r.Value) == fmt.Sprint("v", i) {
				n++
			}
		}
		return n
	}

	write(0, 20)
	answers, sent := run(nil)
	if len(answers) != 20 {
		t.Fatalf("%d answers to 20 writes", len(answers))
	}
	for _, m := range answers {
		if m.Err != "" {
			t.Fatalf("write answered %+v", m)
		}
	}
	if sent[KindPutBatch] != 2 || sent[KindPutBatchAck] != 2 || sent[KindPut] != 0 || sent[KindPutAck] != 0 {
		t.Fatalf("20 writes in one round sent %v; want one batch to each of b and c, and one acknowledgement each", sent)
	}
	for _, x := range []string{"a", "b", "c"} {
		if got := holds(x, 0, 20); got != 20 {
			t.Fatalf("%s holds %d of the 20 writes", x, got)
		}
	}
	if len(a.ops) != 0 || len(a.putBatches) != 0 {
		t.Fatalf("%d ops and %d batches left after every write was acknowledged", len(a.ops), len(a.putBatches))
	}

	// c misses the next batch: the writes are acknowledged with a's and
	// b's copies, then resent to c one by one.
	write(20, 30)
	answers, _ = run(map[string]Kind{"c": KindPutBatch})
	if len(answers) != 10 {
		t.Fatalf("%d answers to 10 writes with one replica missing them", len(answers))
	}
	if got := holds("c", 20, 30); got != 0 {
		t.Fatalf("c holds %d writes of a batch it never received", got)
	}
	for range a.cfg.ResendTicks {
		a.Tick()
	}
	_, sent = run(nil)
	if sent[KindPut] != 10 {
		t.Fatalf("resending to c sent %v, want 10 single writes", sent)
	}
	if got := holds("c", 20, 30); got != 10 {
		t.Fatalf("after the resends c holds %d of the 10 writes", got)
	}
	if len(a.ops) != 0 {
		t.Fatalf("%d ops left after c stored every write", len(a.ops))
	}
	// The lost batch is forgotten once its writes have timed out.
	for range a.cfg.TimeoutTicks {
		a.Tick()
	}
	if len(a.putBatches) != 0 {
		t.Fatalf("%d unacknowledged batches kept after the timeout", len(a.putBatches))
	}
}

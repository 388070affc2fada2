package kv

import (
	"fmt"
	"testing"
)

// sentKinds returns a route for trio.deliver that counts the messages
// sent by kind, and keeps those of kind drop[m.To] from their destination.
func sentKinds(drop map[string]Kind) (func(Message) bool, map[Kind]int) {
	sent := map[Kind]int{}
	return func(m Message) bool {
		sent[m.Kind]++
		k, ok := drop[m.To]
		return !ok || k != m.Kind
	}, sent
}

// TestPutBatches checks that a round's client writes reach each other
// replica as one KindPutBatch, acknowledged once, and that every write is
// acknowledged to its client with nothing left behind; and that when a
// replica misses a batch, its writes are still acknowledged (W=2) and
// resent to it one by one until it holds them all.
func TestPutBatches(t *testing.T) {
	tr := newTrio(abcRing())
	a := tr.nodes["a"]
	write := func(from, to int) {
		for i := from; i < to; i++ {
			a.Step(Message{Kind: KindClientPut, From: "client", ID: uint64(i + 1), Rec: Record{Key: fmt.Appendf(nil, "k%02d", i), Value: fmt.Appendf(nil, "v%d", i)}})
		}
	}
	holds := func(name string, from, to int) int {
		n := 0
		for i := from; i < to; i++ {
			if r, ok, _ := tr.st[name].Get(fmt.Appendf(nil, "k%02d", i)); ok && string(r.Value) == fmt.Sprint("v", i) {
				n++
			}
		}
		return n
	}

	write(0, 20)
	route, sent := sentKinds(nil)
	answers := tr.deliver(route)
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
	for _, x := range trioNames {
		if got := holds(x, 0, 20); got != 20 {
			t.Fatalf("%s holds %d of the 20 writes", x, got)
		}
	}
	if len(a.ops) != 0 || len(a.reqBatches) != 0 {
		t.Fatalf("%d ops and %d batches left after every write was acknowledged", len(a.ops), len(a.reqBatches))
	}

	// c misses the next batch: the writes are acknowledged with a's and
	// b's copies, then resent to c one by one.
	write(20, 30)
	route, _ = sentKinds(map[string]Kind{"c": KindPutBatch})
	if answers := tr.deliver(route); len(answers) != 10 {
		t.Fatalf("%d answers to 10 writes with one replica missing them", len(answers))
	}
	if got := holds("c", 20, 30); got != 0 {
		t.Fatalf("c holds %d writes of a batch it never received", got)
	}
	for range a.cfg.ResendTicks {
		a.Tick()
	}
	route, sent = sentKinds(nil)
	tr.deliver(route)
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
	if len(a.reqBatches) != 0 {
		t.Fatalf("%d unacknowledged batches kept after the timeout", len(a.reqBatches))
	}
}

// TestGetBatches checks that a round's reads reach each other replica they
// ask as one KindGetBatch, answered once, with keys held and not held told
// apart; and that a read after a write of its key in the same round finds
// the replica already holding it (requests keep their order), so no read
// repair is needed.
func TestGetBatches(t *testing.T) {
	tr := newTrio(abcRing())
	for i := range 10 { // k00..k09 are held everywhere; k10..k19 nowhere
		tr.store(Record{Key: fmt.Appendf(nil, "k%02d", i), Value: fmt.Appendf(nil, "v%d", i), Version: 100}, trioNames...)
	}
	a := tr.nodes["a"]
	read := func(from, to int) map[Kind]int {
		for i := from; i < to; i++ {
			a.Step(Message{Kind: KindClientGet, From: "client", ID: uint64(i + 1), Rec: Record{Key: fmt.Appendf(nil, "k%02d", i)}})
		}
		route, sent := sentKinds(nil)
		answers := map[uint64]Message{}
		for _, m := range tr.deliver(route) {
			answers[m.ID] = m
		}
		if len(answers) != to-from {
			t.Fatalf("%d answers to %d reads", len(answers), to-from)
		}
		for i := from; i < to; i++ {
			m := answers[uint64(i+1)]
			if held := i < 10; m.Err != "" || m.Found != held || (held && string(m.Rec.Value) != fmt.Sprint("v", i)) {
				t.Fatalf("read of k%02d answered %+v", i, m)
			}
		}
		return sent
	}
	// Each read asks one other replica: one message to each replica.
	sent := read(0, 10)
	if sent[KindGetBatch] == 0 || sent[KindGetBatch]+sent[KindGet] > 2 || sent[KindGetBatchResp] != sent[KindGetBatch] {
		t.Fatalf("10 reads in one round sent %v; want a batch to each replica asked, answered once", sent)
	}
	// Keys no replica holds: told apart from held ones in the batch's
	// answer (each read then asks the replica it spared, one by one).
	if sent = read(10, 20); sent[KindGetBatch] == 0 {
		t.Fatalf("10 reads in one round sent %v; want batches", sent)
	}
	if len(a.ops) != 0 || len(a.reqBatches) != 0 {
		t.Fatalf("%d ops and %d batches left after every read was answered", len(a.ops), len(a.reqBatches))
	}

	// Writes, then reads of the same keys, in one round.
	for i := range 10 {
		a.Step(Message{Kind: KindClientPut, From: "client", ID: uint64(100 + i), Rec: Record{Key: fmt.Appendf(nil, "n%02d", i), Value: []byte("new")}})
		a.Step(Message{Kind: KindClientGet, From: "client", ID: uint64(200 + i), Rec: Record{Key: fmt.Appendf(nil, "n%02d", i)}})
	}
	answers := map[uint64]Message{}
	for _, m := range tr.deliver(nil) {
		answers[m.ID] = m
	}
	for i := range 10 {
		if m := answers[uint64(200+i)]; !m.Found || string(m.Rec.Value) != "new" {
			t.Fatalf("read after a write of n%02d in the same round answered %+v", i, m)
		}
	}
	if a.Stats.ReadRepairs != 0 {
		t.Fatalf("%d read repairs: a replica was asked before it was written to", a.Stats.ReadRepairs)
	}
}

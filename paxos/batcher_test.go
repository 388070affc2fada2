package paxos

import "testing"

// batches returns the sizes of the batches rd sends.
func batches(rd Ready) []int {
	var out []int
	for _, m := range rd.Messages {
		if m.Kind == KindBatch {
			out = append(out, len(m.Batch))
		}
	}
	return out
}

// A lone client's command leaves at the first Flush; under load a batch
// waits for half the clients' outstanding commands, until Release or the
// next tick, and no longer than BatchSize.
func TestBatcherHoldsUnderLoad(t *testing.T) {
	cfg := baseConfig()
	cfg.BatchSize = 6
	b := NewBatcherAt(cfg, "b0")
	req := func(client, seq uint64) {
		b.Step(Message{Kind: KindRequest, From: "c", Command: Command{Client: client, Seq: seq}, Pending: 1})
	}

	req(1, 1)
	b.Flush()
	if got := batches(b.Ready()); len(got) != 1 || got[0] != 1 || b.Held() {
		t.Fatalf("one client: batches %v, held %v; want [1] at once", got, b.Held())
	}

	// Eight sessions, one command each, heard in a tick: a batch waits for
	// four of them.
	for c := range uint64(8) {
		req(10+c, 1)
	}
	b.Flush()
	b.Ready()
	b.Tick()
	req(10, 2)
	req(11, 2)
	b.Flush()
	if got := batches(b.Ready()); len(got) != 0 || !b.Held() {
		t.Fatalf("8 outstanding, 2 waiting: batches %v, held %v; want them held", got, b.Held())
	}
	req(12, 2)
	req(13, 2)
	b.Flush()
	if got := batches(b.Ready()); len(got) != 1 || got[0] != 4 || b.Held() {
		t.Fatalf("8 outstanding, 4 waiting: batches %v, held %v; want [4]", got, b.Held())
	}
	req(14, 2)
	b.Flush()
	if !b.Held() {
		t.Fatal("1 waiting of 8 outstanding: not held")
	}
	b.Release()
	if got := batches(b.Ready()); len(got) != 1 || got[0] != 1 {
		t.Fatalf("release: batches %v, want [1]", got)
	}

	// A held batch leaves with the tick after the one it started in.
	req(15, 2)
	b.Flush()
	b.Tick()
	if got := batches(b.Ready()); len(got) != 1 || got[0] != 1 {
		t.Fatalf("tick: batches %v, want [1]", got)
	}

	// 40 outstanding would want 20: BatchSize caps it.
	for c := range uint64(40) {
		req(100+c, 3)
	}
	b.Tick() // sends the last 4 (BatchSize sent the rest) and sums the 40
	b.Ready()
	for c := range uint64(5) {
		req(100+c, 4)
	}
	b.Flush()
	if !b.Held() {
		t.Fatal("5 waiting of 40 outstanding: not held")
	}
	req(105, 4)
	if got := batches(b.Ready()); len(got) != 1 || got[0] != 6 {
		t.Fatalf("BatchSize reached: batches %v, want [6]", got)
	}

	// Once the load is gone (two whole ticks without requests), commands
	// leave at once again.
	b.Tick()
	b.Tick()
	b.Tick()
	req(1, 2)
	b.Flush()
	if got := batches(b.Ready()); len(got) != 1 || b.Held() {
		t.Fatalf("after the load: batches %v, held %v; want one at once", got, b.Held())
	}
}

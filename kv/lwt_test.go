package kv

import (
	"strings"
	"testing"
)

// TestLwtMeetsPlainWrite is the "outcome unknown" answer of docs/lwt.md:
// the leader of a key gets its INCR's value accepted by itself only (the
// other replicas promised a higher ballot to another proposer meanwhile,
// and refuse it), then a plain SET of the key completes. Retrying, the
// leader finds the SET's value newest, with no lineage: whether its own
// value was chosen and then overwritten, or never chosen, cannot be told,
// so the INCR is answered "outcome unknown", not applied again and not
// reported done. The SET stays the key's value.
func TestLwtMeetsPlainWrite(t *testing.T) {
	ring := abcRing()
	key := []byte("counter")
	pref := ring.Preference(ring.Position(key), 3)
	l, b, c := pref[0], pref[1], pref[2]
	tr := &trio{nodes: map[string]*Node{}, st: map[string]*MemStorage{}}
	// Clocks apart, so that versions order as the story goes: the
	// leader's ballot, then the other proposer's, then the SET's.
	clocks := map[string]uint64{l: 1 << 40, b: 2 << 40, c: 3 << 40}
	for _, x := range trioNames {
		tr.st[x] = NewMemStorage(Partitioners["md5-low32"])
		now := clocks[x]
		tr.nodes[x] = NewNode(Config{N: 3, W: 2, R: 2}, x, ring, tr.st[x], func() uint64 { return now }, nil)
	}
	var held []Message
	tr.nodes[l].Step(Message{Kind: KindClientCas, From: "client", ID: 1, Rec: Record{Key: key}, Keys: Op{[]byte(OpIncrBy), []byte("1")}})
	answers := tr.deliver(func(m Message) bool {
		if m.Kind == KindAccept {
			held = append(held, m)
			return false
		}
		return true
	})
	if len(answers) != 0 || len(held) != 2 {
		t.Fatalf("after the prepare: %d answers, %d accepts held; want 0 and 2", len(answers), len(held))
	}
	// Another proposer (z) gets b and c to promise a higher ballot.
	for _, x := range []string{b, c} {
		tr.nodes[x].Step(Message{Kind: KindPrepare, From: "z", ID: 99, Rec: Record{Key: key}, Ballot: 5 << 39})
	}
	toNodes := func(m Message) bool { return m.To != "z" }
	for _, m := range held {
		tr.nodes[m.To].Step(m) // refused
	}
	if answers = tr.deliver(toNodes); len(answers) != 0 {
		t.Fatalf("answers after the refusals: %+v", answers)
	}
	tr.nodes[c].Step(Message{Kind: KindClientPut, From: "client", ID: 2, Rec: Record{Key: key, Value: []byte("7")}})
	answers = tr.deliver(toNodes)
	if len(answers) != 1 || answers[0].ID != 2 || answers[0].Err != "" {
		t.Fatalf("the SET: %+v", answers)
	}
	// The leader retries after its wait.
	for i := 0; i < 100 && len(answers) < 2; i++ {
		for _, x := range trioNames {
			tr.nodes[x].Tick()
		}
		answers = append(answers, tr.deliver(toNodes)...)
	}
	if len(answers) != 2 || answers[1].ID != 1 {
		t.Fatalf("the INCR was not answered: %+v", answers)
	}
	if e := answers[1].Err; !strings.Contains(e, "outcome unknown") {
		t.Fatalf("the INCR's answer: %+v, want outcome unknown", answers[1])
	}
	for _, x := range trioNames {
		if r, ok, _ := tr.st[x].Get(key); ok && string(r.Value) != "7" {
			t.Errorf("%s holds %q, want the SET's 7", x, r.Value)
		}
	}
}

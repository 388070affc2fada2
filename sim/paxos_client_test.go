package sim

import (
	"testing"

	"tide/paxos"
)

// TestClientHostRoutes checks that a host hands each reply to the session
// it names, and a leader hint, which names none, to every session.
func TestClientHostRoutes(t *testing.T) {
	cfg := paxosConfig(1) // no batchers: sessions follow leader hints
	h := NewClientHost(cfg, "client0", 7, 3)
	seqs := make([]uint64, len(h.Sessions))
	for i, s := range h.Sessions {
		seqs[i] = s.Propose(paxos.EncodeKV(paxos.KVOp{Op: "get", Key: "k"}))
	}
	rd := h.Ready()
	if len(rd.Messages) != 3 {
		t.Fatalf("3 sessions proposing sent %d messages, want 3", len(rd.Messages))
	}
	for _, m := range rd.Messages {
		if m.From != "client0" || m.To != "leader0" {
			t.Fatalf("request %s, want client0->leader0", m)
		}
	}
	h.Step(paxos.Message{Kind: paxos.KindReply, Reply: paxos.Reply{Client: 8, Seq: seqs[1]}})
	for i, s := range h.Sessions {
		want := 1
		if i == 1 {
			want = 0
		}
		if s.Pending() != want {
			t.Errorf("session %d (id %d): %d pending after a reply to id 8, want %d", i, s.ID(), s.Pending(), want)
		}
	}
	// After a hint, every session still waiting retries at the hinted leader.
	h.Step(paxos.Message{Kind: paxos.KindNotLeader, Leader: "leader2"})
	for range 2 * 10 {
		h.Tick()
	}
	// (Sessions with an overdue call also ask for a newer configuration.)
	var retries []paxos.Message
	for _, m := range h.Ready().Messages {
		if m.Kind == paxos.KindRequest {
			retries = append(retries, m)
		}
	}
	if len(retries) != 2 {
		t.Fatalf("2 waiting sessions retried with %d requests, want 2", len(retries))
	}
	for _, m := range retries {
		if m.To != "leader2" {
			t.Errorf("retry %s, want it sent to the hinted leader2", m)
		}
	}
}

package paxos

import (
	"slices"
	"testing"
)

// phase2aTo returns the acceptors rd sends phase 2a of slot to, sorted.
func phase2aTo(rd Ready, slot uint64) []string {
	var out []string
	for _, m := range rd.Messages {
		if m.Kind == KindPhase2a && m.Slot == slot {
			out = append(out, m.To)
		}
	}
	slices.Sort(out)
	return out
}

// A proxy leader sends a slot to a write quorum first, in turn by slot;
// to the rest once its votes are late; leaves an acceptor that missed
// one out of first sends for silenceTicks; and tries it again after.
func TestProxyLeaderThrifty(t *testing.T) {
	cfg := baseConfig()
	cfg.ResendTicks = 1000 // no resends in the way
	g := cfg.Groups[0]
	p := NewProxyLeaderAt(cfg, "p0")
	b := Ballot{1, 0}
	propose := func(slot uint64) []string {
		p.Step(Message{Kind: KindPhase2a, From: "l0", Ballot: b, Slot: slot, Value: Value{Noop: true}, Group: &g})
		return phase2aTo(p.Ready(), slot)
	}
	vote := func(slot uint64, a string) {
		p.Step(Message{Kind: KindPhase2b, From: a, Ballot: b, Slot: slot})
	}
	if got := propose(0); !slices.Equal(got, []string{"a0", "a1"}) {
		t.Fatalf("slot 0 went to %v, want a0 a1", got)
	}
	if got := propose(1); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Fatalf("slot 1 went to %v, want a1 a2", got)
	}
	vote(0, "a0")
	vote(0, "a1")
	vote(1, "a1") // a2 is silent
	for range widenTicks {
		p.Tick()
	}
	if got := phase2aTo(p.Ready(), 1); !slices.Equal(got, []string{"a0", "a2"}) {
		t.Fatalf("slot 1 widened to %v, want a0 a2 (a1 voted)", got)
	}
	vote(1, "a0")
	// a2 is left out of first sends: slot 2 would have gone to a2 a0.
	if got := propose(2); !slices.Equal(got, []string{"a0", "a1"}) {
		t.Fatalf("slot 2 went to %v, want a0 a1 (a2 silent)", got)
	}
	vote(2, "a0")
	vote(2, "a1")
	for range silenceTicks {
		p.Tick()
	}
	p.Ready()
	// The mark has run out: a2 is tried again, and marked again when it
	// stays silent.
	if got := propose(5); !slices.Equal(got, []string{"a0", "a2"}) {
		t.Fatalf("slot 5 went to %v after the silence, want a0 a2", got)
	}
	vote(5, "a0")
	for range widenTicks {
		p.Tick()
	}
	p.Ready()
	vote(5, "a1")
	if got := propose(8); !slices.Equal(got, []string{"a0", "a1"}) {
		t.Fatalf("slot 8 went to %v, want a0 a1 (a2 silent again)", got)
	}
	// A vote clears the mark.
	vote(8, "a2")
	if got := propose(11); !slices.Equal(got, []string{"a0", "a2"}) {
		t.Fatalf("slot 11 went to %v, want a0 a2 (a2 voted)", got)
	}

	// FullFanout, and grids, send to every acceptor.
	cfg.FullFanout = true
	p = NewProxyLeaderAt(cfg, "p0")
	if got := propose(0); len(got) != 3 {
		t.Fatalf("full fan-out: slot 0 went to %v, want all 3", got)
	}
}

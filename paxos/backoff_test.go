package paxos

import "testing"

// A proxy leader whose acceptors stay silent resends phase 2a with a
// backoff, not every resend period: a saturated group (or proxy leader
// behind it) gets fewer copies the longer it takes, instead of a steady
// stream that adds to its load.
func TestProxyLeaderBacksOffResends(t *testing.T) {
	in := newInteraction(1, 3)
	p := in.roles["p0"].(*ProxyLeader)
	g := in.cfg.Groups[0]
	p.Step(Message{Kind: KindPhase2a, From: "l0", To: "p0", Ballot: Ballot{Round: 1, ID: 0}, Slot: 7, Value: Value{Noop: true}, Group: &g})
	sends := func() int {
		n := 0
		for _, m := range p.Ready().Messages {
			if m.Kind == KindPhase2a && m.To == "a0" {
				n++
			}
		}
		return n
	}
	total := sends()
	if total != 1 {
		t.Fatalf("%d phase 2a to a0 on the first step, want 1", total)
	}
	// ResendTicks is 3: resends at ticks 3, 9, 21 and 45 (each wait twice
	// the last), not every 3 ticks (20 resends).
	for range 60 {
		p.Tick()
		total += sends()
	}
	if total != 5 {
		t.Fatalf("%d phase 2a to a0 over 60 ticks, want 5 (the first and 4 resends backing off)", total)
	}
	if got := backoff(3, 10); got != 3<<maxBackoff {
		t.Errorf("backoff(3, 10) = %d, want the cap %d", got, 3<<maxBackoff)
	}
}

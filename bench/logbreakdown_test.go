package bench

import (
	"math"
	"testing"

	"tide/paxos"
)

func TestSubtractPhases(t *testing.T) {
	before := []PhaseStat{{Kind: "acceptor", Phase: "sync", Count: 10, MeanUs: 100}}
	after := []PhaseStat{
		{Kind: "acceptor", Phase: "sync", Count: 30, MeanUs: 200},
		{Kind: "replica", Phase: "step", Count: 5, MeanUs: 7},
	}
	got := subtractPhases(after, before)
	if len(got) != 2 {
		t.Fatalf("got %v", got)
	}
	// 30 syncs of mean 200 after 10 of mean 100: 20 more of mean 250.
	if got[0].Count != 20 || math.Abs(got[0].MeanUs-250) > 1e-9 {
		t.Errorf("acceptor sync: got %+v, want 20 of 250 µs", got[0])
	}
	if got[1] != after[1] {
		t.Errorf("replica step: got %+v, want it as it was", got[1])
	}
	// Nothing new: left out.
	if got := subtractPhases(before, before); len(got) != 0 {
		t.Errorf("no change: got %v", got)
	}
}

func TestRoleKind(t *testing.T) {
	cfg := paxos.Config{Matchmakers: []string{"m0"}, Batchers: []string{"b0"}, Leaders: []string{"l0"}, ProxyLeaders: []string{"p0"},
		Groups: []paxos.Group{{Acceptors: []string{"a0"}}}, Replicas: []string{"r0"}, Unbatchers: []string{"u0"}}
	for addr, want := range map[string]string{"m0": "matchmaker", "b0": "batcher", "l0": "leader", "p0": "proxy", "a0": "acceptor", "r0": "replica", "u0": "unbatcher", "kv": "server"} {
		if got := roleKind(cfg, addr); got != want {
			t.Errorf("roleKind(%s) = %s, want %s", addr, got, want)
		}
	}
}

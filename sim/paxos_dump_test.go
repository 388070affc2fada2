package sim

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"tide/paxos"
)

// TestPaxosDump runs the seed TIDE_PAXOS_DUMP names and prints every
// role's final state (leaders' rounds and live configurations, matchmakers'
// rounds, replicas' progress): where a stuck run stopped.
//
//	TIDE_PAXOS_DUMP=N go test ./sim -run TestPaxosDump -v
func TestPaxosDump(t *testing.T) {
	s := os.Getenv("TIDE_PAXOS_DUMP")
	if s == "" {
		t.Skip()
	}
	seed, _ := strconv.ParseUint(s, 10, 64)
	run := RunPaxos(seed, scenarioFor(seed), 1500, 3000)
	n := run.Net
	for _, a := range n.Addrs() {
		switch r := n.Role(a).(type) {
		case *paxos.Leader:
			st := r.Status()
			fmt.Printf("%s: %s ballot=%s epoch=%d wm=%d next=%d live=%d roundEpoch=%d removed=%v retired=%s\n", a, st.State, st.Ballot, st.Epoch, st.Watermark, st.NextSlot, len(st.Live), st.RoundEpoch, st.Removed, st.Retired)
			for _, rc := range st.Live {
				fmt.Printf("   live %s/e%d\n", rc.Ballot, rc.Epoch)
			}
		case *paxos.Replica:
			fmt.Printf("%s: exec=%d epoch=%d\n", a, r.ExecutedThrough(), r.Config().Epoch)
		case *paxos.ProxyLeader:
			fmt.Printf("%s: pending=%d epoch=%d\n", a, r.Pending(), r.Config().Epoch)
		case *paxos.Acceptor:
			st := r.State()
			fmt.Printf("%s: promised=%s accepted=%d gc=%d\n", a, st.Promised, len(st.Accepted), st.GCBelow)
		case *paxos.Matchmaker:
			st := r.State()
			fmt.Printf("%s: retired=%s rounds=", a, st.Retired)
			for _, rc := range st.Rounds {
				fmt.Printf("%s/e%d ", rc.Ballot, rc.Epoch)
			}
			fmt.Println()
		case *ClientHost:
			for _, c := range r.Sessions {
				cfg := c.Config()
				fmt.Printf("%s: session epoch=%d pending=%d retries=%d batchers=%v leaders=%v\n", a, cfg.Epoch, c.Pending(), c.Retries, cfg.Batchers, cfg.Leaders)
			}
		case nil:
			fmt.Printf("%s: down gone=%v\n", a, n.Gone(a))
		}
	}
	fmt.Println(run.Stuck, run.Violations)
}

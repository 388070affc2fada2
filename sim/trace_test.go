package sim

import (
	"fmt"
	"testing"

	"tide/paxos"
)

func TestPaxosDebugState(t *testing.T) {
	run := RunPaxos(43, 1500, 3000)
	fmt.Println(run.Stuck)
	n := run.Net
	for _, a := range n.Cfg.Replicas {
		r := n.Role(a).(*paxos.Replica)
		fmt.Println(a, "exec", r.ExecutedThrough())
	}
	for _, a := range n.Cfg.Leaders {
		l := n.Role(a).(*paxos.Leader)
		fmt.Println(a, "active", l.Active(), "ballot", l.Ballot(), "wm", l.Watermark(), "next", l.NextSlot())
	}
	for _, g := range n.Cfg.Groups {
		for _, a := range g.Acceptors {
			st := n.Role(a).(*paxos.Acceptor).State()
			fmt.Println(a, "promised", st.Promised, "gc", st.GCBelow, "accepted", len(st.Accepted))
		}
	}
}

package sim

import (
	"fmt"
	"testing"

	"tide/paxos"
)

func TestPaxosDebugSlot(t *testing.T) {
	traceHook = func(now int, m paxos.Message) {
		if (m.Slot == 17 && m.To == "leader0") || m.Kind == paxos.KindPhase1b || m.Kind == paxos.KindNack {
			fmt.Println(now, m.String(), len(m.Value.Commands), m.Value.Noop)
		}
	}
	defer func() { traceHook = nil }()
	RunPaxos(43, 1500, 3000)
}

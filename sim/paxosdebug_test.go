package sim

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"tide/paxos"
)

func TestPaxosDebugTrace(t *testing.T) {
	traceHook = func(now int, m paxos.Message) {
		if m.To == "client2" || m.From == "client2" || (m.Kind == paxos.KindRequest) {
			fmt.Println(now, m.String(), m.Command.Client, m.Command.Seq, m.Leader)
		}
	}
	defer func() { traceHook = nil }()
	run := RunPaxos(4, 0, 400)
	fmt.Println(run.Stuck)
}

func TestPaxosDebugNoFaults(t *testing.T) {
	for seed := range uint64(6) {
		run := RunPaxos(seed, 0, 3000)
		res := porcupine.CheckOperationsTimeout(KVModel, run.History, 30*time.Second)
		fmt.Println("seed", seed, "completed", run.Completed, "stuck", run.Stuck, "viol", len(run.Violations), "lin", res)
	}
}

func TestPaxosDebugLin(t *testing.T) {
	run := RunPaxos(0, 1500, 3000)
	fmt.Println("stuck:", run.Stuck)
	parts := KVModel.Partition(run.History)
	for _, p := range parts {
		m := KVModel
		m.Partition = nil
		if porcupine.CheckOperations(m, p) {
			continue
		}
		fmt.Println("illegal partition key", p[0].Input.(KVInput).Key)
		sort.Slice(p, func(i, j int) bool { return p[i].Call < p[j].Call })
		for _, op := range p {
			fmt.Println(op.Call, op.Return, op.ClientId, KVModel.DescribeOperation(op.Input, op.Output))
		}
	}
}

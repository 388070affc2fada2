package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"tide/autoscale"
)

// Each role, run in this process for a moment between its synthetic
// peers, handles messages and does the work its rig checks after the run
// (Component fails otherwise): slots chosen, votes in pebble, commands
// executed and snapshotted, requests batched, replies relayed. The
// figures are only required to be positive: this machine is shared.
func TestComponentInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every log role for a second")
	}
	for _, role := range autoscale.LogRoles {
		t.Run(role, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := Component(ctx, role, 1, ComponentOptions{InProcess: true, Warmup: 200 * time.Millisecond, Duration: 500 * time.Millisecond, Window: 64})
			if err != nil {
				t.Fatal(err)
			}
			if res.MessagesIn <= 0 || res.MsgsPerSec <= 0 || res.Commands <= 0 || res.CmdsPerSec <= 0 || res.Work == "" {
				t.Fatalf("%s measured nothing: %+v", role, res)
			}
			t.Logf("%.0f msgs/s, %.0f cmds/s: %s", res.MsgsPerSec, res.CmdsPerSec, res.Work)
		})
	}
}

// BenchmarkComponent measures each role in this process, so that
// -cpuprofile shows the role's code beside the synthetic peers':
//
//	go test ./bench -run XXX -bench Component -benchtime 1x -cpuprofile cpu.out
func BenchmarkComponent(b *testing.B) {
	for _, role := range autoscale.LogRoles {
		b.Run(role, func(b *testing.B) {
			for range b.N {
				res, err := Component(context.Background(), role, 1, ComponentOptions{InProcess: true})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(res.MsgsPerSec, "msgs/s")
				b.ReportMetric(res.CmdsPerSec, "cmds/s")
			}
		})
	}
}

func ExampleSummarize() {
	runs := []ComponentResult{
		{Role: "proxy-leaders", BatchSize: 40, MsgsPerSec: 11000, CmdsPerSec: 110000, CPUusPerMsg: 60},
		{Role: "proxy-leaders", BatchSize: 40, MsgsPerSec: 12000.4, CmdsPerSec: 120000, CPUusPerMsg: 58},
		{Role: "replicas", BatchSize: 40, MsgsPerSec: 5000, CmdsPerSec: 200000, CPUusPerMsg: 100},
	}
	s := Summarize(runs)
	fmt.Println(s.Capacity, s.CommandsPerSec, s.CPUusPerMsg)
	fmt.Println(Capacity{"proxy-leaders": 1, "unbatchers": 2000}.Merge(s.Capacity))
	// Output:
	// map[proxy-leaders:12000 replicas:5000] map[proxy-leaders:120000 replicas:200000] map[proxy-leaders:58 replicas:100]
	// map[proxy-leaders:12000 replicas:5000 unbatchers:2000]
}

func TestSummaryForCPUs(t *testing.T) {
	s := Summary{Capacity: Capacity{"proxy-leaders": 20000, "acceptor-groups": 5000, "batchers": 1000},
		CPUusPerMsg: map[string]float64{"proxy-leaders": 40, "acceptor-groups": 20}}
	got := s.ForCPUs(0.5)
	// 0.5 CPU at 40 µs a message: 12500/s, below the best round.
	if got["proxy-leaders"] != 12500 {
		t.Errorf("proxy-leaders %v, want 12500", got["proxy-leaders"])
	}
	// 25000/s of CPU, but the best round (fsync-bound) was 5000.
	if got["acceptor-groups"] != 5000 {
		t.Errorf("acceptor-groups %v, want 5000", got["acceptor-groups"])
	}
	if got["batchers"] != 1000 {
		t.Errorf("batchers without a CPU figure %v, want 1000", got["batchers"])
	}
}

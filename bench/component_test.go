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

func ExampleProfile() {
	runs := []ComponentResult{
		{Role: "proxy-leaders", BatchSize: 40, MsgsPerSec: 11000, CmdsPerSec: 110000, CPUusPerMsg: 60},
		{Role: "proxy-leaders", BatchSize: 40, MsgsPerSec: 12000.4, CmdsPerSec: 120000, CPUusPerMsg: 58},
	}
	base := CapacityProfile{Capacity: map[string]float64{"proxy-leaders": 1, "replicas": 4000}, BatchSize: 40}
	p := Profile(&base, runs)
	fmt.Println(p.Capacity, p.CommandsPerSec, p.CPUusPerMsg, len(p.Runs))
	// Output: map[proxy-leaders:12000 replicas:4000] map[proxy-leaders:120000 replicas:0] map[proxy-leaders:58] 2
}

package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"tide/autoscale"
	"tide/cluster"
	"tide/paxos/node"
)

// TestLogAutoscalesUnderLoad runs the log as real processes with the log
// controller: under a client load the proxy leaders (given a small
// capacity) grow, and when the load stops they shrink again; the clients'
// history stays linearizable throughout.
func TestLogAutoscalesUnderLoad(t *testing.T) {
	dir := t.TempDir()
	shape := node.DefaultShape
	shape.TickMillis = 10
	d, err := node.NewLocalDeployment(shape)
	if err != nil {
		t.Fatal(err)
	}
	depPath := filepath.Join(dir, "deployment.json")
	if err := d.Save(depPath); err != nil {
		t.Fatal(err)
	}
	local := &cluster.Local{Binary: tideBin, Dir: dir}
	defer local.StopAll(5 * time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	procs, err := local.StartLog(ctx, d, depPath, filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	ctl := cluster.NewLogControl(local, d, procs, depPath, filepath.Join(dir, "state"))
	events, err := autoscale.NewEvents(100, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	events.OnEvent(func(ev autoscale.Event) {
		if ev.Outcome != "decided" {
			t.Logf("autoscale: %s %s: %s %s", ev.Action, ev.Outcome, ev.Reason, ev.Error)
		}
	})
	lc := &autoscale.LogController{Target: ctl, Period: 500 * time.Millisecond, Events: events, Policy: autoscale.LogPolicy{Cfg: autoscale.LogConfig{
		Capacity:         map[string]float64{"proxy-leaders": 200},
		Periods:          2,
		Max:              map[string]int{"proxy-leaders": 3},
		ScaleOutCooldown: autoscale.Duration(time.Second),
		ScaleInCooldown:  autoscale.Duration(3 * time.Second),
	}}}
	go lc.Run(ctx)
	proxies := func() int {
		cur, err := ctl.Current()
		if err != nil {
			return -1
		}
		return len(cur.Log.ProxyLeaders)
	}
	ld := startLoad(t, d, 4)
	waitFor(t, "the proxy leaders to grow under load", 2*time.Minute, func() error {
		if n := proxies(); n < 3 {
			return fmt.Errorf("%d proxy leaders", n)
		}
		return nil
	})
	ld.waitProgress("progress with 3 proxy leaders", 100)
	ld.check()
	waitFor(t, "the proxy leaders to shrink once the load stopped", 2*time.Minute, func() error {
		if n := proxies(); n > 1 {
			return fmt.Errorf("%d proxy leaders", n)
		}
		return nil
	})
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"tide/autoscale"
	"tide/bench"
)

// TestLogAutoscalesUnderLoad runs the log as real processes with the log
// controller: under a client load the proxy leaders (given a small
// capacity) grow, and when the load stops they shrink again; the clients'
// history stays linearizable throughout.
func TestLogAutoscalesUnderLoad(t *testing.T) {
	d, _, ctl := startTestLog(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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

// TestBenchLogRamp runs a short ramp against a local autoscaled log and
// checks its time series: one point a second, the client count following
// the ramp, operations completed in each step, no errors.
func TestBenchLogRamp(t *testing.T) {
	cmd := exec.Command(tideBin, "bench", "log", "--ramp", "1,6", "--step", "3s", "--capacity", "proxy-leaders=100000", "--json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output() // the JSON; the per-second lines go to stderr
	if err != nil {
		t.Fatalf("tide bench log --ramp: %v\n%s", err, stderr.String())
	}
	var points []bench.RampPoint
	if err := json.Unmarshal(out, &points); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	if len(points) != 6 {
		t.Fatalf("%d points for a 6-second ramp", len(points))
	}
	var ops [2]float64
	for i, p := range points {
		want := []int{1, 6}[i/3]
		if p.Clients != want {
			t.Errorf("second %d: %d clients, want %d", p.Second, p.Clients, want)
		}
		if p.Errors != 0 {
			t.Errorf("second %d: %d errors", p.Second, p.Errors)
		}
		if p.Instances["proxy-leaders"] < 1 || p.Instances["replicas"] < 1 {
			t.Errorf("second %d: instances %v", p.Second, p.Instances)
		}
		ops[i/3] += p.OpsPerSec
	}
	if ops[0] == 0 || ops[1] == 0 {
		t.Fatalf("operations per step %v: want some in each", ops)
	}
}

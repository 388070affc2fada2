package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tide/autoscale"
	dockerprov "tide/autoscale/provision/docker"
	"tide/bench"
	"tide/cluster"
	"tide/paxos/node"
)

// TestLogAutoscalesUnderLoad runs the log as real processes with the log
// controller: under a client load the proxy leaders (given a small
// capacity) grow, and when the load stops they shrink again; the clients'
// history stays linearizable throughout.
func TestLogAutoscalesUnderLoad(t *testing.T) {
	d, _, ctl := startTestLog(t)
	autoscalesUnderLoad(t, d, ctl)
}

// TestLogAutoscalesDocker is TestLogAutoscalesUnderLoad with every role
// in a Docker container of its own, each limited to half a CPU, and the
// new proxy leaders launched as containers.
func TestLogAutoscalesDocker(t *testing.T) {
	cli, image := dockerTestImage(t)
	prov, err := dockerprov.New(dockerprov.Config{Image: image, Cluster: "tide-e2e-log-" + dockerE2ESuffix(), Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := prov.Cleanup(ctx); err != nil {
			t.Errorf("clean up containers: %v", err)
		}
	})
	roles := &cluster.ProvisionedRoles{C: prov, CPUs: map[string]int64{"": 5e8}}
	shape := node.DefaultShape
	shape.TickMillis = 10
	ctx := context.Background()
	depPath := filepath.Join(t.TempDir(), "deployment.json")
	d, err := roles.StartNew(ctx, cluster.ShapePlan(shape, ""), func(d node.Deployment) error { return d.Save(depPath) })
	if err != nil {
		t.Fatal(err)
	}
	ins, err := prov.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inContainer := map[string]bool{}
	for _, in := range ins {
		inContainer[in.ChordAddr] = true
	}
	for _, a := range d.Roles() {
		if !inContainer[a] {
			t.Fatalf("role %s runs in none of the containers %v", a, ins)
		}
	}
	ctl := cluster.NewLogControl(roles, d, depPath)
	autoscalesUnderLoad(t, d, ctl)
	ins, err = prov.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	proxies := 0
	for _, in := range ins {
		if in.Kind == "proxy" && in.State != "terminated" {
			proxies++
		}
	}
	if proxies != 1 {
		t.Fatalf("%d proxy leader containers left after the scale-in, want 1", proxies)
	}
}

// autoscalesUnderLoad runs the log controller against a running log with
// a small proxy-leader capacity: the proxy leaders grow to 3 under load
// and shrink to 1 once it stops, and the clients' history stays
// linearizable.
func autoscalesUnderLoad(t *testing.T, d node.Deployment, ctl *cluster.LogControl) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := autoscale.NewEvents(100, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var shrunk atomic.Bool // a scale-in to one proxy leader finished
	events.OnEvent(func(ev autoscale.Event) {
		if ev.Outcome != "decided" {
			t.Logf("autoscale: %s %s: %s %s", ev.Action, ev.Outcome, ev.Reason, ev.Error)
		}
		if ev.Action == autoscale.ActScaleIn && ev.Outcome == "succeeded" && strings.Contains(ev.Reason, "-> 1:") {
			shrunk.Store(true)
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
		if n := proxies(); n > 1 || !shrunk.Load() {
			return fmt.Errorf("%d proxy leaders (the removed ones stopped: %v)", n, shrunk.Load())
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

// TestBenchLogBreakdown runs one short measurement and checks its
// breakdown: every role kind on a command's path reports its messages
// stepped, and the acceptors their synced writes.
func TestBenchLogBreakdown(t *testing.T) {
	cmd := exec.Command(tideBin, "bench", "log", "--clients", "4", "--duration", "2s", "--breakdown", "--json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tide bench log: %v\n%s", err, stderr.String())
	}
	var res bench.LogResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	if res.Ops == 0 {
		t.Fatalf("no operations: %+v", res)
	}
	got := map[string]bench.PhaseStat{}
	for _, s := range res.Breakdown {
		got[s.Kind+"/"+s.Phase] = s
	}
	for _, k := range []string{"batcher", "leader", "proxy", "acceptor", "replica", "unbatcher"} {
		if s := got[k+"/step"]; s.Count == 0 || s.MeanUs <= 0 {
			t.Errorf("%s: no state machine steps in the breakdown: %+v", k, s)
		}
	}
	if s := got["acceptor/sync"]; s.Count == 0 || s.MeanUs <= 0 {
		t.Errorf("acceptors: no synced writes in the breakdown: %+v", s)
	}
}

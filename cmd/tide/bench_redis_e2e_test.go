package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"tide/bench"
)

// `tide bench redis` measures SET, GET, INCR and SET NX against a tide
// cluster and a redis-server it starts: every figure must be measured
// (positive, p99 not below p50), and the cost ratios of the conditional
// ops computed from them. The values themselves depend on the machine.
func TestBenchRedis(t *testing.T) {
	for _, b := range []string{"redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s is not installed (make deps installs it)", b)
		}
	}
	// Enough requests that the servers' CPU time, counted by the kernel
	// in 10 ms ticks, cannot round to zero: 300 GETs took 27 ms and were
	// once measured as no CPU at all.
	cmd := exec.Command(tideBin, "bench", "redis", "--requests", "3000", "--clients", "4", "--keyspace", "1000", "--json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tide bench redis: %v\n%s", err, stderr.String())
	}
	var rep bench.RedisCommandsReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	targets := map[string]int{}
	for _, r := range rep.Results {
		targets[r.Target]++
		if r.RPS <= 0 || r.P50ms <= 0 || r.P99ms < r.P50ms {
			t.Errorf("not a measurement: %+v", r)
		}
		if strings.HasPrefix(r.Target, "tide") && r.CPUus <= 0 {
			t.Errorf("no server CPU measured: %+v", r)
		}
	}
	if len(targets) != 2 {
		t.Fatalf("targets %v, want tide and redis-server, 4 tests each", targets)
	}
	for tg, n := range targets {
		if n != 4 {
			t.Errorf("%s: %d tests, want SET, GET, INCR, SET NX", tg, n)
		}
	}
	if len(rep.Costs) != 4 {
		t.Fatalf("costs %+v, want INCR and SET NX for each target", rep.Costs)
	}
	for _, c := range rep.Costs {
		if c.RPSRatio <= 0 || (strings.HasPrefix(c.Target, "tide") && c.CPURatio <= 0) {
			t.Errorf("cost not computed: %+v", c)
		}
	}
}

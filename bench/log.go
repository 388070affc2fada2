package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"tide/cluster"
	"tide/paxos/node"
)

// LogResult is one measurement of `tide bench log`.
type LogResult struct {
	Mode      string  `json:"mode"` // batched, unbatched, unreplicated, or target
	Clients   int     `json:"clients"`
	Seconds   float64 `json:"seconds"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	// Breakdown is where each role kind's time went over the run
	// (tide_paxos_phase_seconds of every role process).
	Breakdown []PhaseStat `json:"breakdown,omitempty"`
}

// LogPlan returns the log measured for a mode: the `tide log up`
// default (3 acceptors, fsync on), with or without batching, or the
// unreplicated baseline.
func LogPlan(mode string) (cluster.Plan, error) {
	switch mode {
	case "batched":
		return cluster.ShapePlan(node.DefaultShape, ""), nil
	case "unbatched":
		s := node.DefaultShape
		s.Batchers, s.Unbatchers = 0, 0
		return cluster.ShapePlan(s, ""), nil
	case "unreplicated":
		return cluster.UnreplicatedPlan, nil
	}
	return cluster.Plan{}, fmt.Errorf("unknown mode %q: want batched, unbatched or unreplicated", mode)
}

// StartLocalLog starts the roles of a new log of plan p as child
// processes of local, saves its deployment under local.Dir and returns
// it, with the control that reconfigures it as `tide log scale` does.
func StartLocalLog(ctx context.Context, local *cluster.Local, p cluster.Plan) (node.Deployment, *cluster.LogControl, error) {
	depPath := filepath.Join(local.Dir, "deployment.json")
	roles := &cluster.LocalRoles{Local: local, StateDir: filepath.Join(local.Dir, "state")}
	d, err := roles.StartNew(ctx, p, func(d node.Deployment) error { return d.Save(depPath) })
	if err != nil {
		return d, nil, err
	}
	return d, cluster.NewLogControl(roles, d, depPath), nil
}

// Log drives closed-loop clients, each putting 16-byte values to its own
// keys (the paper's write-only workload), against d for duration, after a
// short warm-up, and reports throughput and latency.
func Log(ctx context.Context, d node.Deployment, mode string, clients int, duration time.Duration, log io.Writer) (LogResult, error) {
	res := LogResult{Mode: mode, Clients: clients}
	c, err := node.NewClient(d, "", clients)
	if err != nil {
		return res, err
	}
	defer c.Close()
	value := []byte("0123456789abcdef")
	var mu sync.Mutex
	var lat []float64
	var errs int
	warm := time.Now().Add(time.Second)
	end := warm.Add(duration)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			bad := 0
			for n := 0; ; n++ {
				t := time.Now()
				if t.After(end) {
					break
				}
				opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := c.Put(opCtx, fmt.Sprintf("c%d-%d", i, n%1000), value)
				cancel()
				if t.Before(warm) {
					continue
				}
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, float64(time.Since(t).Microseconds())/1000)
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Seconds = duration.Seconds()
	res.Ops = len(lat)
	res.Errors = errs
	res.OpsPerSec = float64(len(lat)) / duration.Seconds()
	res.P50ms = Percentile(lat, 50)
	res.P99ms = Percentile(lat, 99)
	if b, err := LogBreakdown(ctx, d); err == nil {
		res.Breakdown = b
	} else {
		fmt.Fprintf(log, "no breakdown: %v\n", err)
	}
	fmt.Fprintf(log, "%-12s clients=%-4d %8.0f ops/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", mode, clients, res.OpsPerSec, res.P50ms, res.P99ms, errs)
	return res, nil
}

// LogLocal starts a fresh local deployment for mode, measures it, and
// stops it.
func LogLocal(ctx context.Context, mode string, clients int, duration time.Duration, log io.Writer) (LogResult, error) {
	p, err := LogPlan(mode)
	if err != nil {
		return LogResult{}, err
	}
	dir, err := os.MkdirTemp("", "tide-bench-log-")
	if err != nil {
		return LogResult{}, err
	}
	defer os.RemoveAll(dir)
	local := &cluster.Local{Dir: dir}
	defer local.StopAll(5 * time.Second)
	d, _, err := StartLocalLog(ctx, local, p)
	if err != nil {
		return LogResult{}, err
	}
	return Log(ctx, d, mode, clients, duration, log)
}

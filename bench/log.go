package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"tide/cluster"
	"tide/paxos"
	"tide/paxos/node"
)

// LogResult is one measurement of `tide bench log`.
type LogResult struct {
	Mode string `json:"mode"` // batched, unbatched, unreplicated, or target
	// Workload is put (16-byte values), get (reads through the log) or
	// get-quorum (leaderless reads: acceptors and a replica, paper §3.4).
	Workload string `json:"workload,omitempty"`
	Clients  int    `json:"clients"`
	// Round is which of several rounds of the same points this is (none
	// when there is one).
	Round     int     `json:"round,omitempty"`
	Seconds   float64 `json:"seconds"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	// Breakdown is where each role kind's time went over the run
	// (tide_paxos_phase_seconds of every role process).
	Breakdown []PhaseStat `json:"breakdown,omitempty"`
	// CPU per operation in microseconds, over the measured seconds: of
	// the servers (every role process of the log; every etcd member), and
	// of the process driving the clients. A busy machine stretches
	// latency and throughput far more than it changes these.
	ServerCPUus float64 `json:"server_cpu_us_per_op,omitempty"`
	ClientCPUus float64 `json:"client_cpu_us_per_op,omitempty"`
	// RoleCPUus splits ServerCPUus by role kind (batcher, leader, proxy,
	// acceptor, replica, unbatcher, matchmaker).
	RoleCPUus map[string]float64 `json:"role_cpu_us_per_op,omitempty"`
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

// Workloads of Log.
var Workloads = []string{"put", "get", "get-quorum"}

// Log drives closed-loop clients against d for duration, after a short
// warm-up, and reports throughput and latency. With workload put each
// client puts 16-byte values to its own keys (the paper's write-only
// workload); with get or get-quorum each reads its own key, put first,
// through the log or by a leaderless quorum read.
func Log(ctx context.Context, d node.Deployment, mode, workload string, clients int, duration time.Duration, log io.Writer) (LogResult, error) {
	res := LogResult{Mode: mode, Workload: workload, Clients: clients}
	var readMode paxos.ReadMode
	switch workload {
	case "put", "get":
	case "get-quorum":
		readMode = paxos.ReadQuorum
	default:
		return res, fmt.Errorf("unknown workload %q: want one of %v", workload, Workloads)
	}
	c, err := node.NewClient(d, "", clients)
	if err != nil {
		return res, err
	}
	defer c.Close()
	value := []byte("0123456789abcdef")
	if workload != "put" {
		for i := range clients {
			opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.Put(opCtx, fmt.Sprintf("c%d-0", i), value)
			cancel()
			if err != nil {
				return res, fmt.Errorf("put the keys to read: %w", err)
			}
		}
	}
	var mu sync.Mutex
	var lat []float64
	var errs int
	warm := time.Now().Add(time.Second)
	end := warm.Add(duration)
	// CPU used, and the breakdown, from the end of the warm-up to the end
	// of the run.
	var client0 float64
	var sample0 logSample
	var sampleErr error
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		select {
		case <-time.After(time.Until(warm)):
		case <-ctx.Done():
			return
		}
		client0 = selfCPU()
		sample0, sampleErr = sampleLog(ctx, d)
	}()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			bad := 0
			// Every command may take 10 s: one deadline per client, 10 s
			// past the end, gives each at least that, without a timer
			// per command (a tenth of the clients' side's CPU).
			opCtx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
			defer cancel()
			for n := 0; ; n++ {
				t := time.Now()
				if t.After(end) {
					break
				}
				var err error
				if workload == "put" {
					err = c.Put(opCtx, fmt.Sprintf("c%d-%d", i, n%1000), value)
				} else {
					var found bool
					if _, found, err = c.Get(opCtx, fmt.Sprintf("c%d-0", i), readMode); err == nil && !found {
						err = fmt.Errorf("key c%d-0 not found", i)
					}
				}
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
	<-sampled
	sample, err := sampleLog(ctx, d)
	if err == nil && sampleErr == nil && len(lat) > 0 {
		res.ServerCPUus = (sample.cpu - sample0.cpu) / float64(len(lat)) * 1e6
		res.RoleCPUus = map[string]float64{}
		for k, v := range sample.byKind {
			res.RoleCPUus[k] = (v - sample0.byKind[k]) / float64(len(lat)) * 1e6
		}
		res.ClientCPUus = (selfCPU() - client0) / float64(len(lat)) * 1e6
	} else {
		fmt.Fprintf(log, "no CPU per operation: %v\n", errors.Join(sampleErr, err))
	}
	res.Seconds = duration.Seconds()
	res.Ops = len(lat)
	res.Errors = errs
	res.OpsPerSec = float64(len(lat)) / duration.Seconds()
	res.P50ms = Percentile(lat, 50)
	res.P99ms = Percentile(lat, 99)
	if err == nil {
		res.Breakdown = subtractPhases(sample.phases, sample0.phases)
	} else {
		fmt.Fprintf(log, "no breakdown: %v\n", err)
	}
	fmt.Fprintf(log, "%-12s %-10s clients=%-4d %8.0f ops/s  p50 %6.2f ms  p99 %6.2f ms  errors %d  cpu/op %.0f µs servers, %.0f µs clients\n",
		mode, workload, clients, res.OpsPerSec, res.P50ms, res.P99ms, errs, res.ServerCPUus, res.ClientCPUus)
	return res, nil
}

// LogLocal starts a fresh local deployment for mode, measures it, and
// stops it.
func LogLocal(ctx context.Context, mode, workload string, clients int, duration time.Duration, log io.Writer) (LogResult, error) {
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
	return Log(ctx, d, mode, workload, clients, duration, log)
}

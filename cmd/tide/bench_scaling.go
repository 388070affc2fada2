package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"tide/bench"
	"tide/cluster"
	"tide/paxos/node"
)

// runLogScaling is `tide bench log --scaling`.
func runLogScaling(ctx context.Context, specs []string, mode, clients string, duration time.Duration, asJSON bool, rh *roleHostFlags) error {
	var sweeps []bench.ScalingSweep
	for _, spec := range specs {
		role, counts, ok := strings.Cut(spec, "=")
		if _, known := cluster.Roles[role]; !ok || !known {
			return fmt.Errorf("--scaling %q: want ROLE=N,N,... with ROLE one of %s", spec, strings.Join(cluster.RoleNames, ", "))
		}
		sw := bench.ScalingSweep{Role: role}
		for _, f := range strings.Split(counts, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 64 {
				return fmt.Errorf("--scaling %q: bad count %q (want 1-64)", spec, f)
			}
			sw.Counts = append(sw.Counts, n)
		}
		sweeps = append(sweeps, sw)
	}
	n, err := strconv.Atoi(strings.TrimSpace(clients))
	if err != nil || n < 1 {
		return fmt.Errorf("--clients: --scaling takes one count, got %q", clients)
	}
	shape := node.DefaultShape
	switch mode {
	case "batched":
	case "unbatched":
		shape.Batchers, shape.Unbatchers = 0, 0
	default:
		return fmt.Errorf("--modes: --scaling takes batched or unbatched, got %q", mode)
	}
	dir, err := os.MkdirTemp("", "tide-bench-scaling-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	host, err := rh.open(ctx, dir, "127.0.0.1")
	if err != nil {
		return err
	}
	defer rh.close()
	limits, err := rh.limits()
	if err != nil {
		return err
	}
	points, err := bench.LogScaling(ctx, bench.ScalingConfig{Host: host, Shape: shape, Sweeps: sweeps, Clients: n, Duration: duration, CPUs: limits, Dir: dir}, progressLog(asJSON))
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(points)
	}
	return bench.PrintScaling(os.Stdout, points)
}

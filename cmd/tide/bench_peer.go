package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"tide/bench"
)

// peerBinary returns the etcd-bench binary: bin if given, or one built from
// the tide source tree this command runs in (bench/peers, a Go module of
// its own so that tide does not depend on etcd).
func peerBinary(ctx context.Context, bin string, progress io.Writer) (string, func(), error) {
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", nil, fmt.Errorf("--peer-bin: %w", err)
		}
		return bin, func() {}, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", nil, err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "bench", "peers", "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", nil, errors.New("--peer etcd: no --peer-bin, and this is not a tide source tree (bench/peers/go.mod); build it with `go build -C bench/peers -o etcd-bench ./cmd/etcd-bench` and pass --peer-bin etcd-bench")
		}
		dir = parent
	}
	tmp, err := os.MkdirTemp("", "tide-peer-")
	if err != nil {
		return "", nil, err
	}
	out := filepath.Join(tmp, "etcd-bench")
	fmt.Fprintf(progress, "building etcd-bench from %s\n", filepath.Join(dir, "bench", "peers"))
	build := exec.CommandContext(ctx, "go", "build", "-C", filepath.Join(dir, "bench", "peers"), "-o", out, "./cmd/etcd-bench")
	build.Stdout, build.Stderr = progress, progress
	if err := build.Run(); err != nil {
		os.RemoveAll(tmp)
		return "", nil, fmt.Errorf("build etcd-bench: %w", err)
	}
	return out, func() { os.RemoveAll(tmp) }, nil
}

// runPeer measures a 3-member etcd with the same clients and duration.
func runPeer(ctx context.Context, bin, workload string, counts []int, duration time.Duration, progress io.Writer) ([]bench.LogResult, error) {
	var cs []string
	for _, n := range counts {
		cs = append(cs, fmt.Sprint(n))
	}
	fmt.Fprintf(progress, "starting a 3-member etcd (each member a process, WAL fsynced)\n")
	cmd := exec.CommandContext(ctx, bin, "--clients", strings.Join(cs, ","), "--duration", duration.String(), "--workload", workload, "--json")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, progress
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("etcd-bench: %w", err)
	}
	var res []bench.LogResult
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var r bench.LogResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("etcd-bench printed %q: %w", sc.Text(), err)
		}
		r.Mode, r.Workload = "etcd", workload
		fmt.Fprintf(progress, "%-12s %-10s clients=%-4d %8.0f ops/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", r.Mode, r.Workload, r.Clients, r.OpsPerSec, r.P50ms, r.P99ms, r.Errors)
		res = append(res, r)
	}
	if len(res) != len(counts) {
		return nil, fmt.Errorf("etcd-bench gave %d results for %d client counts", len(res), len(counts))
	}
	return res, nil
}

// printPeerRatios prints, for each client count, each tide mode against
// etcd: throughput ratio and latency ratios (tide over etcd).
func printPeerRatios(w io.Writer, tide, peer []bench.LogResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nCLIENTS\tTIDE MODE\tWORKLOAD\tOPS/S TIDE / ETCD\tP50 TIDE / ETCD\tP99 TIDE / ETCD\tSERVER CPU/OP TIDE / ETCD")
	for _, p := range peer {
		for _, t := range tide {
			if t.Clients != p.Clients || peerWorkload(t.Workload) != p.Workload || p.OpsPerSec == 0 || p.P50ms == 0 || p.P99ms == 0 {
				continue
			}
			cpu := "-"
			if t.ServerCPUus > 0 && p.ServerCPUus > 0 {
				cpu = fmt.Sprintf("%.2fx", t.ServerCPUus/p.ServerCPUus)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%.2fx\t%.2fx\t%.2fx\t%s\n", p.Clients, t.Mode, t.Workload, t.OpsPerSec/p.OpsPerSec, t.P50ms/p.P50ms, t.P99ms/p.P99ms, cpu)
		}
	}
	return tw.Flush()
}

// peerWorkload is etcd-bench's workload for a tide workload: both kinds of
// tide read compare with etcd's linearizable get.
func peerWorkload(w string) string {
	if w == "put" {
		return "put"
	}
	return "get"
}

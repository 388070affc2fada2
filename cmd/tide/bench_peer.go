package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
// etcd: throughput ratio and latency ratios (tide over etcd). Each ratio
// pairs the two figures of one round; with several rounds it is their
// median, and the last column lists every round's throughput ratio.
func printPeerRatios(w io.Writer, tide, peer []bench.LogResult) error {
	type ratios struct{ ops, p50, p99, cpu []float64 }
	var keys []ratioKey
	by := map[ratioKey]*ratios{}
	rounds := 1
	peer = slices.Clone(peer)
	slices.SortStableFunc(peer, func(a, b bench.LogResult) int { return cmp.Compare(a.Round, b.Round) })
	for _, p := range peer {
		rounds = max(rounds, p.Round)
		for _, t := range tide {
			if t.Mode == "unreplicated" || t.Round != p.Round || t.Clients != p.Clients || peerWorkload(t.Workload) != p.Workload || p.OpsPerSec == 0 || p.P50ms == 0 || p.P99ms == 0 {
				continue
			}
			k := ratioKey{p.Clients, t.Mode, t.Workload}
			r := by[k]
			if r == nil {
				r = &ratios{}
				by[k] = r
				keys = append(keys, k)
			}
			r.ops = append(r.ops, t.OpsPerSec/p.OpsPerSec)
			r.p50 = append(r.p50, t.P50ms/p.P50ms)
			r.p99 = append(r.p99, t.P99ms/p.P99ms)
			if t.ServerCPUus > 0 && p.ServerCPUus > 0 {
				r.cpu = append(r.cpu, t.ServerCPUus/p.ServerCPUus)
			}
		}
	}
	sortByClients(keys)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "\nCLIENTS\tTIDE MODE\tWORKLOAD\tOPS/S TIDE / ETCD\tP50 TIDE / ETCD\tP99 TIDE / ETCD\tSERVER CPU/OP TIDE / ETCD"
	if rounds > 1 {
		fmt.Fprintf(tw, "\nratios: the median of %d rounds, each round's tide run against its etcd run\n", rounds)
		head = strings.Replace(head, "\n", "", 1) + "\tOPS/S RATIO BY ROUND"
	}
	fmt.Fprintln(tw, head)
	for _, k := range keys {
		r := by[k]
		cpu := "-"
		if len(r.cpu) > 0 {
			cpu = fmt.Sprintf("%.2fx", median(r.cpu))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.2fx\t%.2fx\t%.2fx\t%s", k.clients, k.mode, k.workload, median(r.ops), median(r.p50), median(r.p99), cpu)
		if rounds > 1 {
			fmt.Fprintf(tw, "\t%s", eachRound(r.ops, func(x float64) string { return fmt.Sprintf("%.2fx", x) }))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// ratioKey is a row of a ratio table: a mode and workload at a client count.
type ratioKey struct {
	clients        int
	mode, workload string
}

// sortByClients orders rows by client count, keeping the order they were
// first measured in otherwise.
func sortByClients(keys []ratioKey) {
	slices.SortStableFunc(keys, func(a, b ratioKey) int { return cmp.Compare(a.clients, b.clients) })
}

// eachRound lists a row's per-round figures, formatted, in round order.
func eachRound(xs []float64, format func(float64) string) string {
	each := make([]string, len(xs))
	for i, x := range xs {
		each[i] = format(x)
	}
	return strings.Join(each, " ")
}

// printCeilingRatios prints, when the unreplicated ceiling was measured
// beside replicated modes, each mode's share of the ceiling's ops/s at the
// same clients, workload and round: the median over rounds, and with
// several rounds each round's share. It prints nothing otherwise.
func printCeilingRatios(w io.Writer, results []bench.LogResult) error {
	ceiling := map[[2]int]map[string]float64{} // [round, clients] -> workload -> ops/s
	rounds := 1
	for _, r := range results {
		rounds = max(rounds, r.Round)
		if r.Mode == "unreplicated" && r.OpsPerSec > 0 {
			k := [2]int{r.Round, r.Clients}
			if ceiling[k] == nil {
				ceiling[k] = map[string]float64{}
			}
			ceiling[k][r.Workload] = r.OpsPerSec
		}
	}
	var keys []ratioKey
	shares := map[ratioKey][]float64{}
	for _, r := range results {
		c, ok := ceiling[[2]int{r.Round, r.Clients}][r.Workload]
		if r.Mode == "unreplicated" || !ok {
			continue
		}
		k := ratioKey{r.Clients, r.Mode, r.Workload}
		if _, seen := shares[k]; !seen {
			keys = append(keys, k)
		}
		shares[k] = append(shares[k], r.OpsPerSec/c)
	}
	if len(keys) == 0 {
		return nil
	}
	sortByClients(keys)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "\nCLIENTS\tMODE\tWORKLOAD\tOPS/S OF THE UNREPLICATED CEILING"
	if rounds > 1 {
		head += " (MEDIAN)\tBY ROUND"
	}
	fmt.Fprintln(tw, head)
	for _, k := range keys {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.0f%%", k.clients, k.mode, k.workload, 100*median(shares[k]))
		if rounds > 1 {
			fmt.Fprintf(tw, "\t%s", eachRound(shares[k], func(x float64) string { return fmt.Sprintf("%.0f%%", 100*x) }))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// median returns the middle of xs (the mean of the two middle ones for an
// even count); xs is not changed.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// roundOf is the round a result records: none when there is only one.
func roundOf(round, rounds int) int {
	if rounds == 1 {
		return 0
	}
	return round
}

// sortedResults orders tide's results and then the peer's, round by round,
// each by mode and workload in the order first measured, then by clients.
func sortedResults(tide, peer []bench.LogResult) []bench.LogResult {
	all := slices.Concat(tide, peer)
	mode, workload := map[string]int{}, map[string]int{}
	for i := len(all) - 1; i >= 0; i-- { // backwards: the first index stays
		mode[all[i].Mode], workload[all[i].Workload] = i, i
	}
	slices.SortStableFunc(all, func(a, b bench.LogResult) int {
		return cmp.Or(cmp.Compare(a.Round, b.Round), cmp.Compare(mode[a.Mode], mode[b.Mode]),
			cmp.Compare(workload[a.Workload], workload[b.Workload]), cmp.Compare(a.Clients, b.Clients))
	})
	return all
}

// peerWorkload is etcd-bench's workload for a tide workload: both kinds of
// tide read compare with etcd's linearizable get.
func peerWorkload(w string) string {
	if w == "put" {
		return "put"
	}
	return "get"
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tide/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure tide on this machine with real node processes",
	}
	cmd.AddCommand(newBenchChordCmd(), newBenchFilesCmd(), newBenchLogCmd(), newBenchKVCmd(), newBenchRedisCmd(), newBenchRebalanceCmd(), newBenchAutoscaleCmd(), newBenchComponentCmd())
	return cmd
}

func benchOut(asJSON bool, v any) error {
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(v)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Println(string(b))
	return nil
}

func progressLog(asJSON bool) io.Writer {
	return os.Stderr
}

func newBenchChordCmd() *cobra.Command {
	var nodes, lookups int
	var idle time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "chord",
		Short: "Idle RPC/s of a ring and messages per find_successor",
		Long: `Start --nodes real node processes on loopback, wait for the ring to converge
and its fingers to settle, then measure:
  - Chord RPCs per second summed over the idle ring (course limit: < 64 at 16 nodes);
  - mean RPC messages per find_successor sent to a random node, counting the
    request and every hop it causes (course limit: < 7 at 16 nodes).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := bench.Chord(cmd.Context(), nodes, idle, lookups, progressLog(asJSON))
			if err != nil {
				return err
			}
			return benchOut(asJSON, res)
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 16, "ring size")
	cmd.Flags().IntVar(&lookups, "lookups", 2000, "find_successor calls to measure")
	cmd.Flags().DurationVar(&idle, "idle", 20*time.Second, "idle measurement window")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newBenchFilesCmd() *cobra.Command {
	var nodes, replicas, crash int
	var sizes, total string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "files",
		Short: "Upload/download MB/s and re-replication time after a crash",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var sz []int64
			for _, s := range strings.Split(sizes, ",") {
				v, err := parseBytes(strings.TrimSpace(s))
				if err != nil || v <= 0 {
					return fmt.Errorf("--sizes: bad size %q", s)
				}
				sz = append(sz, v)
			}
			tot, err := parseBytes(total)
			if err != nil {
				return fmt.Errorf("--total: %w", err)
			}
			res, err := bench.Files(cmd.Context(), nodes, replicas, sz, tot, crash, progressLog(asJSON))
			if err != nil {
				return err
			}
			return benchOut(asJSON, res)
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 4, "ring size")
	cmd.Flags().IntVar(&replicas, "replicas", 3, "copies of each file")
	cmd.Flags().StringVar(&sizes, "sizes", "1MiB,64MiB", "file sizes to measure, comma-separated")
	cmd.Flags().StringVar(&total, "total", "256MiB", "bytes to transfer per size")
	cmd.Flags().IntVar(&crash, "crash-files", 200, "files of 256 KiB to upload before killing a node (0 skips)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newBenchLogCmd() *cobra.Command {
	var clients, modes, workloads, target, peer, peerBin string
	var duration, hold, step time.Duration
	var rounds int
	var asJSON, live, breakdown, withTLS bool
	var ramp, capacity, plotPath, cpuProfile string
	var scaling []string
	var rh roleHostFlags
	cmd := &cobra.Command{
		Use:   "log",
		Short: "Throughput and latency of the tide log against its unreplicated baseline",
		Long: `Drive closed-loop clients that put 16-byte values and report operations per
second and p50/p99 latency.

Given no --target, each mode starts a fresh local log as child processes
(3 matchmakers, 1 batcher, 2 leaders, 2 proxy leaders, 3 acceptors with fsync,
2 replicas, 1 unbatcher), measures it and stops it:
  batched       the default deployment
  unbatched     no batchers or unbatchers: one command per slot
  unreplicated  the same KV, transport and client with no consensus (the ceiling)
With unreplicated beside another mode, each mode's share of the ceiling's
ops/s (same clients, workload and round) is printed after the results.

--workload put (the default), get (reads through the log) or get-quorum
(leaderless reads from acceptors and a replica, paper §3.4): each reading
client puts its key first, then reads it.

--clients, --modes and --workload take comma-separated lists and every
combination is measured in one run. With --json and a single combination the output is one
object with ops_per_sec, p50_ms and p99_ms; otherwise a JSON array.

--live measures reconfiguration under load instead: it starts the batched
default, prints throughput every second, and while the clients run changes
the log as 'tide log scale' does: proxy leaders 2 -> 1 -> 2 -> 4, acceptor
groups 1 -> 2, one acceptor replaced, groups 2 -> 1, holding --hold between
changes. For each change it reports how long it took, the throughput before
and after, and the lowest throughput of any 100 ms window while it ran.

--ramp runs closed-loop clients in steps (--ramp 1,100,1000,100,1 --step 20s)
against --target (say, a 'tide log up --autoscale'), or against a local log it
starts, autoscaled with --capacity if given, and prints every second the client
count, throughput, p99, errors, the configuration epoch and each role's
instance count (--json: the same as a time series, with each role's messages/s
and, given --capacity, the instances the profile predicts for that load). At
the end it prints a table by step; --plot FILE.png draws the series.

--scaling ROLE=N,... starts a log of --modes' shape (one mode) with its roles
where --provisioner puts them (docker with --cpus gives each role a fixed CPU
slice), resizes ROLE to each N in turn and measures --clients (one count) for
--duration at each, reporting throughput, latency, and each role kind's
busiest instance's CPU use against its limit: the bottleneck.

--peer etcd also measures a 3-member etcd (each member an embedded etcd server
in a process of its own, WAL fsynced) with the same clients and duration, in
the same run, and prints both and tide's ratio to etcd. The etcd side is
bench/peers, a Go module of its own: given no --peer-bin, it is built from the
source tree this runs in. Each client count is measured on tide and then on
etcd before the next count, so that both figures of a ratio come from the same
minute of the machine; --rounds N does it all N times and prints every round
and the median of the rounds' ratios.

--tls measures each run twice in one go, on a fresh log in plain text and on
one whose roles and clients speak mutual TLS (a CA and a certificate made for
the run), and prints both and the ratios TLS / plain of req/s, p50 and p99.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			if len(scaling) > 0 {
				return runLogScaling(cmd.Context(), scaling, modes, clients, duration, asJSON, &rh)
			}
			if ramp != "" {
				var counts []int
				for _, f := range strings.Split(ramp, ",") {
					n, err := strconv.Atoi(strings.TrimSpace(f))
					if err != nil || n < 0 || n > 10000 {
						return fmt.Errorf("--ramp: bad client count %q (want counts 0-10000, comma-separated)", f)
					}
					counts = append(counts, n)
				}
				rc := bench.RampConfig{Clients: counts, Step: step}
				if capacity != "" {
					policy, err := logPolicy(capacity, "")
					if err != nil {
						return err
					}
					rc.Capacity = policy.Cfg.Capacity
				}
				if target != "" {
					d, err := loadCurrent(target)
					if err != nil {
						return err
					}
					rc.Target = &d
				}
				points, err := bench.LogRamp(cmd.Context(), rc, progressLog(asJSON))
				if err != nil {
					return err
				}
				if plotPath != "" {
					if err := bench.PlotRamp(points, plotPath); err != nil {
						return fmt.Errorf("--plot: %w", err)
					}
					fmt.Fprintf(os.Stderr, "plot written to %s\n", plotPath)
				}
				steps := bench.RampSteps(points, step, rc.Capacity)
				if asJSON {
					// The table goes with the per-second lines, to stderr.
					if err := bench.PrintRampSteps(os.Stderr, steps); err != nil {
						return err
					}
					return json.NewEncoder(os.Stdout).Encode(points)
				}
				return bench.PrintRampSteps(os.Stdout, steps)
			}
			if live {
				n := 10
				if _, err := fmt.Sscan(strings.TrimSpace(clients), &n); err != nil || n < 1 {
					return fmt.Errorf("--clients: --live takes one count, got %q", clients)
				}
				res, err := bench.LogReconfig(cmd.Context(), n, hold, bench.DefaultReconfigSteps, progressLog(asJSON))
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(os.Stdout).Encode(res)
				}
				w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "CHANGE\tTOOK S\tOPS/S BEFORE\tOPS/S AFTER\tLOWEST 100MS (OPS/S)")
				for _, r := range res {
					fmt.Fprintf(w, "%s\t%.2f\t%.0f\t%.0f\t%.0f\n", r.Step, r.Seconds, r.Before, r.After, r.Dip)
				}
				return w.Flush()
			}
			var counts []int
			for _, s := range strings.Split(clients, ",") {
				var n int
				if _, err := fmt.Sscan(strings.TrimSpace(s), &n); err != nil || n < 1 || n > 10000 {
					return fmt.Errorf("--clients: bad count %q", s)
				}
				counts = append(counts, n)
			}
			var wls []string
			for _, w := range strings.Split(workloads, ",") {
				if w = strings.TrimSpace(w); !slices.Contains(bench.Workloads, w) {
					return fmt.Errorf("--workload: unknown workload %q: want one of %s", w, strings.Join(bench.Workloads, ", "))
				}
				wls = append(wls, w)
			}
			if withTLS {
				if target != "" || peer != "" {
					return errors.New("--tls starts its own logs: it does not go with --target or --peer")
				}
				var costs []bench.TLSCost
				for _, mode := range strings.Split(modes, ",") {
					for _, wl := range wls {
						for _, n := range counts {
							c, err := bench.LogTLS(cmd.Context(), strings.TrimSpace(mode), wl, n, duration, os.Stderr)
							if err != nil {
								return err
							}
							costs = append(costs, c)
						}
					}
				}
				if asJSON {
					return json.NewEncoder(os.Stdout).Encode(costs)
				}
				return bench.PrintTLSCosts(os.Stdout, costs)
			}
			if rounds < 1 {
				return fmt.Errorf("--rounds %d: want at least 1", rounds)
			}
			var bin string
			var peerWls []string
			if peer != "" {
				if peer != "etcd" {
					return fmt.Errorf("--peer %q: the one peer is etcd", peer)
				}
				b, cleanup, err := peerBinary(cmd.Context(), peerBin, os.Stderr)
				if err != nil {
					return err
				}
				defer cleanup()
				bin = b
				for _, wl := range wls {
					if w := peerWorkload(wl); !slices.Contains(peerWls, w) {
						peerWls = append(peerWls, w)
					}
				}
			}
			var ms []string
			for _, mode := range strings.Split(modes, ",") {
				ms = append(ms, strings.TrimSpace(mode))
			}
			if target != "" {
				ms = ms[:1] // the target is measured as it is
			}
			// Each client count is measured on tide and then on the peer
			// before the next: the two figures of a ratio come from the
			// same minute of the machine, whose speed swings.
			var results, peerResults []bench.LogResult
			for round := 1; round <= rounds; round++ {
				if rounds > 1 {
					fmt.Fprintf(os.Stderr, "round %d of %d\n", round, rounds)
				}
				for _, n := range counts {
					for _, mode := range ms {
						for _, wl := range wls {
							var res bench.LogResult
							var err error
							if target != "" {
								d, lerr := loadCurrent(target)
								if lerr != nil {
									return lerr
								}
								res, err = bench.Log(cmd.Context(), d, "target", wl, n, duration, os.Stderr)
							} else {
								res, err = bench.LogLocal(cmd.Context(), mode, wl, n, duration, os.Stderr)
							}
							if err != nil {
								return err
							}
							res.Round = roundOf(round, rounds)
							results = append(results, res)
						}
					}
					for _, w := range peerWls {
						rs, err := runPeer(cmd.Context(), bin, w, []int{n}, duration, os.Stderr)
						if err != nil {
							return err
						}
						for i := range rs {
							rs[i].Round = roundOf(round, rounds)
						}
						peerResults = append(peerResults, rs...)
					}
				}
			}
			if peer != "" && asJSON {
				return json.NewEncoder(os.Stdout).Encode(append(results, peerResults...))
			}
			if asJSON && len(results) == 1 {
				return json.NewEncoder(os.Stdout).Encode(results[0])
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(results)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			roundCol := func(r bench.LogResult) string { return "" }
			if rounds > 1 {
				fmt.Fprint(w, "ROUND\t")
				roundCol = func(r bench.LogResult) string { return fmt.Sprintf("%d\t", r.Round) }
			}
			fmt.Fprintln(w, "MODE\tWORKLOAD\tCLIENTS\tOPS/S\tP50 MS\tP99 MS\tERRORS\tSERVER CPU µs/OP\tCLIENT CPU µs/OP")
			for _, r := range sortedResults(results, peerResults) {
				fmt.Fprintf(w, "%s%s\t%s\t%d\t%.0f\t%.2f\t%.2f\t%d\t%.0f\t%.0f\n", roundCol(r), r.Mode, r.Workload, r.Clients, r.OpsPerSec, r.P50ms, r.P99ms, r.Errors, r.ServerCPUus, r.ClientCPUus)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if breakdown {
				for _, r := range results {
					if rounds > 1 {
						fmt.Printf("\nround %d, %s, %d clients: where each role kind's time went (means)\n", r.Round, r.Mode, r.Clients)
					} else {
						fmt.Printf("\n%s, %d clients: where each role kind's time went (means)\n", r.Mode, r.Clients)
					}
					if err := bench.PrintBreakdown(os.Stdout, r); err != nil {
						return err
					}
				}
			}
			if err := printCeilingRatios(os.Stdout, results); err != nil {
				return err
			}
			if len(peerResults) > 0 {
				return printPeerRatios(os.Stdout, results, peerResults)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&clients, "clients", "10", "closed-loop clients, comma-separated for several runs")
	cmd.Flags().StringVar(&modes, "modes", "batched", "batched, unbatched, unreplicated (comma-separated)")
	cmd.Flags().StringVar(&workloads, "workload", "put", "put, get (through the log), get-quorum (leaderless) (comma-separated)")
	cmd.Flags().StringVar(&target, "target", "", "measure an existing log (deployment file or role HTTP address) instead")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "measurement time per run (after 1s of warm-up)")
	cmd.Flags().StringVar(&peer, "peer", "", "also measure this peer with the same workload in the same run, and print the ratios: etcd")
	cmd.Flags().IntVar(&rounds, "rounds", 1, "measure every point this many times, in turn (with --peer, tide and etcd alternate at each client count), and print each round and, for the ratios, their median")
	cmd.Flags().StringVar(&peerBin, "peer-bin", "", "with --peer etcd: the etcd-bench binary (default: build it from bench/peers)")
	cmd.Flags().BoolVar(&breakdown, "breakdown", false, "after each run, print where each role kind's time went over the measured seconds: its CPU µs and messages, syncs and sends per operation, and the mean µs of decode, inbox queueing, state machine step, fsync, waiting for the covering fsync (durable) and send (also in --json as breakdown and role_cpu_us_per_op)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write this process's CPU profile (go tool pprof) to this file: the clients' side, for the roles' see each role's /debug/pprof")
	cmd.Flags().BoolVar(&live, "live", false, "measure live reconfiguration under load (see above)")
	cmd.Flags().BoolVar(&withTLS, "tls", false, "measure each run twice, on a log in plain text and on one whose roles and clients speak mutual TLS (certificates made for the run), and print both and the ratios")
	cmd.Flags().StringVar(&ramp, "ramp", "", "client counts, comma-separated (e.g. 1,100,1000,100,1): run each for --step and print load, throughput, p99 and each role's instances every second")
	cmd.Flags().DurationVar(&step, "step", 20*time.Second, "with --ramp: time at each client count")
	cmd.Flags().StringVar(&capacity, "capacity", "", "with --ramp: the capacity profile (a JSON file or role=rate,...) the output predicts instances from; with no --target, the local log is also autoscaled with it")
	cmd.Flags().StringArrayVar(&scaling, "scaling", nil, "measure throughput against compartment sizes: ROLE=N,N,... (repeatable; sweeps run in order, each starting where the last ended), e.g. --scaling proxy-leaders=1,2,4,8 --scaling acceptor-groups=1,2,4")
	rh.flags(cmd)
	cmd.Flags().StringVar(&plotPath, "plot", "", "with --ramp: write a PNG of throughput, load, p99 and instances per role over time")
	cmd.Flags().DurationVar(&hold, "hold", 5*time.Second, "with --live: time between changes")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newBenchKVCmd() *cobra.Command {
	var requests, clients, keyspace int
	var pipelines string
	var asJSON, withTLS bool
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "redis-benchmark against tide, a single redis-server and a Redis Cluster, side by side",
		Long: `Run redis-benchmark -t set,get against, in turn:
  - a 3-node tide cluster (N=3, W=2, R=2), entering through one node's RESP port,
    once with --kv-sync always (the default) and once with --kv-sync periodic;
  - a single redis-server with persistence off (the unreplicated ceiling);
  - a Redis Cluster of 3 masters with 1 replica each (redis-benchmark --cluster),
    replicated asynchronously with no write quorum;
  - for reference, a Go RESP server in this process that parses every command
    and stores nothing: the ceiling of any Go front end on this machine.
Each figure comes with the CPU time per request of the target's server
processes (user and system, summed over the processes) and of redis-benchmark.
Needs redis-server, redis-cli and redis-benchmark (Debian: redis-server,
redis-tools).

--tls instead runs SET and GET (16-byte values, 100,000 keys) against a 3-node
tide in plain text and then against one with mutual TLS between its nodes (KV
replication, Chord, HTTP; a CA and certificate made for the run), entering
through one node's Redis port, and prints both and the ratios TLS / plain of
req/s, p50 and p99.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ps []int
			for _, s := range strings.Split(pipelines, ",") {
				var p int
				if _, err := fmt.Sscan(strings.TrimSpace(s), &p); err != nil || p < 1 {
					return fmt.Errorf("--pipelines: bad depth %q", s)
				}
				ps = append(ps, p)
			}
			if keyspace < 0 {
				return fmt.Errorf("--keyspace: %d keys: want 0 or more", keyspace)
			}
			if withTLS {
				costs, err := bench.KVTLS(cmd.Context(), requests, clients, os.Stderr)
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(os.Stdout).Encode(costs)
				}
				return bench.PrintTLSCosts(os.Stdout, costs)
			}
			res, err := bench.RedisComparison(cmd.Context(), requests, clients, keyspace, ps, os.Stderr)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(res)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TARGET\tPIPELINE\tTEST\tREQ/S\tP50 MS\tCPU µS/REQ: SERVERS\tCLIENT")
			for _, r := range res {
				fmt.Fprintf(w, "%s\t%d\t%s\t%.0f\t%.3f\t%.1f\t%.1f\n", r.Target, r.Pipeline, r.Test, r.RPS, r.P50ms, r.CPUus, r.ClientCPUus)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&requests, "requests", 200000, "requests per test (-n)")
	cmd.Flags().IntVar(&clients, "clients", 50, "parallel connections (-c)")
	cmd.Flags().IntVar(&keyspace, "keyspace", 0, "spread the requests over this many keys (redis-benchmark -r); 0: one key, as redis-benchmark does by default")
	cmd.Flags().StringVar(&pipelines, "pipelines", "1,16", "pipeline depths (-P), comma-separated")
	cmd.Flags().BoolVar(&withTLS, "tls", false, "instead: SET and GET (16-byte values, 100,000 keys) against a 3-node tide in plain text and one with mutual TLS between its nodes, and the ratios")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newBenchRebalanceCmd() *cobra.Command {
	var keys, valueBytes int
	var rate, values string
	var settle time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rebalance",
		Short: "Keys moved and migration MB/s when a 4th node joins a loaded 3-node ring",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := bench.Rebalance(cmd.Context(), keys, valueBytes, rate, values, settle, os.Stderr)
			if err != nil {
				return err
			}
			return benchOut(asJSON, res)
		},
	}
	cmd.Flags().IntVar(&keys, "keys", 100000, "keys to load")
	cmd.Flags().IntVar(&valueBytes, "value-bytes", 1024, "bytes per value")
	cmd.Flags().StringVar(&rate, "migration-rate", "0", "the nodes' --migration-rate (0: unlimited)")
	cmd.Flags().DurationVar(&settle, "settle", 0, "wait this long after loading before the 4th node starts (0: start at once, while the nodes still compact the load)")
	cmd.Flags().StringVar(&values, "values", "random", "value contents: random (incompressible) or repeated (one byte repeated, compresses to almost nothing)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

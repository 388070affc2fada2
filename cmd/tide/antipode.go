package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"tide/antipode/postnotify"
	"tide/netdelay"
)

func newAntipodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "antipode",
		Short: "Cross-service causal consistency: the post-notification benchmark",
		Long: `Antipode makes requests carry a lineage, the writes they depend on, and makes
readers wait at a barrier until those writes are visible in their local
replica (the Go package tide/antipode, with shims for the tide store, Redis,
PostgreSQL, NATS and the tide log). 'tide antipode bench' shows the anomaly it prevents
and the fix, on real stores started on this machine.`,
	}
	cmd.AddCommand(newAntipodeBenchCmd())
	return cmd
}

func newAntipodeBenchCmd() *cobra.Command {
	c := postnotify.Config{}
	var delayMS, lagMS int
	var sweep, cpuProfile string
	var connect []string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Post-notification benchmark: % inconsistencies with and without antipode",
		Long: `A writer in region A stores a post in the post store's primary, waits --delay
ms, and publishes a notification; a reader in region B receives it and reads
the post from the post store's replica, which applies writes --lag ms late.
Without --antipode the read often misses the post; with it, the notification
carries the post's write in its lineage and the reader waits at the barrier.

The post store is a Redis primary and replica (the replica replicates through
a netdelay proxy adding --lag), a PostgreSQL primary and streaming standby
(recovery_min_apply_delay = --lag), both from the system's packages (make
deps installs them), or the tide store as two regions of two nodes each,
child processes of this binary, where region A replicates to region B with
--region-delay = --lag. Notifications go through NATS or the tide log (its roles run
as child processes of this binary). With --connect, the benchmark uses
running stores instead (and --lag is theirs):
  --connect redis-primary=HOST:PORT --connect redis-replica=HOST:PORT
  --connect pg-primary=DSN --connect pg-standby=DSN
  --connect tide-a=HTTPADDR --connect tide-b=HTTPADDR   (a node of each region)
  --connect nats=URL --connect tide-log=DEPLOYMENT.json

Results go to --out: traces.csv (one row per request), summary.json
(inconsistency_pct, throughput, latency percentiles, lineage and storage
bytes) and consistency-window.png/.svg. --sweep 0,50,200,1000 runs every delay
without and with antipode, into a directory per run, and adds sweep.json and
inconsistencies-vs-delay.png/.svg.`,
		Example: `  tide antipode bench --post-store redis --notify nats -n 1000
  tide antipode bench --post-store postgres --notify tide-log --antipode
  tide antipode bench --post-store tide --notify nats --sweep 0,50,200,1000 -n 10000
  tide antipode bench --sweep 0,50,200,1000 --lag 500 -n 1000 --out results`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if delayMS < 0 || lagMS < 0 {
				return fmt.Errorf("--delay %d, --lag %d: want milliseconds >= 0", delayMS, lagMS)
			}
			c.Lag = time.Duration(lagMS) * time.Millisecond
			c.Delays = []time.Duration{time.Duration(delayMS) * time.Millisecond}
			if sweep != "" {
				c.Sweep = true
				c.Delays = nil
				for _, s := range strings.Split(sweep, ",") {
					ms, err := strconv.Atoi(strings.TrimSpace(s))
					if err != nil || ms < 0 {
						return fmt.Errorf("--sweep %q: want comma-separated delays in ms, such as 0,50,200,1000", sweep)
					}
					c.Delays = append(c.Delays, time.Duration(ms)*time.Millisecond)
				}
			}
			var err error
			if c.Connect, err = postnotify.ParseConnect(connect); err != nil {
				return err
			}
			if c.TideBinary, err = os.Executable(); err != nil {
				return err
			}
			if err := c.Validate(); err != nil {
				return err
			}
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			_, err = postnotify.Bench(ctx, c, os.Stdout, os.Stderr)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.PostStore, "post-store", "redis", "where posts go: "+strings.Join(postnotify.PostStores, " or "))
	f.StringVar(&c.Notify, "notify", "nats", "the notification channel: "+strings.Join(postnotify.Channels, " or "))
	f.IntVar(&delayMS, "delay", 0, "ms the writer waits between storing the post and publishing the notification")
	f.IntVar(&lagMS, "lag", 500, "ms of replication lag injected into the post store")
	f.IntVarP(&c.N, "requests", "n", 1000, "requests per run")
	f.BoolVar(&c.Antipode, "antipode", false, "carry lineage with notifications and wait at the barrier before reading")
	f.StringVar(&sweep, "sweep", "", "comma-separated delays in ms: run each without and with antipode (overrides --delay and --antipode)")
	f.IntVar(&c.Concurrency, "concurrency", 32, "writers at once")
	f.IntVar(&c.PostBytes, "post-bytes", 256, "bytes of each post's body")
	f.DurationVar(&c.BarrierTimeout, "barrier-timeout", 0, "deadline of each barrier (0: 10s + 10 x lag)")
	f.StringVar(&c.Out, "out", "antipode-results", "results directory")
	f.StringArrayVar(&connect, "connect", nil, "NAME=ADDRESS of a running store to use instead of starting one (repeatable; see above)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write the benchmark process's CPU profile (go tool pprof) to this file")
	return cmd
}

// startCPUProfile writes this process's CPU profile (go tool pprof) to
// path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	pf, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(pf); err != nil {
		pf.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); pf.Close() }, nil
}

func newNetdelayCmd() *cobra.Command {
	var listen, target string
	var delay, reverse time.Duration
	cmd := &cobra.Command{
		Use:   "netdelay",
		Short: "A TCP proxy that adds latency, to make one machine look like two regions",
		Long: `Forward every connection accepted on --listen to --target, holding each byte
for --delay before passing it on (bytes from the target to the client) and
for --reverse-delay the other way (default: --delay). Order and throughput
are kept; only latency is added. Point a Redis replica's replicaof at it to
replicate with that lag. Runs until Ctrl-C.`,
		Example: `  tide netdelay --listen 127.0.0.1:7000 --target 127.0.0.1:6379 --delay 300ms
  redis-server --port 6380 --replicaof 127.0.0.1 7000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if target == "" {
				return fmt.Errorf("--target: where to forward (host:port or unix:/path)")
			}
			if !cmd.Flags().Changed("reverse-delay") {
				reverse = delay
			}
			p := &netdelay.Proxy{Target: target, Delay: delay, ReverseDelay: reverse}
			addr, err := p.Listen(listen)
			if err != nil {
				return err
			}
			defer p.Close()
			fmt.Printf("netdelay listening on %s, forwarding to %s (+%v to the client, +%v to the target)\n", addr, target, delay, reverse)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "address to accept connections on (port 0 picks one, printed)")
	cmd.Flags().StringVar(&target, "target", "", "address to forward to: host:port, or unix:/path")
	cmd.Flags().DurationVar(&delay, "delay", 100*time.Millisecond, "latency added to bytes from the target to the client")
	cmd.Flags().DurationVar(&reverse, "reverse-delay", 0, "latency added to bytes from the client to the target (default: --delay)")
	return cmd
}

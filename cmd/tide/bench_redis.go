package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"tide/bench"
)

func newBenchRedisCmd() *cobra.Command {
	var requests, clients, keyspace int
	var sync string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "redis",
		Short: "SET, GET, INCR and SET NX against tide and a single redis-server, and what a conditional write costs",
		Long: `Run redis-benchmark, one test at a time, against a 3-node tide cluster
(N=3, W=2, R=2, entering through one node's RESP port) and then a single
redis-server with persistence off, both started by this command:
  SET     plain writes of random keys (--keyspace of them)
  GET     reads of the same keys
  INCR    one key, every request a read-modify-write of the same counter
          (in tide, a lightweight transaction: Paxos on the key's replicas)
  SET NX  random keys from a space of 10^9, so almost every request writes
          (in tide, a lightweight transaction too)
Each figure: requests per second, p50 and p99 latency, and the CPU time the
target's server processes spent per request (user and system, summed over
the processes, from /proc). Then, per target, the cost of INCR and SET NX
against SET: the ratio of server CPU per request and of requests per second.
Needs redis-server and redis-benchmark (Debian: redis-server, redis-tools).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if requests < 1 || clients < 1 || keyspace < 1 {
				return fmt.Errorf("--requests, --clients and --keyspace must be at least 1")
			}
			if sync != "always" && sync != "periodic" {
				return fmt.Errorf("--kv-sync: %q: want always or periodic", sync)
			}
			rep, err := bench.RedisCommands(cmd.Context(), requests, clients, keyspace, sync, os.Stderr)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(rep)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TARGET\tTEST\tREQ/S\tP50 MS\tP99 MS\tSERVER CPU µS/REQ")
			for _, r := range rep.Results {
				fmt.Fprintf(w, "%s\t%s\t%.0f\t%.3f\t%.3f\t%.1f\n", r.Target, r.Test, r.RPS, r.P50ms, r.P99ms, r.CPUus)
			}
			fmt.Fprintln(w)
			fmt.Fprintln(w, "TARGET\tTEST\tCPU/REQ ÷ SET's\tREQ/S ÷ SET's")
			for _, c := range rep.Costs {
				fmt.Fprintf(w, "%s\t%s\t%.2f\t%.2f\n", c.Target, c.Test, c.CPURatio, c.RPSRatio)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&requests, "requests", 100000, "requests per test (redis-benchmark -n)")
	cmd.Flags().IntVar(&clients, "clients", 50, "parallel connections (-c)")
	cmd.Flags().IntVar(&keyspace, "keyspace", 100000, "keys SET and GET spread over (-r)")
	cmd.Flags().StringVar(&sync, "kv-sync", "always", "tide nodes' --kv-sync: always (fsync before every acknowledgement) or periodic")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tide/autoscale"
	"tide/bench"
)

func newBenchComponentCmd() *cobra.Command {
	var o bench.ComponentOptions
	var rounds int
	var profile string
	var asJSON bool
	var cpus float64
	cmd := &cobra.Command{
		Use:   "component ROLE",
		Short: "Capacity of one log role instance flooded by synthetic peers: messages/s and commands/s",
		Long: `Run one real instance of a log role ('tide log serve' in a child process, with
its real transport and, for acceptors and replicas, its pebble store synced on
every write) between synthetic upstream and downstream peers that this process
runs over real sockets, flood it with the messages it normally receives, and
report the most it handles. ROLE is one of ` + strings.Join(autoscale.LogRoles, ", ") + `, or all:

  batchers         fake clients send requests (one command each); a fake leader
                   counts the batches and sends heartbeats
  proxy-leaders    a fake leader sends phase 2a; three fake acceptors answer with
                   phase 2b at once; the fake leader and two fake replicas count
                   the chosen slots (4 messages in per slot)
  acceptor-groups  a fake proxy leader sends phase 2a and counts phase 2b; a fake
                   leader sends GC every 200 ms below the last 1000 slots voted
                   (the figure is per acceptor)
  replicas         a fake proxy leader sends chosen slots in order, each a batch of
                   fresh puts; a fake unbatcher counts the replies (the replica is
                   one of two, and answers every other slot)
  unbatchers       a fake replica sends reply batches; fake clients count replies

The upstream keeps --window slots (batches; for batchers, window x batch size
requests) in flight, so that the role, not the generator, is the bottleneck and
nothing overflows a queue. Each run warms up, then measures for --duration:
messages received per second by the role's own count
(tide_paxos_messages_in_total, what the autoscaler scrapes), commands per
second handed on as counted downstream, and the role process's CPU time per
message. After each run the role is stopped and checked to have done the work:
every slot chosen, every acknowledged vote in pebble, every command executed,
snapshotted and answered, every request batched, every reply relayed.

With all, the roles alternate within each of --rounds rounds, so that a noisy
spell on a shared machine spreads over all of them; a role's capacity is its
best round.

--profile FILE writes the capacity profile: a JSON object mapping each role
measured to the messages one instance receives per second (its best round),
what 'tide log up --autoscale --capacity FILE' reads into
autoscale.LogConfig.Capacity, for example
  {"acceptor-groups": 9409, "batchers": 197801, "proxy-leaders": 14634,
   "replicas": 5976, "unbatchers": 2153}
An existing file keeps the roles not measured now. With --cpus Q the profile is
for instances limited to Q CPUs, as 'tide log up --provisioner docker --cpus Q'
runs them: each role's rate is capped at Q seconds of CPU per second divided
by its CPU time per message. The commands per second
and CPU per message behind each figure are printed (and with --json, every
run).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			roles := []string{args[0]}
			if args[0] == "all" {
				roles = autoscale.LogRoles
			} else if !slices.Contains(autoscale.LogRoles, args[0]) {
				return fmt.Errorf("role %q: want one of %s, or all", args[0], strings.Join(autoscale.LogRoles, ", "))
			}
			if rounds < 1 {
				return fmt.Errorf("--rounds %d: want at least 1", rounds)
			}
			var base bench.Capacity
			if profile != "" {
				c, err := bench.LoadCapacity(profile)
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				base = c
			}
			o.Log = os.Stderr
			res, err := bench.Components(cmd.Context(), roles, rounds, o)
			if err != nil {
				return err
			}
			sum := bench.Summarize(res)
			capacity := sum.Capacity
			if cpus > 0 {
				capacity = sum.ForCPUs(cpus)
			}
			if profile != "" {
				if err := base.Merge(capacity).Save(profile); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "capacity profile written to %s\n", profile)
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(res)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ROLE\tROUND\tMSGS/S\tCMDS/S\tBATCH\tCPU µS/MSG\tROLE CORES\tPEERS CORES")
			for _, r := range res {
				fmt.Fprintf(w, "%s\t%d\t%.0f\t%.0f\t%d\t%.1f\t%.2f\t%.2f\n", r.Role, r.Round, r.MsgsPerSec, r.CmdsPerSec, r.BatchSize,
					r.CPUusPerMsg, r.RoleCPU/r.Seconds, r.PeersCPU/r.Seconds)
			}
			fmt.Fprint(w, "\nCAPACITY (best round)\tMSGS/S\tCMDS/S\tCPU µS/MSG (median)")
			if cpus > 0 {
				fmt.Fprintf(w, "\tMSGS/S ON %g CPU", cpus)
			}
			fmt.Fprintln(w)
			for _, role := range roles {
				fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.1f", role, sum.Capacity[role], sum.CommandsPerSec[role], sum.CPUusPerMsg[role])
				if cpus > 0 {
					fmt.Fprintf(w, "\t%.0f", capacity[role])
				}
				fmt.Fprintln(w)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&rounds, "rounds", 1, "measure each role this many times, alternating roles")
	cmd.Flags().DurationVar(&o.Duration, "duration", 3*time.Second, "measurement time per run")
	cmd.Flags().DurationVar(&o.Warmup, "warmup", time.Second, "flood time before each measurement")
	cmd.Flags().IntVar(&o.BatchSize, "batch-size", 40, "commands per slot, batch and reply batch")
	cmd.Flags().IntVar(&o.Window, "window", 256, "slots (batches) in flight")
	cmd.Flags().StringVar(&profile, "profile", "", "write the capacity profile (JSON) to this file")
	cmd.Flags().Float64Var(&cpus, "cpus", 0, "size the profile for instances limited to this many CPUs (tide log up --cpus): a role's rate is capped at what its CPU time per message allows")
	cmd.Flags().BoolVar(&o.InProcess, "in-process", false, "run the role in this process (no CPU per message)")
	cmd.Flags().StringVar(&o.Binary, "binary", "", "tide executable that runs the role (default: this one)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the runs as JSON")
	return cmd
}

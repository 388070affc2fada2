package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"tide/chaos"
)

func newChaosCmd() *cobra.Command {
	var (
		image   string
		build   bool
		scale   float64
		timeout time.Duration
		asJSON  bool
		list    bool
	)
	cmd := &cobra.Command{
		Use:   "chaos [scenario...]",
		Short: "Run the chaos scenarios: tide nodes in Docker containers under faults, every history checked",
		Long: `Run the chaos scenarios (all of them, or those named): each starts a
ring of tide nodes in containers of the node image on a network of its
own, runs KV clients (RESP and HTTP) and file writers against it while it
partitions, pauses, kills, restarts, fills the disks of, adds and drains
nodes (by hand and through tide's autoscaler), then heals the cluster
and checks the histories: no acknowledged
write lost, single-writer keys linearizable (porcupine), every
acknowledged upload downloading byte-identical with its replicas
restored. The log scenario runs a tide log instead, a container per role,
with put, cas and get clients while it kills an acceptor, pauses a proxy
leader and a replica and cuts the active leader off (log-reconfig also
adds, replaces and removes roles meanwhile); its history must be
linearizable, keep every acknowledged command, and show none applied
twice. It prints a table per scenario and workload (operations
attempted, acknowledged, failed with an error, unanswered, lost, and the
longest time a client saw only failures) and exits 1 if any scenario
failed.

The image is built FROM scratch around this binary with --build (it must
be static: make build), or made beforehand with make image. --scale 5
runs the long version: every scenario five times as long.`,
		Example: `  tide chaos --build
  tide chaos partition pause --scale 3
  tide chaos --list`,
		RunE: func(cmd *cobra.Command, args []string) error {
			scs, err := chaos.Select(args)
			if err != nil {
				return err
			}
			if list {
				for _, sc := range scs {
					fmt.Printf("%-12s %s\n", sc.Name, sc.About)
				}
				return nil
			}
			if scale <= 0 {
				return fmt.Errorf("--scale %g: want a positive factor", scale)
			}
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: want a positive duration", timeout)
			}
			ctx := cmd.Context()
			if build {
				if err := buildSelfImage(ctx, image); err != nil {
					return err
				}
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			var reps []chaos.Report
			failed := 0
			for _, sc := range scs {
				rep, err := chaos.Run(ctx, sc, chaos.Options{Image: image, Timeout: timeout, Scale: scale, Log: log})
				if err != nil {
					return fmt.Errorf("scenario %s: %w", sc.Name, err)
				}
				if !rep.OK() {
					failed++
				}
				reps = append(reps, rep)
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(reps); err != nil {
					return err
				}
			} else {
				if err := chaos.WriteTable(os.Stdout, reps); err != nil {
					return err
				}
				fmt.Println()
				chaos.WriteDetails(os.Stdout, reps)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d scenarios failed", failed, len(reps))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&image, "image", "tide-node:latest", "node image (FROM scratch around a static tide)")
	f.BoolVar(&build, "build", false, "build --image around this binary first")
	f.Float64Var(&scale, "scale", 1, "stretch every scenario's duration and fault times by this factor (the long version: 5)")
	f.DurationVar(&timeout, "timeout", 3*time.Second, "every client request's deadline")
	f.BoolVar(&asJSON, "json", false, "print the reports as JSON")
	f.BoolVar(&list, "list", false, "list the scenarios and exit")
	return cmd
}

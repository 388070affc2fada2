package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tide/bench"
)

func newBenchAutoscaleCmd() *cobra.Command {
	var provisioners, capacity, fileSize, drainBytes, drainFileSize string
	var cfg bench.AutoscaleConfig
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "autoscale",
		Short: "Autoscaler reaction time (local and Docker) and the time to drain a loaded node",
		Long: `Measure the autoscaling controller on this machine.

Reaction time, for each --provisioner: a ring of 3 nodes of --capacity runs
under a controller (period --period, --periods consecutive periods over
--high percent disk before it acts, at most 4 nodes). Files are uploaded
until a node reaches --high; from the moment that upload returned, the bench
times:
  detect       until the controller's scale_out "started" event
               (bounded by periods x period, plus one scrape)
  launch+join  until "succeeded": the new node serves and is a ring member
  first read   until a GET of a file through the new node returns it
Each of --runs runs uses a fresh ring. The Docker runs need an engine on
this Linux host; without one they are skipped with the reason. The image is
built around this binary if it is static, else from the tide repository in
the current directory, and removed afterwards (or give --docker-image).

Drain time (--drain-bytes, 0 skips): a ring of 4 local nodes with 3
replicas is loaded until one node holds --drain-bytes (about 3/4 of the
data), then that node is asked to leave (POST /internal/leave, as the
controller's scale in does). The bench times its answer and until the 3
remaining nodes hold every file with 3 copies, and reports MB/s of the
drained node's data.

The seed's AWS setup is shown beside the measurements for reference; its
figures are quoted, not measured.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, p := range strings.Split(provisioners, ",") {
				if p = strings.TrimSpace(p); p != "" {
					cfg.Provisioners = append(cfg.Provisioners, p)
				}
			}
			for _, s := range []struct {
				flag, val string
				dst       *int64
			}{{"--capacity", capacity, &cfg.Capacity}, {"--file-size", fileSize, &cfg.FileSize},
				{"--drain-bytes", drainBytes, &cfg.DrainBytes}, {"--drain-file-size", drainFileSize, &cfg.DrainFileSize}} {
				v, err := parseBytes(s.val)
				if err != nil {
					return fmt.Errorf("%s: %w", s.flag, err)
				}
				*s.dst = v
			}
			if cfg.Capacity == 0 || cfg.FileSize == 0 || cfg.DrainFileSize == 0 {
				return fmt.Errorf("--capacity, --file-size and --drain-file-size must be more than 0")
			}
			if cfg.Runs < 1 {
				return fmt.Errorf("--runs %d: want at least 1", cfg.Runs)
			}
			cfg.Log = os.Stderr
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := bench.Autoscale(ctx, cfg)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(res)
			}
			printAutoscaleBench(os.Stdout, res)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&provisioners, "provisioner", "local,docker", "provisioners to measure the reaction with: local, docker (comma-separated)")
	fl.IntVar(&cfg.Runs, "runs", 3, "reaction measurements per provisioner, each on a fresh ring")
	fl.DurationVar(&cfg.Period, "period", 500*time.Millisecond, "controller evaluation period")
	fl.IntVar(&cfg.Periods, "periods", 3, "consecutive periods over --high before a scale out")
	fl.Float64Var(&cfg.High, "high", 70, "scale-out disk threshold, percent")
	fl.StringVar(&capacity, "capacity", "16MiB", "capacity of each node in the reaction runs")
	fl.StringVar(&fileSize, "file-size", "256KiB", "size of the files that fill the ring")
	fl.StringVar(&drainBytes, "drain-bytes", "1GiB", "data the drained node holds (0 skips the drain measurement)")
	fl.StringVar(&drainFileSize, "drain-file-size", "4MiB", "size of the files loaded for the drain")
	fl.StringVar(&cfg.DockerImage, "docker-image", "", "existing node image for the Docker runs (default: build one)")
	fl.StringVar(&cfg.Binary, "binary", "", "tide executable the local nodes run (default: this one)")
	fl.BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func printAutoscaleBench(out io.Writer, res bench.AutoscaleResult) {
	fmt.Fprintf(out, "reaction: threshold crossed (a node at >= %.0f%% of %s) -> new node serves a read\n", res.HighPercent, fmtBytes(res.CapacityBytes))
	fmt.Fprintf(out, "controller period %s, %d periods: detection bound %s\n\n",
		time.Duration(res.PeriodSeconds*float64(time.Second)), res.Periods, time.Duration(res.DetectBoundSeconds*float64(time.Second)))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SETUP\tRUN\tDETECT\tLAUNCH+JOIN\tFIRST READ\tTOTAL")
	secs := func(s float64) string { return fmt.Sprintf("%.2fs", s) }
	for _, r := range res.Reaction {
		if r.Skipped != "" {
			fmt.Fprintf(w, "%s\t-\tskipped (below)\t-\t-\t-\n", r.Provisioner)
			continue
		}
		for _, run := range r.Runs {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", r.Provisioner, run.Run, secs(run.DetectSecs), secs(run.LaunchJoinSecs), fmt.Sprintf("%.3fs", run.FirstReadSecs), secs(run.TotalSecs))
		}
		if m := r.Median; m != nil && len(r.Runs) > 1 {
			fmt.Fprintf(w, "%s\tmedian\t%s\t%s\t%s\t%s\n", r.Provisioner, secs(m.DetectSecs), secs(m.LaunchJoinSecs), fmt.Sprintf("%.3fs", m.FirstReadSecs), secs(m.TotalSecs))
		}
	}
	fmt.Fprintln(w, "aws (seed, quoted)\t-\tCloudWatch alarm: 60 s metric period\tEC2 boot (minutes)\t-\tminutes")
	w.Flush()
	for _, r := range res.Reaction {
		if r.Skipped != "" {
			fmt.Fprintf(out, "%s skipped: %s\n", r.Provisioner, r.Skipped)
		}
	}
	if d := res.Drain; d != nil {
		fmt.Fprintf(out, "\ndrain: %d local nodes, %d replicas, %d files of %s; the drained node held %d files\n\n", d.Nodes, d.Replicas, d.Files, fmtBytes(d.FileSize), d.NodeFiles)
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NODE HELD\tLEAVE ANSWERED\tMB/S\tALL FILES HELD\tMB/S\tVERIFIED")
		fmt.Fprintf(w, "%.0f MB\t%.2fs\t%.1f\t%.2fs\t%.1f\t%d downloads\n", float64(d.NodeBytes)/1e6, d.DrainSecs, d.DrainMBps, d.HeldSecs, d.HeldMBps, d.Verified)
		w.Flush()
	}
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"tide/autoscale"
	"tide/cluster"
)

func newUpCmd() *cobra.Command {
	var nodes, replicas, basePort int
	var dir, capacity, host string
	var hostPerNode, autoscaleOn bool
	var autoscaleConfig, autoscaleListen string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a local cluster of storage nodes and run it until Ctrl-C",
		Long: `Start a local ring of storage nodes as child processes, print where each one
listens, and stop them all on Ctrl-C. Data and logs go under --data-dir, so a
second 'tide up' with the same directory brings the same ring back.

By default node i listens on 127.0.0.(i+1) with the standard ports 5057
(Chord) and 5058 (files), so the seed's upload.py and download.py work
against any node unchanged. --host-per-node=false puts every node on --host
with consecutive ports from --base-port instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if nodes < 1 || nodes > 250 {
				return fmt.Errorf("--nodes %d out of range [1, 250]", nodes)
			}
			var capBytes int64
			if capacity != "" {
				var err error
				if capBytes, err = parseBytes(capacity); err != nil {
					return fmt.Errorf("--capacity: %w", err)
				}
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			local := &cluster.Local{Dir: abs}
			defer func() {
				fmt.Fprintln(os.Stderr, "stopping nodes...")
				local.StopAll(10 * time.Second)
				fmt.Fprintln(os.Stderr, "stopped")
			}()
			layout := cluster.Layout{HostPerNode: hostPerNode, Host: host, BasePort: basePort}
			if autoscaleOn {
				cfg, err := autoscale.LoadConfig(autoscaleConfig)
				if err != nil {
					return err
				}
				if capacity != "" {
					cfg.Launch.Capacity = capacity
				}
				if cmd.Flags().Changed("replicas") {
					cfg.Launch.Replicas = replicas
				}
				return upAutoscale(ctx, abs, layout, nodes, cfg, autoscaleListen)
			}
			var first string
			fmt.Printf("starting %d nodes (data and logs in %s)\n", nodes, abs)
			for i := range nodes {
				ca, ha := layout.Addrs(i)
				spec := cluster.NodeSpec{Name: "node" + strconv.Itoa(i+1), ChordAddr: ca, HTTPAddr: ha, Join: first, Replicas: replicas, Capacity: capBytes}
				p, err := local.Launch(ctx, spec)
				if err != nil {
					return err
				}
				if first == "" {
					first = ca
				}
				fmt.Printf("  %-6s chord %-18s files http://%-18s pid %d  log %s\n", spec.Name, ca, ha, p.Pid(), p.LogPath)
			}
			fmt.Printf("\nring is up. Try:\n  tide upload README.md %s\n  tide download README.md %s -o /tmp/README.md\n  tide ring %s\n  curl http://%s/metrics\nPress Ctrl-C to stop.\n", first, first, first, func() string { _, h := layout.Addrs(0); return h }())
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&nodes, "nodes", 3, "number of storage nodes")
	f.IntVar(&replicas, "replicas", 3, "copies of each file")
	f.StringVar(&dir, "data-dir", "tide-data", "directory for the nodes' data and logs")
	f.StringVar(&capacity, "capacity", "", "per-node capacity, e.g. 64MiB (default: the filesystem)")
	f.BoolVar(&hostPerNode, "host-per-node", true, "give node i the address 127.0.0.(i+1) with the standard ports")
	f.StringVar(&host, "host", "127.0.0.1", "host for every node with --host-per-node=false")
	f.IntVar(&basePort, "base-port", 5057, "first port (Chord; files on the next)")
	f.BoolVar(&autoscaleOn, "autoscale", false, "run the autoscaling controller over the ring (local provisioner)")
	f.StringVar(&autoscaleConfig, "autoscale-config", "", "autoscaler policy file (see 'tide autoscale config')")
	f.StringVar(&autoscaleListen, "autoscale-listen", "127.0.0.1:7070", "where the autoscaler serves /events, /status and /metrics")
	return cmd
}

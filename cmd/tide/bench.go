package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tide/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure tide on this machine with real node processes",
	}
	cmd.AddCommand(newBenchChordCmd(), newBenchFilesCmd())
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

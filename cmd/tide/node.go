package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"tide/chord"
	"tide/store"
)

func newNodeCmd() *cobra.Command {
	var cfg store.Config
	var id string
	var capacity, migrationRate string
	var tombstoneTTL time.Duration
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a storage node",
		Long: `Run a storage node: a Chord member (msgpack-rpc on --chord-addr) and a file
service (HTTP on --http-addr) that stores files under --data-dir.

Without --join the node creates a new ring, or rejoins the ring it was part of
before a restart (remembered in --data-dir). A --join that names the node
itself (its advertised or listen host, or a name resolving to it, with its
chord port) counts as no --join, so every member of a deployment can be given
the address of the first one.

A node that left its ring gracefully (tide node leave) refuses to start again
on the same --data-dir and exits with an error: its data was handed off, and
rejoining with its old token would take ranges back without their data. Start
it with an empty --data-dir to join again.`,
		Example: `  tide node --data-dir /var/lib/tide
  tide node --chord-addr 127.0.0.2:5057 --http-addr 127.0.0.2:5058 --data-dir d2 --join 127.0.0.1:5057`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if id != "" {
				v, err := strconv.ParseUint(id, 10, 32)
				if err != nil {
					return fmt.Errorf("--token %q: want an integer in [0, 4294967295]", id)
				}
				cid := chord.ID(v)
				cfg.ID = &cid
			}
			if capacity != "" {
				c, err := parseBytes(capacity)
				if err != nil {
					return fmt.Errorf("--capacity: %w", err)
				}
				cfg.Capacity = c
			}
			if cfg.Join != "" {
				cfg.Join = chordAddr(cfg.Join)
			}
			rate, err := parseBytes(migrationRate)
			if err != nil {
				return fmt.Errorf("--migration-rate: %w", err)
			}
			cfg.KV.MigrationBytesPerTick = rate / 100 // the KV layer ticks every 10ms
			cfg.KV.TombstoneTTL = uint64(tombstoneTTL.Nanoseconds())
			switch {
			case cfg.KV.VersionCache < 0:
				return fmt.Errorf("--version-cache: %d keys: want 0 or more", cfg.KV.VersionCache)
			case cfg.KV.VersionCache == 0:
				cfg.KV.VersionCache = -1 // the KV layer's "none"
			}
			cfg.Log = slog.Default()
			if cfg.KV.W > cfg.Replicas || cfg.KV.R > cfg.Replicas {
				cfg.KV.W, cfg.KV.R = min(cfg.KV.W, cfg.Replicas), min(cfg.KV.R, cfg.Replicas)
				slog.Warn("quorums lowered to --replicas", "replicas", cfg.Replicas, "w", cfg.KV.W, "r", cfg.KV.R)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			n, err := store.Start(ctx, cfg)
			if err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				slog.Info("signal received; stopping")
			case <-n.Stopped():
			}
			return n.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ChordAddr, "chord-addr", "127.0.0.1:5057", "Chord msgpack-rpc listen address")
	f.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:5058", "file service HTTP listen address")
	f.StringVar(&cfg.Advertise, "advertise", "", "host other nodes use to reach this one (needed when listening on 0.0.0.0)")
	f.StringVar(&cfg.DataDir, "data-dir", "tide-data", "directory for files and metadata")
	f.StringVar(&cfg.Join, "join", "", "Chord address of any ring member to join")
	f.DurationVar(&cfg.JoinTimeout, "join-timeout", 30*time.Second, "how long to keep retrying a --join member that does not answer")
	f.StringVar(&id, "token", "", "ring token (default: the partitioner's position of the Chord address)")
	f.StringVar(&id, "id", "", "alias of --token")
	f.StringVar(&cfg.Partitioner, "partitioner", "md5-low32", "key placement: md5-low32, or md5-mod10000 (the Dynamo seed's ring; tokens below 10000)")
	f.StringVar(&cfg.PeerAddr, "peer-addr", "", "address for KV replication traffic (default: the Chord host, any free port)")
	f.StringVar(&cfg.RESPAddr, "resp-addr", "", "serve the Redis protocol here, e.g. 127.0.0.1:6379 (default: off)")
	f.IntVar(&cfg.KV.W, "write-quorum", 2, "KV writes wait for W acknowledgements")
	f.IntVar(&cfg.KV.R, "read-quorum", 2, "KV reads wait for R answers")
	f.IntVar(&cfg.KV.MaxValue, "max-value", 1<<20, "largest KV value, in bytes")
	f.IntVar(&cfg.KV.VersionCache, "version-cache", 1<<18, "keys whose versions a node keeps in memory, so that writing them again does not read storage first (0: none)")
	f.StringVar(&migrationRate, "migration-rate", "128MiB", "bytes per second anti-entropy and hand-off may send (0: unlimited)")
	f.StringVar(&cfg.KVSync, "kv-sync", "always", "when KV writes are fsynced: always (before each acknowledgement; concurrent writes share an fsync) or periodic (every --kv-sync-period; acknowledged writes survive a process crash, not a power loss)")
	f.DurationVar(&cfg.KVSyncPeriod, "kv-sync-period", 100*time.Millisecond, "fsync period of --kv-sync periodic")
	f.DurationVar(&tombstoneTTL, "tombstone-ttl", time.Hour, "how long a KV delete's tombstone is kept")
	f.IntVar(&cfg.Replicas, "replicas", 3, "copies of each file (N)")
	f.IntVar(&cfg.Successors, "successors", 3, "successor list length r (raised to --replicas)")
	f.StringVar(&capacity, "capacity", "", "bytes this node may store, e.g. 64MiB (default: the filesystem's size)")
	f.Int64Var(&cfg.MaxFileSize, "max-file-size", 1<<30, "largest file accepted, in bytes")
	f.DurationVar(&cfg.TickInterval, "tick", time.Second, "Chord stabilize period")
	f.DurationVar(&cfg.FullRepairInterval, "full-repair", 30*time.Second, "period of the full placement check")
	cmd.AddCommand(newLeaveCmd())
	return cmd
}

func newLeaveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "leave ADDR",
		Short: "Hand off a node's files and take it out of the ring",
		Long: `Ask the node at ADDR (its Chord address) to leave gracefully: it hands every
file and key it holds to the nodes that hold it once it is gone, leaves the
ring, and exits. If a hand-off fails the node stays, with its files. A node
that left does not start again on the same --data-dir.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := store.NewClient()
			defer c.Close()
			start := time.Now()
			fmt.Fprintf(os.Stderr, "asking %s to leave...\n", chordAddr(args[0]))
			moved, err := c.Leave(cmd.Context(), chordAddr(args[0]))
			if err != nil {
				return err
			}
			fmt.Printf("%s left the ring: %d copies handed off in %s\n", chordAddr(args[0]), moved, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
}

// parseBytes reads sizes like 1048576, 64MiB, 2GB, 512k.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"k", 1 << 10}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}}
	for _, u := range units {
		if len(s) > len(u.suffix) && s[len(s)-len(u.suffix):] == u.suffix {
			v, err := strconv.ParseFloat(s[:len(s)-len(u.suffix)], 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("bad size %q", s)
			}
			return int64(v * float64(u.mult)), nil
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q: want bytes, or a number with KiB, MiB, GiB, KB, MB or GB", s)
	}
	return v, nil
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"tide/chord"
	"tide/resp"
	"tide/store"
	"tide/tlsconf"
)

// nodeOpts are the settings of tide node (and tide chord) as flags give
// them.
type nodeOpts struct {
	cfg                     store.Config
	id                      string
	capacity, migrationRate string
	diskReserve             string
	tombstoneTTL, kvResend  time.Duration
	idle                    bool
	regionPeers             []string
	addrFile                string
	maxFileSize             string
	httpTokens              string
	requirePass, aclFile    string
}

func newNodeCmd() *cobra.Command {
	var o nodeOpts
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a storage node: files and KV over HTTP, Redis protocol, Chord",
		Long: `Run a storage node: a Chord member (msgpack-rpc on --chord-addr) that holds
files and keys under --data-dir. On --http-addr it serves the file service
(uploadserver-style POST /upload and GET /NAME, REST under /files/), the
key-value namespace (/kv/KEY, and the Dynamo seed's /route, /hash_ring,
/add_node, /remove_node), /metrics and /healthz; with --resp-addr, the Redis
protocol for redis-cli and redis-benchmark. KV replication between nodes
uses --peer-addr.

Like tide log serve, the node runs with GODEBUG=schedtrace=2147483647 (it
executes itself again with it, in place, unless GODEBUG already sets
schedtrace; GODEBUG=schedtrace=0 opts out): the Go runtime's monitor thread
then wakes every 10 ms instead of every 20 µs while the node is busy, which
cut the server CPU of a SET by about a fifth.

Without --join the node creates a new ring, or rejoins the ring it was part of
before a restart (remembered in --data-dir). A --join that names the node
itself (its advertised or listen host, or a name resolving to it, with its
chord port) counts as no --join, so every member of a deployment can be given
the address of the first one.

--standby starts the node outside the ring, as the Dynamo seed's third node:
it knows the ring of --join (or, without --join, the ring a POST /hash_ring
or add_node gives it), coordinates every KV request sent to it as a member
does, and owns nothing until add_node names it. A node that remove_node takes
out of the ring, or that POST /hash_ring leaves out, is a standby too, and
stays one across restarts until add_node names it.

--idle starts the Chord node outside any ring, as the course's ./chord IP
PORT does: it answers get_info, and waits for create or join over
msgpack-rpc before it serves lookups (tide chord IP PORT is the same).

--region names the node's region. Each region is a ring of its own (its
members --join one another), with its own N replicas of every key and its
own quorums, as Cassandra's LOCAL_QUORUM with NetworkTopologyStrategy: a
write is acknowledged once W replicas of the coordinator's region hold it.
--region-peer NAME=CHORDADDR names a member of another region; the writes
this node coordinates are kept in a durable outbox and replicated to that
region asynchronously (after --region-delay, if set), and dropped from the
outbox once W of its replicas hold them. tide_kv_region_lag_seconds on
/metrics says how far each other region is behind.

A node that left its ring gracefully (tide node leave) refuses to start again
on the same --data-dir and exits with an error: its data was handed off, and
rejoining with its old token would take ranges back without their data. Start
it with an empty --data-dir to join again.`,
		Example: `  tide node --data-dir /var/lib/tide
  tide node --chord-addr 127.0.0.2:5057 --http-addr 127.0.0.2:5058 --data-dir d2 --join 127.0.0.1:5057
  tide node --standby --partitioner md5-mod10000 --http-addr 127.0.0.3:5000 --data-dir d3
  tide node --region us --region-peer eu=10.1.0.5:5057 --join 10.0.0.5:5057 --data-dir d4`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{steadySysmonAnnotation: "yes"},
		RunE:        func(cmd *cobra.Command, args []string) error { return runNode(&o) },
	}
	addNodeFlags(cmd, &o)
	cmd.AddCommand(newLeaveCmd())
	return cmd
}

// newChordCmd is the course's binary: ./chord IP PORT.
func newChordCmd() *cobra.Command {
	var o nodeOpts
	cmd := &cobra.Command{
		Use:   "chord IP PORT",
		Short: "Run an idle node that waits for create or join over msgpack-rpc (the course's ./chord IP PORT)",
		Long: `Run a node as the course's ./chord IP PORT does: Chord msgpack-rpc on IP:PORT,
idle until a create or join arrives over msgpack-rpc; until then it answers
get_info, and lookups with an error saying it is not in a ring. Once a member
it is a full storage node: the file service listens on IP and PORT+1 (5057
and 5058, as in the course's deployment) unless --http-addr says otherwise,
and data goes to --data-dir (default tide-data/chord-IP-PORT). PORT 0 takes a
free port, and the file service another (see --addr-file). Every flag of tide
node applies.`,
		Example: `  tide chord 127.0.0.1 5057
  tide chord 127.0.0.2 5057 --data-dir /var/lib/tide`,
		Args:        cobra.ExactArgs(2),
		Annotations: map[string]string{steadySysmonAnnotation: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := strconv.Atoi(args[1])
			if err != nil || port < 0 || port > 65534 {
				return fmt.Errorf("PORT %q: want an integer in [0, 65534] (the file service takes PORT+1; 0 takes free ports)", args[1])
			}
			if net.ParseIP(args[0]) == nil {
				return fmt.Errorf("IP %q: want an IP address", args[0])
			}
			o.cfg.ChordAddr = net.JoinHostPort(args[0], strconv.Itoa(port))
			if !cmd.Flags().Changed("http-addr") {
				o.cfg.HTTPAddr = net.JoinHostPort(args[0], "0")
				if port > 0 {
					o.cfg.HTTPAddr = net.JoinHostPort(args[0], strconv.Itoa(port+1))
				}
			}
			if !cmd.Flags().Changed("data-dir") {
				o.cfg.DataDir = filepath.Join("tide-data", "chord-"+args[0]+"-"+args[1])
			}
			o.idle = true
			return runNode(&o)
		},
	}
	addNodeFlags(cmd, &o)
	for _, name := range []string{"idle", "standby", "join", "join-timeout", "chord-addr"} {
		cmd.Flags().MarkHidden(name) // IP PORT and create or join over msgpack-rpc say it all
	}
	return cmd
}

func addNodeFlags(cmd *cobra.Command, o *nodeOpts) {
	cfg := &o.cfg
	f := cmd.Flags()
	f.StringVar(&cfg.ChordAddr, "chord-addr", "127.0.0.1:5057", "Chord msgpack-rpc listen address")
	f.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:5058", "file service HTTP listen address")
	f.StringVar(&cfg.Advertise, "advertise", "", "host other nodes use to reach this one (needed when listening on 0.0.0.0)")
	f.StringVar(&cfg.DataDir, "data-dir", "tide-data", "directory for files and metadata")
	f.StringVar(&cfg.Join, "join", "", "Chord address of any ring member to join (with --standby: whose ring to follow)")
	f.BoolVar(&cfg.Standby, "standby", false, "start outside the ring: know it (through --join, POST /hash_ring or add_node), coordinate requests, own nothing until add_node names this node")
	f.BoolVar(&o.idle, "idle", false, "start the Chord node outside any ring, waiting for create or join over msgpack-rpc (as the course's ./chord IP PORT)")
	f.DurationVar(&cfg.JoinTimeout, "join-timeout", 30*time.Second, "how long to keep retrying a --join member that does not answer")
	f.StringVar(&o.id, "token", "", "ring token (default: the one kept from an earlier start; else, joining, the middle of the ring's largest range; else the partitioner's position of the Chord address)")
	f.StringVar(&o.id, "id", "", "alias of --token")
	f.StringVar(&cfg.Partitioner, "partitioner", "md5-low32", "key placement: md5-low32, or md5-mod10000 (the Dynamo seed's ring; tokens below 10000)")
	f.StringVar(&cfg.PeerAddr, "peer-addr", "", "address for KV replication traffic (default: the Chord host, any free port)")
	f.StringVar(&cfg.RESPAddr, "resp-addr", "", "serve the Redis protocol here, e.g. 127.0.0.1:6379 (default: off)")
	f.IntVar(&cfg.KV.W, "write-quorum", 2, "KV writes wait for W acknowledgements")
	f.IntVar(&cfg.KV.R, "read-quorum", 2, "KV reads wait for R answers")
	f.IntVar(&cfg.KV.MaxValue, "max-value", 1<<20, "largest KV value, in bytes")
	f.IntVar(&cfg.KV.VersionCache, "version-cache", 1<<18, "keys whose versions a node keeps in memory, so that writing them again does not read storage first (0: none)")
	f.StringVar(&o.migrationRate, "migration-rate", "128MiB", "bytes per second anti-entropy and hand-off may send (0: unlimited)")
	f.StringVar(&cfg.KVSync, "kv-sync", "always", "when KV writes are fsynced: always (before each acknowledgement; concurrent writes share an fsync) or periodic (every --kv-sync-period; acknowledged writes survive a process crash, not a power loss)")
	f.DurationVar(&cfg.KVSyncPeriod, "kv-sync-period", 100*time.Millisecond, "fsync period of --kv-sync periodic")
	f.DurationVar(&o.tombstoneTTL, "tombstone-ttl", time.Hour, "how long a KV delete's tombstone is kept")
	f.DurationVar(&o.kvResend, "kv-resend", 200*time.Millisecond, "a KV replica that has not answered a request is asked again after this long, then after twice as long, up to 16 times (the request fails after 8s)")
	f.IntVar(&cfg.Replicas, "replicas", 3, "copies of each file (N)")
	f.IntVar(&cfg.Successors, "successors", 3, "successor list length r (raised to --replicas)")
	f.StringVar(&o.capacity, "capacity", "", "bytes this node may store, e.g. 64MiB (default: the filesystem's size)")
	f.StringVar(&o.diskReserve, "disk-reserve", "", "refuse writes (507, RESP \"disk full\") while the data directory's filesystem has less free space than this, e.g. 64MiB; 0: never (default: 64MiB, or an eighth of a smaller filesystem)")
	f.StringVar(&o.maxFileSize, "max-file-size", "1GiB", "largest file accepted, e.g. 1GiB or 1073741824 (bytes)")
	f.DurationVar(&cfg.TickInterval, "tick", time.Second, "Chord stabilize period")
	f.DurationVar(&cfg.FullRepairInterval, "full-repair", 30*time.Second, "period of the full placement check")
	f.StringVar(&cfg.Region, "region", "", "this node's region: a ring of its own whose quorums (N, W, R) stay inside it (default: one region)")
	f.StringArrayVar(&o.regionPeers, "region-peer", nil, "NAME=CHORDADDR: a member of another region; writes this node coordinates are replicated there asynchronously (repeatable; needs --region)")
	f.DurationVar(&cfg.RegionDelay, "region-delay", 0, "hold writes this long before replicating them to other regions (lag made longer on purpose, for benchmarks)")
	f.BoolVar(&cfg.Insecure, "insecure", false, "serve plain text (no TLS, no client credentials) on an interface other than loopback")
	f.BoolVar(&cfg.AllowKill, "allow-kill", false, "let kill over msgpack-rpc stop this node (the course's fault-tolerance tests use it)")
	f.StringVar(&o.httpTokens, "http-tokens", "", "file of HTTP bearer tokens, one \"SCOPE TOKEN\" a line (scope read, write or admin); needs --tls-*")
	f.StringVar(&o.requirePass, "requirepass", "", "Redis-protocol clients must AUTH with this password (redis-cli -a), as Redis's requirepass")
	f.StringVar(&o.aclFile, "acl-file", "", "Redis-protocol users, one a line in Redis's ACL syntax: user NAME on >password ~pattern +@read +@write")
	f.DurationVar(&cfg.RESPIdleTimeout, "resp-idle-timeout", 5*time.Minute, "close a Redis-protocol connection that sends no command for this long (0: never)")
	f.DurationVar(&cfg.HTTPIdleTimeout, "http-idle-timeout", 2*time.Minute, "close an idle keep-alive HTTP connection after this long")
	f.DurationVar(&cfg.HTTPHeaderTimeout, "http-header-timeout", 10*time.Second, "close an HTTP connection whose request headers have not all arrived this long after it began sending them, or that sends nothing (a slow-loris client)")
	f.IntVar(&cfg.MaxConns, "max-conns", 10000, "connections each of the Chord, HTTP and Redis-protocol listeners serves at once; one more is refused with an error (0: no cap)")
	f.StringVar(&o.addrFile, "addr-file", "", "once serving, write this node's addresses as JSON ({\"chord\", \"http\", \"peer\", \"resp\", \"region\"}) to this file, e.g. for nodes started on port 0")
}

// parseRegionPeers reads --region-peer NAME=ADDR values.
func parseRegionPeers(vals []string) (map[string][]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := map[string][]string{}
	for _, v := range vals {
		name, addr, ok := strings.Cut(v, "=")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("--region-peer %q: want NAME=CHORDADDR, e.g. eu=10.0.0.5:5057", v)
		}
		out[name] = append(out[name], chordAddr(addr))
	}
	return out, nil
}

// runNode starts a storage node from o and runs it until a signal, a kill
// over msgpack-rpc or a graceful leave stops it.
func runNode(o *nodeOpts) error {
	cfg := o.cfg
	if o.id != "" {
		v, err := strconv.ParseUint(o.id, 10, 32)
		if err != nil {
			return fmt.Errorf("--token %q: want an integer in [0, 4294967295]", o.id)
		}
		cid := chord.ID(v)
		cfg.ID = &cid
	}
	mfs, err := parseBytes(o.maxFileSize)
	if err != nil {
		return fmt.Errorf("--max-file-size: %w", err)
	}
	cfg.MaxFileSize = mfs
	if o.capacity != "" {
		c, err := parseBytes(o.capacity)
		if err != nil {
			return fmt.Errorf("--capacity: %w", err)
		}
		cfg.Capacity = c
	}
	if o.diskReserve != "" {
		r, err := parseBytes(o.diskReserve)
		if err != nil {
			return fmt.Errorf("--disk-reserve: %w", err)
		}
		cfg.DiskReserve = r
		if r == 0 {
			cfg.DiskReserve = -1 // refuse nothing
		}
	}
	if o.idle {
		if cfg.Join != "" {
			return fmt.Errorf("--idle waits for create or join over msgpack-rpc and takes no --join (--standby --join follows a ring without joining it)")
		}
		cfg.Standby = true
	}
	if cfg.Join != "" {
		cfg.Join = chordAddr(cfg.Join)
	}
	rate, err := parseBytes(o.migrationRate)
	if err != nil {
		return fmt.Errorf("--migration-rate: %w", err)
	}
	cfg.KV.MigrationBytesPerTick = rate / 100 // the KV layer ticks every 10ms
	cfg.KV.TombstoneTTL = uint64(o.tombstoneTTL.Nanoseconds())
	if o.kvResend < 10*time.Millisecond {
		return fmt.Errorf("--kv-resend %s: want at least 10ms (the KV layer's tick)", o.kvResend)
	}
	cfg.KV.ResendTicks = int(o.kvResend / (10 * time.Millisecond))
	switch {
	case cfg.KV.VersionCache < 0:
		return fmt.Errorf("--version-cache: %d keys: want 0 or more", cfg.KV.VersionCache)
	case cfg.KV.VersionCache == 0:
		cfg.KV.VersionCache = -1 // the KV layer's "none"
	}
	if cfg.RegionPeers, err = parseRegionPeers(o.regionPeers); err != nil {
		return err
	}
	if len(cfg.RegionPeers) > 0 && cfg.Region == "" {
		return fmt.Errorf("--region-peer needs --region: the name of this node's own region")
	}
	if cfg.RegionDelay < 0 {
		return fmt.Errorf("--region-delay %s: want 0 or more", cfg.RegionDelay)
	}
	cfg.Log = slog.Default()
	if cfg.TLS, err = loadTLS(); err != nil {
		return err
	}
	switch {
	case o.requirePass != "" && o.aclFile != "":
		return fmt.Errorf("--requirepass and --acl-file: give one (an ACL file's user default is what --requirepass sets)")
	case o.requirePass != "":
		cfg.RESPACL = resp.RequirePass(o.requirePass)
	case o.aclFile != "":
		if cfg.RESPACL, err = resp.LoadACL(o.aclFile); err != nil {
			return err
		}
	}
	if (cfg.RESPACL != nil || o.httpTokens != "") && cfg.RESPAddr == "" && o.httpTokens == "" {
		slog.Warn("--requirepass or --acl-file without --resp-addr: the Redis protocol is off")
	}
	if o.httpTokens != "" {
		if cfg.Tokens, err = store.LoadTokens(o.httpTokens); err != nil {
			return err
		}
	}
	if cfg.KV.W > cfg.Replicas || cfg.KV.R > cfg.Replicas {
		cfg.KV.W, cfg.KV.R = min(cfg.KV.W, cfg.Replicas), min(cfg.KV.R, cfg.Replicas)
		slog.Warn("quorums lowered to --replicas", "replicas", cfg.Replicas, "w", cfg.KV.W, "r", cfg.KV.R)
	}
	slog.Debug("node configuration", "chord", cfg.ChordAddr, "http", cfg.HTTPAddr, "data", cfg.DataDir, "join", cfg.Join,
		"standby", cfg.Standby, "partitioner", cfg.Partitioner, "replicas", cfg.Replicas, "w", cfg.KV.W, "r", cfg.KV.R,
		"kv_sync", cfg.KVSync, "tick", cfg.TickInterval)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := store.Start(ctx, cfg)
	if err != nil {
		return err
	}
	go cfg.TLS.Watch(ctx, 0)
	// The tokens and ACL files reload on SIGHUP and on change, as the
	// certificates do; a file that does not load leaves the old in force.
	if o.httpTokens != "" {
		go tlsconf.WatchFiles(ctx, 0, slog.Default(), "--http-tokens "+o.httpTokens, func() error {
			t, err := store.LoadTokens(o.httpTokens)
			if err != nil {
				return err
			}
			return n.SetTokens(t)
		}, o.httpTokens)
	}
	if o.aclFile != "" && cfg.RESPAddr != "" {
		go tlsconf.WatchFiles(ctx, 0, slog.Default(), "--acl-file "+o.aclFile, func() error {
			a, err := resp.LoadACL(o.aclFile)
			if err != nil {
				return err
			}
			return n.SetRESPACL(a)
		}, o.aclFile)
	}
	if o.addrFile != "" {
		if err := writeAddrFile(o.addrFile, n.Addrs()); err != nil {
			n.Close()
			return err
		}
	}
	select {
	case <-ctx.Done():
		slog.Info("signal received; stopping")
	case <-n.Stopped():
	}
	return n.Close()
}

// writeAddrFile writes addrs as JSON to path, atomically (a reader never
// sees half of it).
func writeAddrFile(path string, addrs any) error {
	b, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("--addr-file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("--addr-file: %w", err)
	}
	return nil
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
			c, err := newStoreClient()
			if err != nil {
				return err
			}
			defer c.Close()
			start := time.Now()
			addr := nodeAddr(args[0])
			fmt.Fprintf(os.Stderr, "asking %s to leave...\n", addr)
			moved, err := c.Leave(cmd.Context(), addr)
			if err != nil {
				return err
			}
			fmt.Printf("%s left the ring: %d copies handed off in %s\n", addr, moved, time.Since(start).Round(time.Millisecond))
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

// Package store is the tide storage node, the process `tide node` runs. It
// composes a node's services, each a package of its own:
//
//   - store/files, the file store: files owned by
//     successor(md5_low32(name)), replicated to the next N-1 successors,
//     moved when the ring changes;
//   - store/kvserver, the key-value service's driver: a goroutine that
//     steps a kv.Node, persists its rounds and sends its messages over
//     package transport;
//   - store/engine, the pebble engine both store in (file metadata, KV
//     records, hints, node state);
//   - package resp, the Redis protocol front end, which reaches the KV
//     service through respbackend.go.
//
// What is left here is the node itself: its configuration and start
// (node.go), its Chord member and the ring it joins, standbys
// (standby.go), the ring tables the KV service routes by (kvring.go,
// regions.go), its HTTP routes (http.go: the services' routes, /kv/ and
// the Dynamo seed's KV routes in kvhttp.go, the seed's membership routes
// in membership.go), a leave that drains both services (leave.go), its
// metrics (metrics.go), and Client, the client of its HTTP API
// (client.go).
//
// It may import the pure cores (chord, kv), chord/rpc, transport, resp
// and its own services (store/...); nothing imports it but the CLI, the
// benchmarks, the dashboard, Antipode's regions and the tests.
package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tide/chord"
	"tide/chord/rpc"
	"tide/connlimit"
	"tide/kv"
	"tide/netport"
	"tide/resp"
	"tide/store/engine"
	"tide/store/files"
	"tide/store/kvserver"
	"tide/store/status"
	"tide/tlsconf"
)

// Config configures a storage node. Zero fields take the defaults noted.
type Config struct {
	// ChordAddr is where the Chord msgpack-rpc server listens. Default
	// 127.0.0.1:5057.
	ChordAddr string
	// HTTPAddr is where the file service listens. Default 127.0.0.1:5058.
	HTTPAddr string
	// Advertise is the host other nodes use to reach this one, needed when
	// the listen host is unspecified (0.0.0.0). Default: the listen host.
	Advertise string
	// DataDir holds the files and the pebble metadata.
	DataDir string
	// Join is the Chord address of any ring member. Empty creates a ring,
	// or rejoins the ring remembered in DataDir; so does an address of this
	// node itself, so every member can be given the same Join.
	Join string
	// JoinTimeout is how long a node keeps trying to reach Join when it
	// does not answer (a member that is still starting, a network that is
	// not up yet). Default 30s.
	JoinTimeout time.Duration
	// ID overrides the ring identifier, which is otherwise the low 32 bits
	// of MD5 of the advertised Chord address.
	ID *chord.ID
	// Replicas is N, the number of copies of each file. Default 3.
	Replicas int
	// Successors is r, the successor list length; raised to at least
	// Replicas. Default 3.
	Successors int
	// Capacity is the bytes this node may store; 0 uses the filesystem's
	// size and usage instead.
	Capacity int64
	// MaxFileSize bounds one file. Default 1 GiB.
	MaxFileSize int64
	// DiskReserve is the free space on the data directory's filesystem
	// below which the node refuses writes (files, KV, replica writes)
	// with 507 or a RESP "disk full" error, before the disk runs out
	// under its database. 0 takes the default, engine.DefaultDiskReserve
	// or an eighth of the filesystem if that is less; negative refuses
	// nothing.
	DiskReserve int64
	// TickInterval is the Chord period: stabilize every tick, fix one
	// finger every fourth. Default 1s.
	TickInterval time.Duration
	// RepairInterval is how often the node checks whether its neighbourhood
	// changed and files must move. Default 1s.
	RepairInterval time.Duration
	// FullRepairInterval forces a full placement check even when nothing
	// seems to have changed. Default 30s.
	FullRepairInterval time.Duration
	// Standby starts the node outside any ring: it answers KV requests as
	// a member does, for the ring of Join (or, without Join, of the first
	// POST /hash_ring, add_node, or create or join over msgpack-rpc that
	// names it), and owns no range until add_node makes it a member.
	Standby bool
	// Partitioner places keys and file names on the ring: "md5-low32"
	// (default) or "md5-mod10000" (the Dynamo seed's 10,000 positions, where
	// tokens are below 10000).
	Partitioner string
	// PeerAddr is where the KV layer listens for other nodes. Default: the
	// Chord host with a free port.
	PeerAddr string
	// RESPAddr, if set, serves the Redis protocol.
	RESPAddr string
	// KV configures the key-value layer; its N is Replicas. Zero fields take
	// kv's defaults (W=2, R=2, 1 MiB values).
	KV kv.Config
	// KVSync says when KV writes are made durable before they are
	// acknowledged: "always" (default: every acknowledgement waits for an
	// fsync; concurrent writes share one fsync) or "periodic" (writes reach
	// the operating system before the acknowledgement, so they survive a
	// process crash, and are fsynced every KVSyncPeriod, as Cassandra's
	// default commitlog_sync: periodic does).
	KVSync string
	// KVSyncPeriod is the fsync period of KVSync "periodic". Default 100ms.
	KVSyncPeriod time.Duration
	// Region names this node's region (see regions.go). Empty: one
	// region, and RegionPeers must be empty.
	Region string
	// RegionPeers gives, for every other region, the Chord addresses of
	// some of its members: writes this node coordinates are replicated
	// to each of those regions asynchronously.
	RegionPeers map[string][]string
	// RegionDelay holds writes this long before they are sent to other
	// regions (replication lag made longer on purpose, for benchmarks).
	RegionDelay time.Duration
	// TLS, if set, makes every connection between nodes mutual TLS:
	// Chord RPC, KV replication and the file service's node-to-node
	// requests. The Chord and HTTP ports still let plain-text clients in
	// (the seed's scripts, curl) when they listen on loopback or with
	// Insecure; ring-changing methods and /internal/ routes need a
	// certificate of the CA.
	TLS *tlsconf.Config
	// Insecure lets the node serve plain text (without TLS and client
	// credentials) on an interface other than loopback.
	Insecure bool
	// Tokens, if set, are the bearer tokens HTTP clients must present
	// (see Scope); /metrics and /healthz stay open, and nodes of the
	// cluster prove themselves with their certificates instead.
	Tokens Tokens
	// RESPACL, if set, makes Redis-protocol clients log in (AUTH, HELLO
	// ... AUTH) as one of its users.
	RESPACL *resp.ACL
	// RESPIdleTimeout closes a Redis-protocol connection that sends no
	// command for this long (0: never).
	RESPIdleTimeout time.Duration
	// HTTPIdleTimeout closes an idle keep-alive HTTP connection. Default
	// 2m.
	HTTPIdleTimeout time.Duration
	// HTTPHeaderTimeout closes an HTTP connection whose request headers
	// have not all arrived this long after it started reading them (a
	// slow-loris client, or one that connects and sends nothing).
	// Default 10s.
	HTTPHeaderTimeout time.Duration
	// MaxConns caps the connections each client-facing listener (Chord,
	// HTTP, Redis protocol) serves at once; one more is refused with an
	// error. 0: no cap.
	MaxConns int
	// AllowKill lets kill over msgpack-rpc stop the node.
	AllowKill bool
	// Log receives the node's structured log. Default slog.Default().
	Log *slog.Logger
}

func (c *Config) validate() error {
	switch c.KVSync {
	case "":
		c.KVSync = "always"
	case "always", "periodic":
	default:
		return fmt.Errorf("kv sync mode %q: want always or periodic", c.KVSync)
	}
	if c.KVSyncPeriod <= 0 {
		c.KVSyncPeriod = 100 * time.Millisecond
	}
	if c.ChordAddr == "" {
		c.ChordAddr = "127.0.0.1:5057"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:5058"
	}
	if c.DataDir == "" {
		return errors.New("store: a data directory is required")
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Replicas < 1 || c.Replicas > 16 {
		return fmt.Errorf("store: replicas %d out of range [1, 16]", c.Replicas)
	}
	if c.Successors == 0 {
		c.Successors = 3
	}
	c.Successors = max(c.Successors, c.Replicas)
	if c.Capacity < 0 {
		return fmt.Errorf("store: negative capacity %d", c.Capacity)
	}
	if c.MaxFileSize == 0 {
		c.MaxFileSize = 1 << 30
	}
	if c.TickInterval == 0 {
		c.TickInterval = time.Second
	}
	if c.JoinTimeout == 0 {
		c.JoinTimeout = 30 * time.Second
	}
	if c.RepairInterval == 0 {
		c.RepairInterval = time.Second
	}
	if c.FullRepairInterval == 0 {
		c.FullRepairInterval = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.HTTPIdleTimeout == 0 {
		c.HTTPIdleTimeout = 2 * time.Minute
	}
	if c.HTTPHeaderTimeout <= 0 {
		c.HTTPHeaderTimeout = 10 * time.Second
	}
	if c.Tokens != nil && c.TLS == nil {
		return errors.New("store: HTTP tokens need TLS (--tls-ca, --tls-cert, --tls-key): nodes prove themselves to each other with certificates, and a token sent in plain text can be read off the wire")
	}
	if c.Partitioner == "" {
		c.Partitioner = "md5-low32"
	}
	if _, ok := kv.Partitioners[c.Partitioner]; !ok {
		return fmt.Errorf("store: unknown partitioner %q (want md5-low32 or md5-mod10000)", c.Partitioner)
	}
	if c.Partitioner == "md5-mod10000" && c.ID != nil && *c.ID >= 10000 {
		return fmt.Errorf("store: token %d out of range [0, 10000) for md5-mod10000", *c.ID)
	}
	c.KV.N = c.Replicas
	if c.KV.W == 0 {
		c.KV.W = min(2, c.Replicas)
	}
	if c.KV.R == 0 {
		c.KV.R = min(2, c.Replicas)
	}
	if err := c.validateRegions(); err != nil {
		return err
	}
	if err := c.KV.Validate(); err != nil {
		return err
	}
	if c.KV.SyncTicks == 0 {
		c.KV.SyncTicks = 500 // one range digest every 5s (10ms ticks)
	}
	if c.KV.MaxValue == 0 {
		c.KV.MaxValue = 1 << 20
	}
	if c.KV.TimeoutTicks == 0 {
		// 8 s, under the RESP and HTTP handlers' 10 s: a write waits out
		// replicas whose fsyncs crawl under a heavy write load instead of
		// failing after kv's default 2 s.
		c.KV.TimeoutTicks = 800
	}
	if c.KV.TombstoneTTL == 0 {
		c.KV.TombstoneTTL = uint64(time.Hour) // kv's default, which the engine also applies
	}
	return nil
}

// Node is a running storage node: a Chord member, its RPC server, its file
// service and its repair loop.
type Node struct {
	// refused holds the tokens a claim of this node's was refused
	// (pickToken): a pick that lands on one again moves away from it.
	refused map[chord.ID]bool
	cfg     Config
	log     *slog.Logger
	eng     *engine.Engine
	ring    *chord.Node
	rpc     *rpc.Client
	rpcSrv  *rpc.Server
	httpSrv *http.Server
	hc      *http.Client
	m       *metrics
	answer  status.Responder
	// tokens are the HTTP bearer tokens in force (cfg.Tokens until
	// SetTokens), and respSrv the Redis-protocol server, nil without one.
	tokens  atomic.Pointer[Tokens]
	respSrv atomic.Pointer[resp.Server]

	// joinedVia is the member this node joined the ring through at start,
	// if any: its first KV table must hold it (see firstTable).
	joinedVia atomic.Pointer[chord.Ref]

	pos      func([]byte) uint32
	peerAddr string
	respAddr string
	files    *files.Service
	kv       *kvserver.Server
	// kvRing is the latest ring table given to the KV service, with the
	// members' addresses (see ringLoop).
	kvRing   atomic.Pointer[kvRing]
	ringKick chan struct{}
	lock     lease
	// follow lists the members (Chord addresses) a standby walks the ring
	// from; standbys, for a member, the standbys that follow its ring (see
	// standby.go). memberMu orders the changes of this node between member
	// and standby.
	follow    atomic.Pointer[[]string]
	standbys  standbys
	memberMu  sync.Mutex
	httpAddrs sync.Map // chord address -> http address
	leaving   atomic.Bool
	// bg lives as long as the node; a leave runs under it, so a client
	// that disconnects (a controller that crashed) does not cut a hand-off
	// short.
	bg      context.Context
	leaveMu sync.Mutex
	leaveOp *leaveOp

	stopOnce  sync.Once
	closeOnce sync.Once
	stopped   chan struct{} // closed when the node must stop (kill, leave)
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// Start opens the data directory, starts the servers, joins or creates the
// ring and starts the periodic work. The node runs until Close.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pos := kv.Partitioners[cfg.Partitioner]
	eng, err := engine.Open(cfg.DataDir, pos)
	if err != nil {
		return nil, err
	}
	if cfg.DiskReserve != 0 {
		eng.SetDiskReserve(max(cfg.DiskReserve, 0))
	}
	if raw, err := eng.State(stateLeft); err != nil || raw != nil {
		eng.Close()
		if err != nil {
			return nil, fmt.Errorf("read node state in %s: %w", cfg.DataDir, err)
		}
		return nil, fmt.Errorf("%w on %s; start it with an empty --data-dir to join again (data dir: %s)", ErrLeft, raw, cfg.DataDir)
	}
	eng.SetTombstoneTTL(cfg.KV.TombstoneTTL)
	n := &Node{cfg: cfg, log: cfg.Log, eng: eng, pos: pos, ringKick: make(chan struct{}, 1), stopped: make(chan struct{})}
	if cfg.Tokens != nil {
		n.tokens.Store(&cfg.Tokens)
	}
	fail := func(err error) (*Node, error) {
		n.shutdown()
		return nil, err
	}
	n.m = newMetrics(n)
	n.answer = status.Responder{Requests: n.m.requests, Log: n.log}
	n.rpc = &rpc.Client{OnCall: func(m string) { n.m.rpcSent.WithLabelValues(m).Inc() }, TLS: cfg.TLS}
	n.hc = &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost:   64,
		DialContext:           nodeDialer(cfg.TLS, 2*time.Second),
		ResponseHeaderTimeout: 30 * time.Second,
	}}

	chordLn, err := netport.Listen(cfg.ChordAddr)
	if err != nil {
		return fail(fmt.Errorf("listen on chord address %s: %w", cfg.ChordAddr, err))
	}
	httpLn, err := netport.Listen(cfg.HTTPAddr)
	if err != nil {
		chordLn.Close()
		return fail(fmt.Errorf("listen on http address %s: %w", cfg.HTTPAddr, err))
	}
	chordLn = connlimit.Wrap(chordLn, cfg.MaxConns, nil)
	httpLn = connlimit.Wrap(httpLn, cfg.MaxConns, connlimit.HTTPRefusal)
	chordLn, httpLn = n.secure(chordLn, httpLn)
	if err := n.checkPlain(map[string]string{"chord": chordLn.Addr().String(), "http": httpLn.Addr().String(), "resp": cfg.RESPAddr}); err != nil {
		chordLn.Close()
		httpLn.Close()
		return fail(err)
	}
	var follow []string // the members a standby follows
	if raw, err := eng.State(stateStandby); err != nil {
		chordLn.Close()
		httpLn.Close()
		return fail(fmt.Errorf("read node state in %s: %w", cfg.DataDir, err))
	} else if raw != nil {
		// remove_node or POST /hash_ring made this node a standby: it stays
		// one across restarts, until add_node names it.
		var st standbyState
		if err := json.Unmarshal(raw, &st); err != nil {
			chordLn.Close()
			httpLn.Close()
			return fail(fmt.Errorf("read standby state in %s: %w", cfg.DataDir, err))
		}
		cfg.Standby, follow = true, st.Follow
	}
	if cfg.Standby {
		if cfg.Join != "" {
			follow = append([]string{cfg.Join}, follow...)
		}
		cfg.Join = "" // a standby joins no ring: it only follows one
	}
	if cfg.Join != "" && joinsItself(ctx, cfg.Join, cfg.Advertise, chordLn.Addr()) {
		// One configuration for every member (a StatefulSet's pods all
		// joining pod 0): the member it names creates or rejoins the ring.
		n.log.Info("--join names this node itself; starting as without --join", "join", cfg.Join)
		cfg.Join = ""
	}
	if cfg.ID == nil {
		// A token chosen once is kept across restarts.
		if raw, _ := eng.State("token"); len(raw) == 4 {
			t := chord.ID(binary.BigEndian.Uint32(raw))
			cfg.ID = &t
		} else if cfg.Join != "" {
			var t chord.ID
			err := n.retryJoin(ctx, cfg.Join, cfg.JoinTimeout, func(ctx context.Context) (err error) {
				t, err = n.pickToken(ctx, cfg, chordLn.Addr().String(), httpLn.Addr().String())
				return err
			})
			if err != nil {
				chordLn.Close()
				httpLn.Close()
				return fail(err)
			}
			cfg.ID = &t
		}
	}
	self, httpAdv, err := advertised(cfg, pos, chordLn.Addr().String(), httpLn.Addr().String())
	if err != nil {
		chordLn.Close()
		httpLn.Close()
		return fail(err)
	}
	if err := eng.PutState("token", binary.BigEndian.AppendUint32(nil, uint32(self.ID))); err != nil {
		chordLn.Close()
		httpLn.Close()
		return fail(err)
	}
	n.cfg = cfg
	// A claim of a token by a joining node holds for 15 s: ample time for
	// it to join after it claimed (pickToken), and short enough that a
	// node that picked the same token is not kept waiting past its
	// --join-timeout (30 s) if the claimer died before joining.
	claimTicks := int(max(15*time.Second/cfg.TickInterval, 1))
	// Out of any ring until joinRing joins one or creates its own (a
	// standby stays out): HTTP is served before that, and a node that
	// took itself for a ring of one answered reads of files it had not
	// yet been given with 404.
	// A lookup passes over a hop that is silent for 300 ms and to a ping
	// for 300 ms more (frozen or cut off), as file requests pass over a
	// silent owner, instead of waiting out the call's 2 s.
	const silentHop = 300 * time.Millisecond
	n.ring, err = chord.NewNode(chord.Config{Self: self, Successors: cfg.Successors, Idle: true, ClaimTicks: claimTicks, SilentHop: silentHop}, n.rpc)
	if err != nil {
		chordLn.Close()
		httpLn.Close()
		return fail(err)
	}
	n.httpAddrs.Store(self.Addr(), httpAdv)
	peerLn := cfg.PeerAddr
	var peerListener net.Listener
	if peerLn == "" {
		// Any free port, the one of the last run if it is free: a node
		// that restarts keeps its KV address, so members whose ring
		// walks did not notice the restart still reach it.
		peerListener, n.peerAddr, err = listenPeerAgain(eng, self.IP)
	} else {
		peerListener, n.peerAddr, err = listenPeer(peerLn, self.IP)
	}
	if err != nil {
		chordLn.Close()
		httpLn.Close()
		return fail(err)
	}
	var respLn net.Listener
	if cfg.RESPAddr != "" {
		if respLn, err = netport.Listen(cfg.RESPAddr); err != nil {
			chordLn.Close()
			httpLn.Close()
			peerListener.Close()
			return fail(fmt.Errorf("listen on resp address %s: %w", cfg.RESPAddr, err))
		}
		_, rport, _ := net.SplitHostPort(respLn.Addr().String())
		n.respAddr = net.JoinHostPort(self.IP, rport)
	}
	n.rpcSrv = &rpc.Server{
		Node: n.ring, HTTPAddr: httpAdv, Log: n.log, Addrs: n.addrs(),
		OnKill: func() { n.log.Warn("killed by rpc"); n.stop() },
		// A create or join over msgpack-rpc (the course's grader starts
		// nodes idle and tells them which) makes a standby a member.
		OnMember:  func(method string) { n.log.Info("chord " + method + " over rpc"); n.becameMember() },
		OnCall:    func(m string) { n.m.rpcReceived.WithLabelValues(m).Inc() },
		PeersOnly: cfg.TLS != nil,
		AllowKill: cfg.AllowKill,
	}
	n.files = files.New(files.Config{
		Replicas: cfg.Replicas, Capacity: cfg.Capacity, DataDir: cfg.DataDir, MaxFileSize: cfg.MaxFileSize,
		RepairInterval: cfg.RepairInterval, FullRepairInterval: cfg.FullRepairInterval,
		Engine: eng, Ring: n.ring, RPC: n.rpc, HTTP: n.hc, Log: n.log,
		HTTPAddrOf: n.httpAddrOf, Following: n.following, Leaving: n.leaving.Load,
		Metrics: files.Metrics{Requests: n.m.requests, Pushed: n.m.pushed, Dropped: n.m.dropped, RepairRuns: n.m.repairRuns, ReplFailures: n.m.replFailures, StandIns: n.m.standIns, Resumed: n.m.readsResumed},
	})
	n.httpSrv = &http.Server{Handler: n.routes(), ReadHeaderTimeout: cfg.HTTPHeaderTimeout, IdleTimeout: cfg.HTTPIdleTimeout,
		MaxHeaderBytes: 64 << 10}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.rpcSrv.Serve(chordLn) }()

	bg, cancel := context.WithCancel(context.Background())
	n.cancel, n.bg = cancel, bg
	if err := n.startKV(bg, peerListener); err != nil {
		httpLn.Close()
		if respLn != nil {
			respLn.Close()
		}
		return fail(err)
	}
	// HTTP is served only now: its KV and membership handlers use the KV
	// layer (a request that came sooner, such as a clear_cache right after
	// the port opened, found none and crashed the handler). Connections
	// made meanwhile wait in the listener's backlog.
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.httpSrv.Serve(httpLn) }()
	if respLn != nil {
		srv := resp.NewServer(resp.Config{Addr: n.respAddr, PeerAddr: n.peerAddr, N: cfg.KV.N, W: cfg.KV.W, R: cfg.KV.R,
			MaxValue: cfg.KV.MaxValue, Sync: cfg.KVSync, ACL: cfg.RESPACL, IdleTimeout: cfg.RESPIdleTimeout, MaxConns: cfg.MaxConns,
			OnAuthFailure: func() { n.m.authFailures.WithLabelValues("resp").Inc() }}, respBackend{n})
		n.respSrv.Store(srv)
		n.wg.Add(1)
		go func() { defer n.wg.Done(); srv.Serve(bg, respLn) }()
	}
	if cfg.Standby {
		n.setFollowing(follow)
		if len(follow) > 0 {
			n.log.Info("standby: following the ring", "via", follow[0])
		} else {
			n.log.Info("idle: waiting for POST /hash_ring, add_node, or a create or join over msgpack-rpc")
		}
	} else if err := n.joinRing(ctx); err != nil {
		return fail(err)
	}
	n.RefreshRing()
	n.wg.Add(2)
	go func() { defer n.wg.Done(); n.tickLoop(bg) }()
	go func() { defer n.wg.Done(); n.files.Run(bg) }()
	n.log.Info("node started", "id", uint32(self.ID), "chord", self.Addr(), "http", httpAdv,
		"data", cfg.DataDir, "replicas", cfg.Replicas, "files", eng.Files())
	return n, nil
}

func advertised(cfg Config, pos func([]byte) uint32, chordAddr, httpAddr string) (chord.Ref, string, error) {
	host, cport, _ := net.SplitHostPort(chordAddr)
	_, hport, _ := net.SplitHostPort(httpAddr)
	if cfg.Advertise != "" {
		host = cfg.Advertise
	} else if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return chord.Ref{}, "", fmt.Errorf("chord address %s has no concrete host: set --advertise", cfg.ChordAddr)
	}
	adv := net.JoinHostPort(host, cport)
	id := chord.ID(pos([]byte(adv)))
	if cfg.ID != nil {
		id = *cfg.ID
	}
	self, err := chord.RefFor(adv, id)
	if err != nil {
		return chord.Ref{}, "", err
	}
	return self, net.JoinHostPort(host, hport), nil
}

// listenPeer listens on the KV peer address and returns the address to
// advertise: the port the listener got (addr may ask for any, port 0) on
// the listener's host, or advHost when it listens on every interface. The
// KV layer serves on that very listener, so the port stays this node's.
func listenPeer(addr, advHost string) (net.Listener, string, error) {
	ln, err := netport.Listen(addr)
	if err != nil {
		return nil, "", fmt.Errorf("listen on peer address %s: %w", addr, err)
	}
	a := ln.Addr().(*net.TCPAddr)
	host := advHost
	if ip := a.IP; ip != nil && !ip.IsUnspecified() {
		host = ip.String()
	}
	return ln, net.JoinHostPort(host, fmt.Sprint(a.Port)), nil
}

// statePeerPort names the engine state that remembers the KV peer port a
// node took when none was given (--peer-addr).
const statePeerPort = "peer-port"

// listenPeerAgain listens for KV peers on host at the port this data
// directory's node had in its last run, or at any free port if that one
// is taken (or there was none), and remembers the port.
func listenPeerAgain(eng *engine.Engine, host string) (net.Listener, string, error) {
	if raw, _ := eng.State(statePeerPort); len(raw) > 0 {
		if ln, addr, err := listenPeer(net.JoinHostPort(host, string(raw)), host); err == nil {
			return ln, addr, nil
		}
	}
	ln, addr, err := listenPeer(net.JoinHostPort(host, "0"), host)
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	if err := eng.PutState(statePeerPort, []byte(port)); err != nil {
		ln.Close()
		return nil, "", fmt.Errorf("remember the peer port: %w", err)
	}
	return ln, addr, nil
}

// ErrLeft is returned by Start for a data directory whose node left its
// ring gracefully: its data was handed off, and rejoining with the old
// token and ring state would take ranges back without their data.
var ErrLeft = errors.New("this node left the ring")

// stateLeft names the engine state that records a completed graceful
// leave (its value is the time, RFC 3339).
const stateLeft = "left"

// joinsItself reports whether join, a chord address, names this node: the
// chord listener's port on the advertised host, on the listen host, or on
// a name that resolves to the listen address (any address of this machine
// when the listener is on the unspecified address).
func joinsItself(ctx context.Context, join, advertise string, chordLn net.Addr) bool {
	jhost, jport, err := net.SplitHostPort(join)
	if err != nil {
		return false
	}
	lhost, lport, err := net.SplitHostPort(chordLn.String())
	if err != nil || jport != lport {
		return false
	}
	if advertise != "" && strings.EqualFold(strings.TrimSuffix(jhost, "."), strings.TrimSuffix(advertise, ".")) {
		return true
	}
	lip := net.ParseIP(lhost)
	var ips []net.IP
	if ip := net.ParseIP(jhost); ip != nil {
		ips = []net.IP{ip}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		addrs, err := net.DefaultResolver.LookupIPAddr(rctx, jhost)
		cancel()
		if err != nil {
			return false
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	for _, ip := range ips {
		switch {
		case lip != nil && !lip.IsUnspecified():
			if ip.Equal(lip) {
				return true
			}
		case ip.IsLoopback() || ip.IsUnspecified() || localIP(ip):
			return true
		}
	}
	return false
}

// localIP reports whether ip is assigned to one of this machine's
// interfaces.
func localIP(ip net.IP) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// retryJoin runs f, the steps of joining through join, until it succeeds,
// fails for a reason retrying cannot fix (a token another member holds),
// or timeout has passed: the member named may still be starting, or the
// network not up yet, as when containers or pods start together.
func (n *Node) retryJoin(ctx context.Context, join string, timeout time.Duration, f func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil || errors.Is(err, chord.ErrIDTaken) || ctx.Err() != nil {
			return err
		}
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%w (gave up after %d attempts in %s)", err, attempt, timeout)
		}
		n.log.Warn("join failed; retrying", "join", join, "attempt", attempt, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// ringState is what a node remembers of its ring across restarts.
type ringState struct {
	Known []string `json:"known"` // chord addresses of successors and fingers
}

// joinRing joins through cfg.Join; without it, rejoins through any node
// remembered from a previous run; failing that, creates a ring.
func (n *Node) joinRing(ctx context.Context) error {
	if n.cfg.Join != "" {
		var via chord.Ref
		err := n.retryJoin(ctx, n.cfg.Join, n.cfg.JoinTimeout, func(ctx context.Context) (err error) {
			if via, err = n.rpc.CallRef(ctx, n.cfg.Join, "get_info"); err != nil {
				return fmt.Errorf("join %s: %w", n.cfg.Join, err)
			}
			if via == n.ring.Self() {
				return nil
			}
			return n.ring.Join(ctx, via)
		})
		if err != nil {
			return err
		}
		if via != n.ring.Self() {
			n.joinedVia.Store(&via)
			n.log.Info("joined ring", "via", via.String(), "successor", n.ring.Successor(0).String())
			return nil
		}
		// A name of this node that joinsItself could not tell (an alias
		// its listener answers on): as without --join.
		n.log.Info("--join answered as this node itself; starting as without --join", "join", n.cfg.Join)
	}
	if raw, _ := n.eng.State("ring"); raw != nil {
		var st ringState
		if json.Unmarshal(raw, &st) == nil {
			for _, addr := range st.Known {
				if addr == n.ring.Self().Addr() {
					continue
				}
				via, err := n.rpc.CallRef(ctx, addr, "get_info")
				if err != nil {
					continue
				}
				if err := n.ring.Join(ctx, via); err == nil {
					n.joinedVia.Store(&via)
					n.log.Info("rejoined remembered ring", "via", via.String())
					return nil
				}
			}
			n.log.Warn("no remembered ring member answered; creating a new ring", "tried", len(st.Known))
		}
	}
	n.ring.Create()
	n.log.Info("created ring")
	return nil
}

func (n *Node) saveRingState() {
	snap := n.ring.Snapshot()
	var st ringState
	for _, r := range append(snap.Successors, snap.Fingers...) {
		if r != snap.Self && !containsString(st.Known, r.Addr()) {
			st.Known = append(st.Known, r.Addr())
		}
	}
	if !snap.Pred.IsZero() && !containsString(st.Known, snap.Pred.Addr()) {
		st.Known = append(st.Known, snap.Pred.Addr())
	}
	raw, _ := json.Marshal(st)
	if err := n.eng.PutState("ring", raw); err != nil {
		n.log.Warn("save ring state", "err", err)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (n *Node) tickLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	var saved uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tctx, cancel := context.WithTimeout(ctx, 4*n.cfg.TickInterval+2*time.Second)
		n.ring.Tick(tctx)
		cancel()
		if e := n.ring.Epoch(); e != saved {
			saved = e
			n.saveRingState()
			n.files.Kick()
		}
	}
}

// Ring returns the node's Chord membership.
func (n *Node) Ring() *chord.Node { return n.ring }

// Engine returns the node's storage engine.
func (n *Node) Engine() *engine.Engine { return n.eng }

// HTTPAddr returns the advertised file service address.
func (n *Node) HTTPAddr() string { v, _ := n.httpAddrs.Load(n.ring.Self().Addr()); return v.(string) }

// Stopped is closed when the node has been asked to stop by kill or leave.
func (n *Node) Stopped() <-chan struct{} { return n.stopped }

func (n *Node) stop() { n.stopOnce.Do(func() { close(n.stopped) }) }

// Close stops the node without handing anything off, as a crash would
// (but cleanly: acknowledged data is already durable).
func (n *Node) Close() error {
	n.stop()
	n.shutdown()
	return nil
}

func (n *Node) shutdown() { n.closeOnce.Do(n.doShutdown) }

func (n *Node) doShutdown() {
	if n.cancel != nil {
		n.cancel()
	}
	if n.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		n.httpSrv.Shutdown(ctx)
		cancel()
		n.httpSrv.Close()
	}
	if n.rpcSrv != nil {
		n.rpcSrv.Close()
	}
	n.wg.Wait()
	if n.rpc != nil {
		n.rpc.Close()
	}
	if n.eng != nil {
		n.eng.Close()
	}
}

// httpAddrOf finds the file service address of a ring member.
func (n *Node) httpAddrOf(ctx context.Context, r chord.Ref) (string, error) {
	if v, ok := n.httpAddrs.Load(r.Addr()); ok {
		return v.(string), nil
	}
	a, err := n.rpc.HTTPAddr(ctx, r.Addr())
	if err != nil {
		return "", err
	}
	n.httpAddrs.Store(r.Addr(), a)
	return a, nil
}

// Package files is a storage node's file store: files on disk, owned by
// successor(md5_low32(name)) and replicated to the owner's next N-1
// successors, moved whenever the ring changes. It serves the seed's
// upload form, the REST forms under /files/ and the routes replicas use
// (http.go); Put, Get and Delete find a file's owner through Chord and
// forward to it (ops.go); the repair pass moves files when the ring
// changes (repair.go). Storage is package store/engine.
//
// It may import chord, chord/rpc, store/engine and store/status; the
// node (package store) composes it with the other services and gives it
// what it needs of the node through Config.
package files

import (
	"context"
	"log/slog"
	"net/http"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tide/chord"
	"tide/chord/rpc"
	"tide/store/engine"
	"tide/store/status"
)

// Config configures a node's file store; every field is required.
type Config struct {
	// Replicas is N, the number of copies of each file.
	Replicas int
	// Capacity is the bytes this node may store; 0 uses the filesystem's
	// size and usage (of DataDir) instead.
	Capacity int64
	DataDir  string
	// MaxFileSize bounds one file.
	MaxFileSize int64
	// RepairInterval is how often the node checks whether its
	// neighbourhood changed and files must move; FullRepairInterval forces
	// a full placement check even when nothing seems to have changed.
	RepairInterval, FullRepairInterval time.Duration

	Engine *engine.Engine
	Ring   *chord.Node
	RPC    *rpc.Client
	HTTP   *http.Client
	Log    *slog.Logger
	// HTTPAddrOf finds the file service address of a ring member.
	HTTPAddrOf func(ctx context.Context, r chord.Ref) (string, error)
	// Following lists the members a standby walks the ring from (none for
	// a member).
	Following func() []string
	// Leaving reports whether the node is leaving the ring (it then hands
	// its files off itself, through Repair).
	Leaving func() bool
	// Metrics are the file store's series in the node's registry.
	Metrics Metrics
}

// Metrics are the file store's Prometheus series.
type Metrics struct {
	// Requests counts requests by operation and status code.
	Requests *prometheus.CounterVec
	// Pushed and Dropped count copies sent to other nodes and local copies
	// removed after a hand-off; RepairRuns counts repair passes.
	Pushed, Dropped, RepairRuns prometheus.Counter
	// ReplFailures counts replica writes that failed during uploads.
	ReplFailures prometheus.Counter
	// StandIns counts uploads stored standing in for an unreachable
	// owner (standin.go).
	StandIns prometheus.Counter
	// Resumed counts relayed reads finished from another copy after
	// their sender stopped part way (relay).
	Resumed prometheus.Counter
}

// metrics are the series as the service's methods name them.
type metrics struct {
	requests                                  *prometheus.CounterVec
	pushed, dropped, repairRuns, replFailures prometheus.Counter
	standIns, resumed                         prometheus.Counter
}

// Service is a node's file store.
type Service struct {
	cfg    Config
	log    *slog.Logger
	eng    *engine.Engine
	ring   *chord.Node
	rpc    *rpc.Client
	hc     *http.Client
	m      metrics
	clock  hlc
	answer status.Responder
	kick   chan struct{} // asks the repair loop to run now
	// suspect holds the owners recently unreachable (standin.go).
	suspect suspects
	// lone caches whether a node alone in its ring may act (lone.go).
	lone loneCheck
}

// New returns the file store of a node; Run runs its repair loop.
func New(cfg Config) *Service {
	m := cfg.Metrics
	return &Service{cfg: cfg, log: cfg.Log, eng: cfg.Engine, ring: cfg.Ring, rpc: cfg.RPC, hc: cfg.HTTP,
		m:      metrics{requests: m.Requests, pushed: m.Pushed, dropped: m.Dropped, repairRuns: m.RepairRuns, replFailures: m.ReplFailures, standIns: m.StandIns, resumed: m.Resumed},
		answer: status.Responder{Requests: m.Requests, Log: cfg.Log}, kick: make(chan struct{}, 1)}
}

// Run keeps every local file where it belongs until ctx ends: a repair
// pass when the node's neighbourhood changes, when kicked, and every
// FullRepairInterval regardless.
func (n *Service) Run(ctx context.Context) { n.repairLoop(ctx) }

// Kick asks the repair loop to run now.
func (n *Service) Kick() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Disk returns used and capacity bytes: stored bytes against --capacity,
// or the filesystem's usage against its size.
func (n *Service) Disk() (used, capacity int64) {
	if n.cfg.Capacity > 0 {
		return n.eng.Used(), n.cfg.Capacity
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(n.cfg.DataDir, &st); err != nil {
		return n.eng.Used(), 0
	}
	total := int64(st.Blocks) * int64(st.Bsize)
	free := int64(st.Bfree) * int64(st.Bsize)
	return total - free, total
}

// httpAddrOf finds the file service address of a ring member.
func (n *Service) httpAddrOf(ctx context.Context, r chord.Ref) (string, error) {
	return n.cfg.HTTPAddrOf(ctx, r)
}

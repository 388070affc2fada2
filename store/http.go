package store

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tide/store/files"
)

// routes is the node's HTTP service: the file store's routes (package
// files), the key-value service's (kvhttp.go), the membership routes
// (membership.go), and the node's own: its info, leave, metrics, health
// and profiles.
func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	n.files.Routes(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /internal/info", n.handleInfo)
	mux.HandleFunc("POST /internal/leave", n.handleLeave)
	n.kvRoutes(mux)
	return n.guard(n.timeFiles(mux))
}

// timeFiles observes the duration of the file service's client requests
// (KV requests are timed where they are coordinated; internal, metrics
// and health requests are not client requests).
func (n *Node) timeFiles(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if r.Header.Get(files.HdrForwarded) != "" || strings.HasPrefix(p, "/internal/") || strings.HasPrefix(p, "/kv/") ||
			strings.HasPrefix(p, "/debug/") || p == "/metrics" || p == "/healthz" || p == "/route" || p == "/route_test" ||
			p == "/hash_ring" || strings.HasPrefix(p, "/add_node/") || strings.HasPrefix(p, "/remove_node/") || p == "/clear_cache" {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		h.ServeHTTP(w, r)
		n.m.fileLatency.Observe(time.Since(start).Seconds())
	})
}

func (n *Node) fail(w http.ResponseWriter, op string, err error) { n.answer.Fail(w, op, err) }
func (n *Node) ok(op string, code int)                           { n.answer.OK(op, code) }

// Info is a node's report of itself, served at /internal/info and shown by
// `tide ring`.
type Info struct {
	ID          uint32   `json:"id"`
	ChordAddr   string   `json:"chord_addr"`
	HTTPAddr    string   `json:"http_addr"`
	Predecessor string   `json:"predecessor"`
	Successors  []string `json:"successors"`
	Files       int64    `json:"files"`
	Bytes       int64    `json:"bytes"`
	DiskUsed    int64    `json:"disk_used_bytes"`
	DiskCap     int64    `json:"disk_capacity_bytes"`
	DiskPercent float64  `json:"disk_used_percent"`
	Replicas    int      `json:"replicas"`
	Leaving     bool     `json:"leaving"`
	// State is member, leaving, standby (out of the ring, following it)
	// or idle (out of any ring, knowing none).
	State   string `json:"state"`
	KVKeys  int    `json:"kv_keys"`
	KVBytes int64  `json:"kv_bytes"`
	KVHints int    `json:"kv_hints"`
	// RESPAddr is where the node serves the Redis protocol (empty: off);
	// PeerAddr where it takes KV replication traffic.
	RESPAddr string `json:"resp_addr,omitempty"`
	PeerAddr string `json:"peer_addr,omitempty"`
}

// Info reports this node's state.
func (n *Node) Info() Info {
	snap := n.ring.Snapshot()
	used, capacity := n.files.Disk()
	in := Info{
		ID: uint32(snap.Self.ID), ChordAddr: snap.Self.Addr(), HTTPAddr: n.HTTPAddr(),
		Files: n.eng.Files(), Bytes: n.eng.Used(), DiskUsed: used, DiskCap: capacity,
		Replicas: n.cfg.Replicas, Leaving: n.leaving.Load(), State: n.state(),
	}
	in.KVKeys, in.KVBytes = n.eng.KVCount()
	in.KVHints = n.eng.HintCount()
	in.RESPAddr, in.PeerAddr = n.respAddr, n.peerAddr
	if capacity > 0 {
		in.DiskPercent = 100 * float64(used) / float64(capacity)
	}
	if !snap.Pred.IsZero() {
		in.Predecessor = snap.Pred.Addr()
	}
	for _, s := range snap.Successors {
		in.Successors = append(in.Successors, s.Addr())
	}
	return in
}

func (n *Node) handleInfo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(n.Info())
}

// handleLeave hands everything off and leaves the ring, then exits; with
// ?stay=1 (remove_node) the node stays up as a standby instead.
func (n *Node) handleLeave(w http.ResponseWriter, r *http.Request) {
	stay := r.URL.Query().Get("stay") != ""
	moved, err := n.Leave(r.Context(), stay)
	if err != nil {
		n.fail(w, "leave", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"moved": moved, "node": n.ring.Self().Addr(), "standby": stay})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if !stay {
		go n.stop()
	}
}

// Package web is tide's dashboard: a page of plain HTML, CSS and
// JavaScript (embedded, no build step, nothing fetched from elsewhere) and
// the small JSON API it polls. The dashboard process aggregates that API
// itself from what every process already serves: a store node's
// /hash_ring, /internal/info and /metrics, a log role's /deployment and
// /status, and the autoscalers' events.
//
// The API (all GET, JSON):
//
//	/api/state            everything the page shows, as one State
//	/api/events?since=N   autoscaler events after sequence N, oldest first
//	/healthz              "ok"
//
// See State for the fields; README.md documents them.
package web

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"tide/autoscale"
	"tide/autoscale/provision"
	"tide/paxos/node"
)

//go:embed static
var static embed.FS

// EventSource is an autoscaler's event log: *autoscale.Events, or
// HTTPEvents for a controller in another process.
type EventSource interface {
	Since(seq uint64) []autoscale.Event
}

// Sources say where the dashboard reads the system. Every field is
// optional.
type Sources struct {
	// StoreSeeds returns HTTP addresses of store nodes; the ring is read
	// from the first that answers, so one live member is enough.
	StoreSeeds func() []string
	// Instances returns what the store's provisioner runs, so that nodes
	// still joining or being drained show as such.
	Instances func(ctx context.Context) ([]provision.Instance, error)
	// Log returns the tide log's deployment (any configuration of it: the
	// newest is asked of its roles); ok false if there is no log.
	Log func() (d node.Deployment, ok bool)
	// Events are the autoscalers' event logs, merged.
	Events []EventSource
}

// Dashboard samples the sources every Period and serves the page and
// its API.
type Dashboard struct {
	Src    Sources
	Period time.Duration // default 1s
	// Keep is how many samples the charts hold. Default 600.
	Keep int
	Log  *slog.Logger
	HTTP *http.Client

	mu      sync.Mutex
	state   State
	prevN   map[string]nodeCounters
	prevL   map[string]node.Status
	prevAt  time.Time
	gone    map[string]*Node // nodes seen before and absent now, kept a while
	events  []Event
	lastSeq []uint64
}

// State is what /api/state returns.
type State struct {
	Time  time.Time `json:"time"`
	Store Store     `json:"store"`
	// Log is null when there is no tide log.
	Log    *Log    `json:"log"`
	Events []Event `json:"events"` // the last 100, oldest first
	Series Series  `json:"series"`
}

// Store is the storage ring.
type Store struct {
	// Error says why the ring could not be read (no seed answered).
	Error string `json:"error,omitempty"`
	// Members counts the nodes in the ring.
	Members int `json:"members"`
	// Nodes are the ring's members in token order, then nodes outside it
	// (joining, standby, left).
	Nodes []*Node `json:"nodes"`
	// Files and Keys are distinct files and keys: the copies the nodes
	// hold divided by the replicas of each (N). A node's own Files and
	// Keys count its copies.
	Files     int64   `json:"files"`
	Keys      int64   `json:"keys"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P99Millis float64 `json:"p99_ms"`
}

// Node is one storage node.
type Node struct {
	HTTP  string `json:"http"`
	Chord string `json:"chord,omitempty"`
	RESP  string `json:"resp,omitempty"`
	// ID is the provisioner's instance name, when known.
	ID string `json:"id,omitempty"`
	// Token is the node's ring position; RangeStart the previous
	// member's, so the node owns (RangeStart, Token]. RangeFraction is
	// that range's share of the ring.
	Token         uint32  `json:"token"`
	RangeStart    uint32  `json:"range_start"`
	RangeFraction float64 `json:"range_fraction"`
	// State: member, joining, draining, leaving, standby, idle, down or
	// left.
	State       string  `json:"state"`
	Files       int64   `json:"files"`
	Bytes       int64   `json:"bytes"`
	Keys        int     `json:"keys"`
	DiskUsed    int64   `json:"disk_used_bytes"`
	DiskCap     int64   `json:"disk_capacity_bytes"`
	DiskPercent float64 `json:"disk_used_percent"`
	// OpsPerSec is client requests per second (files and KV requests
	// this node coordinated); P50/P99 their latency over the last period
	// (0 without requests).
	OpsPerSec float64 `json:"ops_per_sec"`
	P50Millis float64 `json:"p50_ms"`
	P99Millis float64 `json:"p99_ms"`
	seen      time.Time
	replicas  int
}

// Log is the tide log.
type Log struct {
	Error string `json:"error,omitempty"`
	// Epoch is the newest configuration epoch; History its changes.
	Epoch   uint64   `json:"epoch"`
	History []Change `json:"history"`
	// Leader is the active leader's address, Ballot its ballot.
	Leader string `json:"leader"`
	Ballot string `json:"ballot"`
	// Chosen is the active leader's chosen watermark: slots chosen.
	Chosen uint64 `json:"chosen"`
	// Roles are the compartments in pipeline order, each with its
	// instances.
	Roles []Role `json:"roles"`
	// OpsPerSec is client commands per second into the log (batchers'
	// input, or the leaders' without batchers).
	OpsPerSec float64 `json:"ops_per_sec"`
	// SlotsPerSec is the leader's chosen slots per second.
	SlotsPerSec float64 `json:"slots_per_sec"`
}

// Change is one configuration change of the log.
type Change struct {
	Epoch uint64    `json:"epoch"`
	At    time.Time `json:"at"`
	What  string    `json:"what"`
	Why   string    `json:"why"`
}

// Role is one compartment of the log.
type Role struct {
	Kind      string     `json:"kind"` // matchmaker, batcher, leader, proxy, acceptor, replica, unbatcher
	Instances []Instance `json:"instances"`
}

// Instance is one role instance.
type Instance struct {
	Addr        string  `json:"addr"`
	HTTP        string  `json:"http"`
	Group       int     `json:"group"` // acceptors: their group
	Up          bool    `json:"up"`
	Active      bool    `json:"active,omitempty"`
	Ballot      string  `json:"ballot,omitempty"`
	Epoch       uint64  `json:"epoch"`
	InPerSec    float64 `json:"in_per_sec"`
	OutPerSec   float64 `json:"out_per_sec"`
	Executed    uint64  `json:"executed,omitempty"`
	CPUPercent  float64 `json:"cpu_percent"`
	cpuSeconds  float64
	messagesIn  int64
	messagesOut int64
}

// Event is an autoscaler event.
type Event struct {
	autoscale.Event
	// Metric is the measure that triggered it, in a few words (e.g.
	// "node3 disk 72.1%"), when the event carries metrics.
	Metric string `json:"metric,omitempty"`
}

// Series are the charts' samples, oldest first, one per period.
type Series struct {
	Time          []int64   `json:"t"` // Unix milliseconds
	StoreOps      []float64 `json:"store_ops"`
	StoreP50      []float64 `json:"store_p50_ms"`
	StoreP99      []float64 `json:"store_p99_ms"`
	LogOps        []float64 `json:"log_ops"`
	Nodes         []int     `json:"nodes"`
	LogInstances  []int     `json:"log_instances"`
	StoreDiskMean []float64 `json:"store_disk_percent"`
}

// Handler serves the page at / and the API under /api/.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	mux.Handle("GET /", http.FileServerFS(sub))
	mux.HandleFunc("GET /api/state", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.State())
	})
	mux.HandleFunc("GET /api/events", func(w http.ResponseWriter, r *http.Request) {
		var since uint64
		if s := r.URL.Query().Get("since"); s != "" {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				http.Error(w, "since: want an event sequence number", http.StatusBadRequest)
				return
			}
			since = v
		}
		d.mu.Lock()
		out := []Event{}
		for _, ev := range d.events {
			if ev.Seq > since {
				out = append(out, ev)
			}
		}
		d.mu.Unlock()
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// State returns the latest sample.
func (d *Dashboard) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

// Run samples every Period until ctx ends.
func (d *Dashboard) Run(ctx context.Context) {
	period := d.Period
	if period <= 0 {
		period = time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		d.Sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample reads every source once and updates the state.
func (d *Dashboard) Sample(ctx context.Context) {
	if d.HTTP == nil {
		d.HTTP = &http.Client{Timeout: 2 * time.Second}
	}
	if d.Keep == 0 {
		d.Keep = 600
	}
	now := time.Now()
	var wg sync.WaitGroup
	var st Store
	var counters map[string]nodeCounters
	var lg *Log
	var statuses map[string]node.Status
	wg.Add(2)
	go func() { defer wg.Done(); st, counters = d.sampleStore(ctx) }()
	go func() { defer wg.Done(); lg, statuses = d.sampleLog(ctx) }()
	wg.Wait()
	evs := d.pollEvents()

	d.mu.Lock()
	defer d.mu.Unlock()
	secs := now.Sub(d.prevAt).Seconds()
	if d.prevAt.IsZero() {
		secs = 0
	}
	d.rates(&st, counters, secs)
	if lg != nil {
		logRates(lg, statuses, d.prevL, secs)
		d.prevL = statuses
	}
	d.prevN, d.prevAt = counters, now
	d.keepGone(&st, now)
	d.events = append(d.events, evs...)
	if len(d.events) > 1000 {
		d.events = d.events[len(d.events)-1000:]
	}
	s := d.state.Series
	push := func(xs []float64, v float64) []float64 { return trim(append(xs, v), d.Keep) }
	s.Time = trim(append(s.Time, now.UnixMilli()), d.Keep)
	s.StoreOps = push(s.StoreOps, st.OpsPerSec)
	s.StoreP99 = push(s.StoreP99, st.P99Millis)
	var p50 float64
	var disk float64
	for _, n := range st.Nodes {
		if n.State == "member" || n.State == "draining" || n.State == "leaving" {
			p50 = max(p50, n.P50Millis)
			disk += n.DiskPercent
		}
	}
	if st.Members > 0 {
		disk /= float64(st.Members)
	}
	s.StoreP50 = push(s.StoreP50, p50)
	s.StoreDiskMean = push(s.StoreDiskMean, disk)
	s.Nodes = trim(append(s.Nodes, st.Members), d.Keep)
	li, lops := 0, 0.0
	if lg != nil {
		for _, r := range lg.Roles {
			li += len(r.Instances)
		}
		lops = lg.OpsPerSec
	}
	s.LogOps = push(s.LogOps, lops)
	s.LogInstances = trim(append(s.LogInstances, li), d.Keep)
	last := d.events
	if len(last) > 100 {
		last = last[len(last)-100:]
	}
	d.state = State{Time: now, Store: st, Log: lg, Events: slices.Clone(last), Series: s}
	if d.state.Events == nil {
		d.state.Events = []Event{}
	}
}

func trim[T any](xs []T, n int) []T {
	if len(xs) > n {
		return xs[len(xs)-n:]
	}
	return xs
}

// keepGone shows, for a minute, nodes that were in the ring and are not
// any more, as "left".
func (d *Dashboard) keepGone(st *Store, now time.Time) {
	if d.gone == nil {
		d.gone = map[string]*Node{}
	}
	present := map[string]bool{}
	for _, n := range st.Nodes {
		present[n.HTTP] = true
		n.seen = now
		cp := *n
		d.gone[n.HTTP] = &cp
	}
	for addr, n := range d.gone {
		switch {
		case present[addr]:
		case now.Sub(n.seen) > time.Minute:
			delete(d.gone, addr)
		default:
			left := *n
			left.State, left.OpsPerSec, left.P50Millis, left.P99Millis = "left", 0, 0, 0
			st.Nodes = append(st.Nodes, &left)
		}
	}
}

func (d *Dashboard) pollEvents() []Event {
	if len(d.lastSeq) != len(d.Src.Events) {
		d.lastSeq = make([]uint64, len(d.Src.Events))
	}
	var out []Event
	for i, src := range d.Src.Events {
		for _, ev := range src.Since(d.lastSeq[i]) {
			d.lastSeq[i] = max(d.lastSeq[i], ev.Seq)
			if ev.Outcome == "decided" && ev.Action == autoscale.ActNone && len(out) > 0 && out[len(out)-1].Reason == ev.Reason {
				continue
			}
			out = append(out, Event{Event: ev, Metric: triggering(ev)})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	// Sequence numbers of different sources collide: renumber.
	d.mu.Lock()
	next := uint64(0)
	if n := len(d.events); n > 0 {
		next = d.events[n-1].Seq
	}
	d.mu.Unlock()
	for i := range out {
		next++
		out[i].Seq = next
	}
	return out
}

// triggering names the busiest metric an event carries.
func triggering(ev autoscale.Event) string {
	if len(ev.Metrics) == 0 {
		return ""
	}
	var id string
	var best autoscale.Observation
	for k, o := range ev.Metrics {
		if id == "" || o.DiskPercent > best.DiskPercent || (o.DiskPercent == best.DiskPercent && o.OpsPerSec > best.OpsPerSec) {
			id, best = k, o
		}
	}
	return fmt.Sprintf("%s disk %.1f%%, %.0f req/s", id, best.DiskPercent, best.OpsPerSec)
}

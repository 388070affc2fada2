package node

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tide/paxos"
	"tide/transport"
)

// Metrics are the Prometheus series of the roles in one process.
type Metrics struct {
	In        *prometheus.CounterVec
	Out       *prometheus.CounterVec
	Persisted prometheus.Counter
	Syncs     prometheus.Counter
	Dropped   prometheus.Counter
}

// NewMetrics registers the role metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		In: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tide_paxos_messages_in_total",
			Help: "Protocol messages received, by role and kind."}, []string{"role", "kind"}),
		Out: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tide_paxos_messages_out_total",
			Help: "Protocol messages sent, by role and kind."}, []string{"role", "kind"}),
		Persisted: prometheus.NewCounter(prometheus.CounterOpts{Name: "tide_paxos_persisted_ops_total",
			Help: "Durable state changes written (votes, promises, snapshots)."}),
		Syncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "tide_paxos_syncs_total",
			Help: "Synced writes; persisted ops per sync is the group commit factor."}),
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "tide_paxos_inbox_dropped_total",
			Help: "Messages dropped because a role's inbox was full."}),
	}
	reg.MustRegister(m.In, m.Out, m.Persisted, m.Syncs, m.Dropped)
	return m
}

// Runner drives one role: it feeds it messages and ticks on one goroutine,
// persists what the role asks to persist with one synced write per round,
// and only then sends the role's messages.
type Runner struct {
	Addr  string
	Kind  string
	role  paxos.Role
	store *Store
	tr    *transport.Transport
	inbox chan paxos.Message
	tick  time.Duration
	m     *Metrics
	log   *slog.Logger

	mu     sync.Mutex // guards status reads against the loop
	in     atomic.Int64
	out    atomic.Int64
	closed chan struct{}
}

// NewRunner builds the role at addr of d, with durable state under
// dataDir (acceptors, leaders and replicas), and registers it with tr.
func NewRunner(d Deployment, addr, dataDir string, tr *transport.Transport, m *Metrics, log *slog.Logger) (*Runner, error) {
	kind, idx, err := d.RoleOf(addr)
	if err != nil {
		return nil, err
	}
	r := &Runner{Addr: addr, Kind: kind, tr: tr, inbox: make(chan paxos.Message, 1<<16), tick: d.Tick(), m: m, log: log, closed: make(chan struct{})}
	needStore := kind == "acceptor" || kind == "leader" || kind == "replica" || kind == "matchmaker"
	if needStore {
		if r.store, err = OpenStore(filepath.Join(dataDir, sanitize(addr))); err != nil {
			return nil, err
		}
	}
	cfg := d.Log
	switch kind {
	case "batcher":
		r.role = paxos.NewBatcher(cfg, idx)
	case "leader":
		b, err := r.store.Ballot()
		if err != nil {
			return nil, err
		}
		r.role = paxos.NewLeader(cfg, idx, rand.Uint64(), b)
	case "proxy":
		r.role = paxos.NewProxyLeader(cfg, idx)
	case "acceptor":
		st, err := r.store.AcceptorState()
		if err != nil {
			return nil, err
		}
		r.role = paxos.NewAcceptor(addr, st)
	case "replica":
		snap, err := r.store.Snapshot()
		if err != nil {
			return nil, err
		}
		if r.role, err = paxos.NewReplica(cfg, idx, paxos.NewKV(), snap); err != nil {
			return nil, err
		}
	case "unbatcher":
		r.role = paxos.NewUnbatcher(cfg, idx)
	case "matchmaker":
		st, err := r.store.MatchmakerState()
		if err != nil {
			return nil, err
		}
		r.role = paxos.NewMatchmaker(addr, st)
	case "unreplicated":
		r.role = NewUnreplicated(addr)
	}
	return r, nil
}

func sanitize(addr string) string {
	out := []byte(addr)
	for i, c := range out {
		if c == ':' || c == '/' || c == '[' || c == ']' {
			out[i] = '_'
		}
	}
	return string(out)
}

// Deliver hands an inbound frame to the role; it is dropped if the inbox
// is full (the sender retransmits).
func (r *Runner) Deliver(frame []byte) {
	m, err := paxos.Decode(frame)
	if err != nil {
		r.log.Debug("paxos: dropping undecodable frame", "role", r.Addr, "err", err)
		return
	}
	select {
	case r.inbox <- m:
	default:
		r.m.Dropped.Inc()
	}
}

// Run drives the role until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	defer close(r.closed)
	defer func() {
		if r.store != nil {
			r.store.Close()
		}
	}()
	t := time.NewTicker(r.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-r.inbox:
			r.mu.Lock()
			r.step(m)
			// Take whatever else is waiting, so one sync covers it all.
			drained := false
			for k := 0; k < 4096 && !drained; k++ {
				select {
				case m := <-r.inbox:
					r.step(m)
				default:
					drained = true
				}
			}
			if f, ok := r.role.(paxos.Flusher); ok && drained {
				f.Flush()
			}
		case <-t.C:
			r.mu.Lock()
			r.role.Tick()
		}
		err := r.flush()
		r.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

func (r *Runner) step(m paxos.Message) {
	r.in.Add(1)
	r.m.In.WithLabelValues(r.Kind, m.Kind.String()).Inc()
	r.role.Step(m)
}

func (r *Runner) flush() error {
	rd := r.role.Ready()
	if r.store != nil && (len(rd.Persist) > 0 || rd.Snapshot != nil) {
		if err := r.store.Save(rd.Persist, rd.Snapshot); err != nil {
			return fmt.Errorf("%s %s: %w", r.Kind, r.Addr, err)
		}
		r.m.Persisted.Add(float64(len(rd.Persist)))
		r.m.Syncs.Inc()
	}
	for i := range rd.Messages {
		m := &rd.Messages[i]
		b, err := paxos.Encode(m)
		if err != nil {
			return err
		}
		r.out.Add(1)
		r.m.Out.WithLabelValues(r.Kind, m.Kind.String()).Inc()
		r.tr.Send(m.To, b)
	}
	return nil
}

// Status is a role's report for `tide log status`.
type Status struct {
	Addr        string `json:"addr"`
	Kind        string `json:"kind"`
	MessagesIn  int64  `json:"messages_in"`
	MessagesOut int64  `json:"messages_out"`
	Ballot      string `json:"ballot,omitempty"`
	Active      bool   `json:"active,omitempty"`
	Chosen      uint64 `json:"chosen_watermark,omitempty"`
	NextSlot    uint64 `json:"next_slot,omitempty"`
	Executed    uint64 `json:"executed,omitempty"`
	Accepted    int    `json:"accepted,omitempty"`
	Elections   int    `json:"elections,omitempty"`
	Batches     int    `json:"batches,omitempty"`
}

// Status reports the role's state.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{Addr: r.Addr, Kind: r.Kind, MessagesIn: r.in.Load(), MessagesOut: r.out.Load()}
	switch role := r.role.(type) {
	case *paxos.Leader:
		ls := role.Status()
		s.Ballot, s.Active, s.Chosen, s.NextSlot, s.Elections = ls.Ballot.String(), role.Active(), ls.Watermark, ls.NextSlot, ls.Elections
	case *paxos.Acceptor:
		st := role.State()
		s.Ballot, s.Accepted = st.Promised.String(), len(st.Accepted)
	case *paxos.Replica:
		s.Executed = role.ExecutedThrough()
	case *paxos.Batcher:
		s.Batches = role.Batches
	}
	return s
}

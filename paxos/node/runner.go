package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
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
	// Violations counts inputs refused because they would break an
	// invariant (see paxos outbox.Invariant): each one is a bug report.
	Violations prometheus.Counter
	// Phase is where a role's time goes, by phase: decode (a frame, on
	// the transport's goroutine), queue (a message waiting in the inbox),
	// step (the state machine on one message), sync (one fsync, covering
	// the rounds written while the one before it ran), durable (a round's
	// messages waiting, from its write, for the fsync that covers it) and
	// send (encoding and handing a round's messages to the transport).
	Phase *prometheus.HistogramVec
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
		Violations: prometheus.NewCounter(prometheus.CounterOpts{Name: "tide_paxos_invariant_violations_total",
			Help: "Inputs refused because accepting them would break a protocol invariant (two values for one slot, ...)."}),
		Phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tide_paxos_phase_seconds",
			Help:    "Where a role's time goes: decode and queue per message received, step per message, sync per synced write, durable per round whose messages waited for the fsync covering it, send per round of messages sent.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 11)}, []string{"role", "phase"}),
	}
	reg.MustRegister(m.In, m.Out, m.Persisted, m.Syncs, m.Dropped, m.Violations, m.Phase)
	return m
}

// Runner drives one role: it feeds it messages and ticks on one goroutine
// and commits what the role asks to persist, one batch per round, without
// waiting for the disk. A second goroutine, the sync loop, fsyncs: while
// one fsync runs the role keeps stepping, and every round committed
// meanwhile shares the next fsync (group commit). A lone write is synced
// at once. A round's messages leave only after the fsync that covers its
// state and every earlier round's: no vote is announced before it is on
// disk, and no message reflects state that is not.
type Runner struct {
	// inC and outC are the counters of messages in and out by kind,
	// looked up once each (a label lookup per message was 6% of a
	// batcher's CPU).
	inC, outC [256]prometheus.Counter

	Addr  string
	Kind  string
	role  paxos.Role
	store *Store
	tr    *transport.Transport
	inbox chan inbound
	tick  time.Duration
	m     *Metrics
	log   *slog.Logger

	// The phase histograms of this role's kind.
	decode, queue, stepT, syncT, durableT, sendT prometheus.Observer

	// frames collects a round's encoded messages by destination.
	frames map[string][][]byte
	// scratch and spans are encode's buffers, reused from round to round.
	scratch []byte
	spans   [][2]int
	// unsynced holds a round's messages that need not wait for its fsync.
	unsynced []paxos.Message

	// The group commit: rounds waiting for an fsync, oldest first (under
	// syncMu), a wake-up for the sync loop, how many rounds are queued or
	// being sent (a round with nothing to persist may leave at once only
	// when none is), and the sync loop's failure.
	syncMu      sync.Mutex
	syncq       []syncJob
	syncWake    chan struct{}
	outstanding atomic.Int64
	syncErr     chan error
	// syncFn and sendFn are the store's Sync and the transport's
	// SendBatch; tests replace them to watch the order of the two.
	syncFn func() error
	sendFn func(to string, frames [][]byte)

	mu     sync.Mutex // guards status reads against the loop
	in     atomic.Int64
	out    atomic.Int64
	closed chan struct{}
}

// NewRunner builds the role at addr of d, with durable state under
// dataDir (acceptors, leaders, replicas and matchmakers), and registers it
// with tr.
func NewRunner(d Deployment, addr, dataDir string, tr *transport.Transport, m *Metrics, log *slog.Logger) (*Runner, error) {
	kind, _, err := d.RoleOf(addr)
	if err != nil {
		return nil, err
	}
	return NewRunnerKind(d, kind, addr, dataDir, tr, m, log)
}

// Kinds are the role kinds a runner can run.
var Kinds = []string{"matchmaker", "batcher", "leader", "proxy", "acceptor", "replica", "unbatcher"}

// NewRunnerKind builds a role of the given kind at addr, which d's
// configuration need not list yet: a role joining a running log starts
// with the configuration it fetched and learns the one that adds it.
func NewRunnerKind(d Deployment, kind, addr, dataDir string, tr *transport.Transport, m *Metrics, log *slog.Logger) (*Runner, error) {
	r := &Runner{Addr: addr, Kind: kind, tr: tr, inbox: make(chan inbound, 1<<16), tick: d.Tick(), m: m, log: log, closed: make(chan struct{}),
		syncWake: make(chan struct{}, 1), syncErr: make(chan error, 1)}
	r.sendFn = tr.SendBatch
	r.decode, r.queue = m.Phase.WithLabelValues(kind, "decode"), m.Phase.WithLabelValues(kind, "queue")
	r.stepT, r.syncT, r.sendT = m.Phase.WithLabelValues(kind, "step"), m.Phase.WithLabelValues(kind, "sync"), m.Phase.WithLabelValues(kind, "send")
	r.durableT = m.Phase.WithLabelValues(kind, "durable")
	needStore := kind == "acceptor" || kind == "leader" || kind == "replica" || kind == "matchmaker"
	var err error
	if needStore {
		if r.store, err = OpenStore(filepath.Join(dataDir, sanitize(addr))); err != nil {
			return nil, err
		}
		r.syncFn = r.store.Sync
	}
	fail := func(err error) (*Runner, error) {
		if r.store != nil {
			r.store.Close()
		}
		return nil, err
	}
	cfg := d.Log
	switch kind {
	case "batcher":
		r.role = paxos.NewBatcherAt(cfg, addr)
	case "leader":
		b, err := r.store.Ballot()
		if err != nil {
			return fail(err)
		}
		l := paxos.NewLeaderAt(cfg, addr, rand.Uint64(), b)
		if c, err := r.store.Config(); err != nil {
			return fail(err)
		} else if c != nil {
			l.Restore(*c)
		}
		r.role = l
	case "proxy":
		r.role = paxos.NewProxyLeaderAt(cfg, addr)
	case "acceptor":
		st, err := r.store.AcceptorState()
		if err != nil {
			return fail(err)
		}
		r.role = paxos.NewAcceptor(addr, st)
	case "replica":
		snap, err := r.store.Snapshot()
		if err != nil {
			return fail(err)
		}
		if r.role, err = paxos.NewReplicaAt(cfg, addr, paxos.NewKV(), snap); err != nil {
			return fail(err)
		}
	case "unbatcher":
		r.role = paxos.NewUnbatcherAt(cfg, addr)
	case "matchmaker":
		st, err := r.store.MatchmakerState()
		if err != nil {
			return fail(err)
		}
		r.role = paxos.NewMatchmaker(addr, st)
	case "unreplicated":
		r.role = NewUnreplicated(addr)
	default:
		return fail(fmt.Errorf("unknown role kind %q (want one of %v)", kind, Kinds))
	}
	if h, ok := r.role.(interface{ SetInvariantHandler(func(string)) }); ok {
		h.SetInvariantHandler(func(msg string) {
			m.Violations.Inc()
			log.Error("paxos: invariant violated; input refused", "role", addr, "kind", kind, "evidence", msg)
		})
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

// counter returns vec's counter for this role and kind k, cached in c.
func (r *Runner) counter(c *[256]prometheus.Counter, vec *prometheus.CounterVec, k paxos.Kind) prometheus.Counter {
	if c[k] == nil {
		c[k] = vec.WithLabelValues(r.Kind, k.String())
	}
	return c[k]
}

// holdFor is the longest a batch a role held back waits (paxos.Holder):
// under load, the time a batch takes to fill.
const holdFor = 2 * time.Millisecond

// inbound is a decoded message and when it was put in the inbox.
type inbound struct {
	m  paxos.Message
	at time.Time
}

// Deliver hands an inbound frame to the role; it is dropped if the inbox
// is full (the sender retransmits). The frame is the role's to keep (a
// transport with OwnFrames): the message's ops and results are slices of
// it, not copies.
func (r *Runner) Deliver(frame []byte) {
	start := time.Now()
	m, err := paxos.DecodeOwned(frame)
	if err != nil {
		r.log.Debug("paxos: dropping undecodable frame", "role", r.Addr, "err", err)
		return
	}
	now := time.Now()
	r.decode.Observe(now.Sub(start).Seconds())
	select {
	case r.inbox <- inbound{m, now}:
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
	if r.store != nil {
		sctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); r.syncLoop(sctx) }()
		// The store closes only after the sync loop is done with it.
		defer func() { cancel(); wg.Wait() }()
	}
	t := time.NewTicker(r.tick)
	defer t.Stop()
	// A batch the role held back (paxos.Holder) leaves when this fires.
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	var holdC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-r.syncErr:
			return err
		case <-holdC:
			holdC = nil
			r.mu.Lock()
			r.role.(paxos.Holder).Release()
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
				if h, ok := r.role.(paxos.Holder); ok && h.Held() && holdC == nil {
					hold.Reset(holdFor)
					holdC = hold.C
				}
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

func (r *Runner) step(in inbound) {
	start := time.Now()
	r.queue.Observe(start.Sub(in.at).Seconds())
	r.in.Add(1)
	r.counter(&r.inC, r.m.In, in.m.Kind).Inc()
	r.role.Step(in.m)
	r.stepT.Observe(time.Since(start).Seconds())
}

// outFrames are a round's encoded messages to one destination.
type outFrames struct {
	to     string
	frames [][]byte
}

// syncJob is a round's messages waiting for the fsync that covers what it
// and every earlier round persisted; persisted says whether it wrote.
type syncJob struct {
	sends     []outFrames
	persisted bool
	at        time.Time // when it was queued
}

func (r *Runner) flush() error {
	rd := r.role.Ready()
	wrote := false
	if r.store != nil && (len(rd.Persist) > 0 || rd.Snapshot != nil) {
		if err := r.store.Write(rd.Persist, rd.Snapshot); err != nil {
			return fmt.Errorf("%s %s: %w", r.Kind, r.Addr, err)
		}
		r.m.Persisted.Add(float64(len(rd.Persist)))
		wrote = true
	}
	if !wrote && len(rd.Messages) == 0 {
		return nil
	}
	msgs := rd.Messages
	if !wrote && r.outstanding.Load() == 0 {
		// Nothing of this round or before it waits for the disk.
		sends, err := r.encode(msgs)
		r.send(sends)
		return err
	}
	if slices.ContainsFunc(msgs, func(m paxos.Message) bool { return m.Unsynced }) {
		// What announces nothing persisted need not wait for the disk.
		now := r.unsynced[:0]
		msgs = slices.DeleteFunc(msgs, func(m paxos.Message) bool {
			if m.Unsynced {
				now = append(now, m)
			}
			return m.Unsynced
		})
		sends, err := r.encode(now)
		if err != nil {
			return err
		}
		r.send(sends)
		clear(now)
		r.unsynced = now[:0]
	}
	sends, err := r.encode(msgs)
	if err != nil {
		return err
	}
	r.outstanding.Add(1)
	r.syncMu.Lock()
	r.syncq = append(r.syncq, syncJob{sends: sends, persisted: wrote, at: time.Now()})
	r.syncMu.Unlock()
	select {
	case r.syncWake <- struct{}{}:
	default:
	}
	return nil
}

// maxScratch is the largest encode buffer kept for the next round.
const maxScratch = 1 << 20

// encode encodes a round's messages, once per fan-out, and groups the
// frames by destination, in order, to leave in one write each.
func (r *Runner) encode(msgs []paxos.Message) ([]outFrames, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	defer func(start time.Time) { r.sendT.Observe(time.Since(start).Seconds()) }(time.Now())
	if r.frames == nil {
		r.frames = map[string][][]byte{}
	}
	// The round's messages are encoded one after another into the
	// runner's scratch buffer, then copied out at once: every frame is a
	// slice of one allocation of the round's exact size, not one of its
	// own (the transport only reads frames, and the copy is garbage once
	// the last of them is written).
	buf, spans := r.scratch[:0], r.spans[:0]
	for i := range msgs {
		m := &msgs[i]
		if !m.SameAsPrevious || len(spans) == 0 {
			start := len(buf)
			var err error
			if buf, err = paxos.AppendEncode(buf, m); err != nil {
				return nil, err
			}
			spans = append(spans, [2]int{start, len(buf)})
		} else {
			spans = append(spans, spans[len(spans)-1])
		}
	}
	round := bytes.Clone(buf)
	for i := range msgs {
		m := &msgs[i]
		sp := spans[i]
		r.out.Add(1)
		r.counter(&r.outC, r.m.Out, m.Kind).Inc()
		r.frames[m.To] = append(r.frames[m.To], round[sp[0]:sp[1]:sp[1]])
	}
	if cap(buf) > maxScratch {
		buf = nil // a rare large round (a snapshot, a recovery) is not kept
	}
	r.scratch, r.spans = buf, spans
	sends := make([]outFrames, 0, len(r.frames))
	for to, frames := range r.frames {
		sends = append(sends, outFrames{to, frames})
		delete(r.frames, to)
	}
	return sends, nil
}

func (r *Runner) send(sends []outFrames) {
	for _, s := range sends {
		r.sendFn(s.to, s.frames)
	}
}

// mergeSends joins the frames of jobs by destination, in order, so that
// each destination's share of every round an fsync covered leaves in one
// write.
func mergeSends(jobs []syncJob) []outFrames {
	if len(jobs) == 1 {
		return jobs[0].sends
	}
	var out []outFrames
	at := map[string]int{}
	for _, j := range jobs {
		for _, s := range j.sends {
			if i, ok := at[s.to]; ok {
				out[i].frames = append(out[i].frames, s.frames...)
				continue
			}
			at[s.to] = len(out)
			out = append(out, s)
		}
	}
	return out
}

// syncLoop is the group commit: it takes every round queued so far, makes
// them durable with one fsync (if any of them wrote), and only then sends
// their messages, in order. Rounds queued while it syncs wait for the next
// fsync, which starts as soon as this one ends.
func (r *Runner) syncLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.syncWake:
		}
		r.syncMu.Lock()
		jobs := r.syncq
		r.syncq = nil
		r.syncMu.Unlock()
		if len(jobs) == 0 {
			continue
		}
		if slices.ContainsFunc(jobs, func(j syncJob) bool { return j.persisted }) {
			start := time.Now()
			if err := r.syncFn(); err != nil {
				r.syncErr <- fmt.Errorf("%s %s: %w", r.Kind, r.Addr, err)
				return
			}
			r.syncT.Observe(time.Since(start).Seconds())
			r.m.Syncs.Inc()
		}
		r.send(mergeSends(jobs))
		r.outstanding.Add(-int64(len(jobs)))
		for _, j := range jobs {
			r.durableT.Observe(time.Since(j.at).Seconds())
		}
	}
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
	// Epoch is the configuration epoch the role knows.
	Epoch uint64 `json:"epoch"`
	// Member is false once the configuration no longer lists the role.
	Member bool `json:"member"`
	// Drained: out of the configuration and holding nothing; the process
	// may stop.
	Drained bool `json:"drained,omitempty"`
	// Durable is a replica's latest snapshot slot.
	Durable uint64 `json:"durable,omitempty"`
	// LogEpoch is the newest configuration epoch in the log a replica
	// has executed (or restored): it holds durably everything up to it.
	LogEpoch uint64 `json:"log_epoch,omitempty"`
	// Leader: its round's configuration epoch, the acceptor
	// configurations still live (1 once older rounds are retired), and
	// its state.
	RoundEpoch uint64 `json:"round_epoch,omitempty"`
	Live       int    `json:"live_configs,omitempty"`
	Retiring   bool   `json:"retiring,omitempty"`
	State      string `json:"state,omitempty"`
	// Matchmaker: rounds it holds.
	Rounds int `json:"rounds,omitempty"`
	// CPUSeconds is the CPU time the role's process has used so far, and
	// CPULimit its CPU limit in CPUs (a container's --cpus; 0: none): the
	// log autoscaler's second measure of load beside the messages.
	CPUSeconds float64 `json:"cpu_seconds"`
	CPULimit   float64 `json:"cpu_limit,omitempty"`
}

// Status reports the role's state.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{Addr: r.Addr, Kind: r.Kind, MessagesIn: r.in.Load(), MessagesOut: r.out.Load(), Member: true,
		CPUSeconds: processCPU(), CPULimit: cpuLimit()}
	if c, ok := r.role.(interface{ Config() paxos.Config }); ok {
		cfg := c.Config()
		s.Epoch, s.Member = cfg.Epoch, cfg.Has(r.Addr)
	}
	if d, ok := r.role.(interface{ Drained() bool }); ok {
		s.Drained = d.Drained()
	}
	switch role := r.role.(type) {
	case *paxos.Leader:
		ls := role.Status()
		s.Ballot, s.Active, s.Chosen, s.NextSlot, s.Elections = ls.Ballot.String(), role.Active(), ls.Watermark, ls.NextSlot, ls.Elections
		s.State, s.Live, s.RoundEpoch, s.Retiring = ls.State, len(ls.Live), ls.RoundEpoch, ls.Retiring
	case *paxos.Acceptor:
		st := role.State()
		s.Ballot, s.Accepted = st.Promised.String(), len(st.Accepted)
	case *paxos.Replica:
		s.Executed, s.Durable, s.LogEpoch = role.ExecutedThrough(), role.Durable(), role.LogEpoch()
	case *paxos.Batcher:
		s.Batches = role.Batches
	case *paxos.Matchmaker:
		s.Rounds = len(role.State().Rounds)
	}
	return s
}

// Config returns the newest configuration the role knows, if it keeps one.
func (r *Runner) Config() (paxos.Config, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.role.(interface{ Config() paxos.Config }); ok {
		return c.Config(), true
	}
	return paxos.Config{}, false
}

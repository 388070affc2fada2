// Package kvserver is a storage node's key-value service: Server drives
// a kv.Node (the Dynamo-style core), stepping it with the messages of
// peers (over package transport) and of local clients (Put, Get, Delete,
// GetAtLeast, and a Batcher per RESP connection), persisting each round
// through store/engine with one fsync shared by the rounds that wait for
// it, and sending what the round produced. It knows nothing of Chord:
// the node hands it ring tables (SetRing, SetRegionRing) as kv.Ring
// values.
//
// It may import kv, transport, store/engine and store/status.
package kvserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tide/kv"
	"tide/store/engine"
	"tide/store/status"
	"tide/tlsconf"
	"tide/transport"
)

// clientAddr is the address a node's own KV clients use; replies to it are
// handed to the waiting caller instead of the network.
const clientAddr = "local"

// Server drives a kv.Node: one goroutine steps it with messages from peers
// and local callers and ticks it, persists what it asks in one synced batch
// per round, and only then sends.
type Server struct {
	n     *host
	wg    sync.WaitGroup
	node  *kv.Node
	tr    *transport.Transport
	inbox chan kv.Message
	// batches carries the requests of client connections, a pipeline
	// at a time (doBatch), and the messages of peers, what arrived
	// together at a time (deliver).
	batches chan msgBatch
	// peerBatches recycles the slices deliver decodes peers' messages
	// into, once the loop has stepped them.
	peerBatches sync.Pool
	bulk        chan bulkMsg // anti-entropy and hand-off traffic
	// frames recycles the buffers of inbound pushes; recycle lists those
	// of this round, handed back once the round is persisted.
	frames  framePool
	recycle [][]byte
	// dropped counts inbound messages a full queue turned away.
	dropped atomic.Int64
	// refusalLogged is when a peer's write was last logged as refused
	// for lack of disk space (unix nanoseconds; see space.go).
	refusalLogged atomic.Int64
	rings         chan kv.Ring
	left          chan string // members that announced they left (MemberLeft)
	// regionRings carries other regions' member tables to the loop;
	// regionStatus is the replication to them, as of the last few ticks.
	regionRings  chan regionRing
	regionStatus atomic.Pointer[[]kv.RegionStatus]
	// watch wakes reads waiting for a key to be written (KVGetAtLeast).
	watch keyWatch
	// marks holds the replication watermarks of other regions' nodes
	// (kvmarks.go).
	marks markTable
	// applied is the table the loop has handed to the kv.Node: the one
	// requests are routed by (ring may be a moment ahead of it).
	applied atomic.Pointer[kv.Ring]
	// clears carries clear_cache requests to the loop, which answers on
	// the channel sent.
	clears chan chan error
	nextID atomic.Uint64
	mu     sync.Mutex
	wait   map[uint64]chan kv.Message
	stats  atomic.Pointer[kv.Stats]
	drain  atomic.Bool
	// handingOff mirrors kv.Node.Busy for other goroutines.
	handingOff atomic.Bool
	// Group commit: the driver commits rounds without waiting for the
	// disk and counts them in committed; the sync loop fsyncs and records
	// the last commit it covered in synced.
	periodic  bool
	committed atomic.Uint64
	synced    atomic.Uint64
	syncq     chan syncJob
	// commits lists (round, commit number) for recent rounds that
	// committed, oldest first, to find what an answer waits for (see
	// kv.Message.DurableAfter). Entries already synced are dropped.
	commits []roundCommit
	after   []kv.Message // the loop's buffer of answers, reused every round
	now     []kv.Message // and of those of them that may leave at once
	stepped int          // messages stepped in this round, for metrics
	// ready is closed once the first walk of the ring installs a member
	// table. Until then the node knows only itself, and a write it
	// coordinated would count itself as the whole preference list.
	ready     chan struct{}
	readyOnce sync.Once
	// closing is closed when the node stops: a bulk message waiting for
	// room in the queue is dropped then.
	closing <-chan struct{}
	// digests are the digest requests and answers for the digester.
	digests chan kv.Message
}

// Config configures a KV server. Zero fields take the defaults noted.
type Config struct {
	// KV configures the replication core (see store.Config.KV).
	KV kv.Config
	// KVSync is "always" (every acknowledgement waits for an fsync) or
	// "periodic" (fsync every KVSyncPeriod); see store.Config.KVSync.
	KVSync       string
	KVSyncPeriod time.Duration
	// Self is this node's peer address, where other nodes send it KV
	// messages: its name in every ring table.
	Self string
	// TLS, if set, makes the peer protocol mutual TLS.
	TLS *tlsconf.Config
	// Engine stores the records, hints and region outbox.
	Engine *engine.Engine
	Log    *slog.Logger
	// KnowsRing reports whether the node is in a ring or follows one (or
	// leaves one): a request to a node that knows no ring is refused at
	// once instead of waiting for a table.
	KnowsRing func() bool
	// The driver's metrics: messages stepped per round, fsync durations,
	// and the duration of each client request it coordinated.
	RoundMessages, SyncSeconds, Latency prometheus.Observer
}

// host is what the server uses of the node it runs in.
type host struct {
	cfg Config
	eng *engine.Engine
	log *slog.Logger
	m   metrics
}

type metrics struct{ kvRound, kvSync, kvLatency prometheus.Observer }

// Start serves the KV protocol on peerLn and starts the driver with the
// ring table initial (SetRing installs newer ones); it runs until ctx
// ends, and Wait returns once it has stopped.
func Start(ctx context.Context, cfg Config, peerLn net.Listener, initial kv.Ring) (*Server, error) {
	if len(cfg.KV.Regions) > 0 && cfg.KV.Origin == 0 {
		cfg.KV.Origin = newOrigin()
	}
	n := &host{cfg: cfg, eng: cfg.Engine, log: cfg.Log, m: metrics{kvRound: cfg.RoundMessages, kvSync: cfg.SyncSeconds, kvLatency: cfg.Latency}}
	k := &Server{n: n, tr: &transport.Transport{OwnFrames: true}, inbox: make(chan kv.Message, 1<<16), batches: make(chan msgBatch, 1<<14), bulk: make(chan bulkMsg, 256), digests: make(chan kv.Message, 16), rings: make(chan kv.Ring, 4), left: make(chan string, 64), regionRings: make(chan regionRing, 4), clears: make(chan chan error), wait: map[uint64]chan kv.Message{},
		periodic: n.cfg.KVSync == "periodic", syncq: make(chan syncJob, 1<<14), ready: make(chan struct{}), closing: ctx.Done()}
	k.tr.Log = n.log
	k.tr.TLS = cfg.TLS
	k.tr.Alloc = k.frames.get
	hints, err := n.eng.Hints()
	if err != nil {
		peerLn.Close()
		return nil, err
	}
	k.node = kv.NewNode(n.cfg.KV, n.cfg.Self, initial, n.eng.KV(), func() uint64 { return uint64(time.Now().UnixNano()) }, hints)
	outbox, err := n.eng.Outbox()
	if err != nil {
		peerLn.Close()
		return nil, err
	}
	k.node.RestoreOutbox(outbox)
	st := k.node.RegionStatus()
	k.regionStatus.Store(&st)
	k.stats.Store(&kv.Stats{})
	if err := k.tr.ServeBatch(peerLn, k.deliver); err != nil {
		return nil, err
	}
	k.wg.Add(3)
	go func() { defer k.wg.Done(); k.digester(ctx) }()
	go func() { defer k.wg.Done(); k.loop(ctx) }()
	go func() { defer k.wg.Done(); k.syncLoop(ctx) }()
	return k, nil
}

// Wait returns once the driver's goroutines have stopped (after the
// context given to Start ends).
func (k *Server) Wait() { k.wg.Wait() }

// deliver hands the messages a peer sent together to the loop: requests
// and answers as one batch, so that one round steps them all and one
// fsync covers what they store (one at a time, a pipeline's writes to a
// replica could take two rounds and two fsyncs); data moving between
// replicas through the bulk lane.
func (k *Server) deliver(frames [][]byte) {
	var fg *[]kv.Message
	for _, f := range frames {
		m, err := kv.DecodeOwned(f) // the transport hands over each frame (OwnFrames)
		if err != nil {
			continue
		}
		if bulkKind(m.Kind) {
			if m.Kind == kv.KindDigest || m.Kind == kv.KindDigestResp {
				select {
				case k.digests <- m:
					continue
				default: // the digester is behind: the loop reads it
				}
			}
			k.deliverBulk(m, f)
			continue
		}
		if fg == nil {
			fg, _ = k.peerBatches.Get().(*[]kv.Message)
			if fg == nil {
				fg = new([]kv.Message)
			}
		}
		*fg = append(*fg, m)
	}
	if fg == nil {
		return
	}
	select {
	case k.batches <- msgBatch{ms: *fg, pooled: fg}:
	default:
		k.dropped.Add(int64(len(*fg)))
		k.putPeerBatch(fg)
	}
}

func (k *Server) loop(ctx context.Context) {
	defer k.tr.Close()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var began time.Time                 // when the last round's work began
	var what string                     // what began it
	var step, send, store time.Duration // where its time went
	for {
		if what != "" {
			// Every request waits for the round under way: a slow one
			// shows in every client's latency at once.
			if d := time.Since(began); d >= slowStorage {
				ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
				k.n.log.Warn("kv: slow round", "took", ms(d), "began_with", what,
					"stepping", ms(step), "sending", ms(send), "storing", ms(store), "rest", ms(d-step-send-store))
			}
			what = ""
		}
		select {
		case <-ctx.Done():
			return
		case r := <-k.rings:
			began, what = time.Now(), "ring"
			// A draining node's tables leave it out (see the walk);
			// until its leave ends or fails it acknowledges no write.
			k.node.SetLeaving(k.drain.Load())
			k.node.SetRing(r)
			k.applied.Store(&r)
			// Client requests pass only now: the loop picks among ready
			// channels at random, so a request let in when SetRing queued
			// the table could be stepped before it, by the table of this
			// node alone.
			k.readyOnce.Do(func() { close(k.ready) })
		case a := <-k.left:
			began, what = time.Now(), "left"
			k.node.MemberLeft(a)
		case r := <-k.regionRings:
			began, what = time.Now(), "region ring"
			k.node.SetRegionRing(r.region, r.ring)
		case done := <-k.clears:
			began, what = time.Now(), "clear"
			// The seed's clear_cache: storage is emptied between rounds,
			// and the node forgets the hints and versions it kept of it.
			k.node.Clear()
			done <- k.n.eng.ClearKV()
		case b := <-k.bulk:
			began, what = time.Now(), "bulk"
			// Data moving between replicas takes a round to itself, so
			// that client requests never queue behind more than a few
			// MiB of it; pushes waiting already join the round, so that
			// storage writes them in large files (see kvingest.go).
			// Offers and digests carry no records but read storage:
			// after bulkRoundTime the round takes no more, unless it
			// holds pushes too few to be stored as a file of their own.
			k.stepBulk(b)
			size := pushBytes(b.m)
		more:
			for size < bulkRoundBytes && (time.Since(began) < bulkRoundTime || size > 0 && size < bulkRoundIngest) {
				select {
				case b := <-k.bulk:
					k.stepBulk(b)
					size += pushBytes(b.m)
				default:
					break more
				}
			}
		case m := <-k.inbox:
			began, what = time.Now(), "request"
			k.node.Step(m)
			k.stepped++
			k.stepMore()
		case b := <-k.batches:
			began, what = time.Now(), "batch"
			k.stepBatch(b)
			k.stepMore()
		case <-t.C:
			began, what = time.Now(), "tick"
			k.node.Tick()
			st := k.node.Stats
			k.stats.Store(&st)
			k.handingOff.Store(k.node.Busy())
			if len(k.n.cfg.KV.Regions) > 0 {
				// Every tick: a scrape right after a write sees it pending.
				rs := k.node.RegionStatus()
				k.regionStatus.Store(&rs)
			}
		}
		step, send, store = time.Since(began), 0, 0
		if k.stepped > 0 {
			k.n.m.kvRound.Observe(float64(k.stepped))
			k.stepped = 0
		}
		rd := k.node.Ready()
		if len(rd.Marks) > 0 {
			k.marks.raise(rd.Marks, time.Now())
		}
		// Requests to other nodes leave at once, so a coordinator's own
		// write overlaps with its replicas'; answers vouch for local state
		// and wait until it is durable.
		after := k.after[:0]
		ob := outbox{}
		for i := range rd.Messages {
			if m := &rd.Messages[i]; !m.AfterPersist() {
				ob.add(m)
			} else {
				after = append(after, *m)
			}
		}
		start := time.Now()
		k.flush(ob)
		send = time.Since(start)
		committed := false
		if len(rd.Persist) > 0 {
			start := time.Now()
			err := k.n.eng.ApplyKV(rd.Persist, false)
			store = time.Since(start)
			if d := store; d >= slowStorage {
				// Every answer this round vouches for waits for it.
				k.n.log.Warn("kv: slow persist round", "took", d.Round(time.Millisecond), "records", len(rd.Persist))
			}
			if err != nil {
				k.n.log.Error("kv: persist failed; dropping this round's replies", "err", err)
				k.node.ForgetVersions()   // it knows of writes storage lacks
				k.recycle = k.recycle[:0] // left to the garbage collector
				continue
			}
			committed = true
			k.watch.fire(rd.Persist)
			seq := k.committed.Add(1)
			if !k.periodic {
				k.commits = append(k.commits, roundCommit{round: rd.Round, seq: seq})
			}
		}
		// Sent, copied or persisted: the next rounds reuse its buffers.
		k.node.Release(rd)
		for i, f := range k.recycle {
			k.frames.put(f)
			k.recycle[i] = nil
		}
		k.recycle = k.recycle[:0]
		k.after = after[:0] // what is kept of it below is copied out
		if len(after) == 0 {
			if committed && !k.periodic {
				// Nothing waits for this round yet, but the answers
				// that vouch for it soon will: a coordinator's own copy
				// of a write is acknowledged once its replicas answer.
				// Syncing now overlaps this node's fsync with theirs
				// instead of starting it when they have answered.
				select {
				case k.syncq <- syncJob{}:
				default: // the queue is full: a sync is coming anyway
				}
			}
			continue
		}
		if k.periodic {
			k.dispatch(after)
			continue
		}
		// Each answer waits for the commit it vouches for: by default
		// everything committed so far; a write's acknowledgement, only the
		// round that stored the coordinator's copy, usually synced by the
		// time the replicas' acknowledgements arrive.
		synced := k.synced.Load()
		for len(k.commits) > 0 && k.commits[0].seq <= synced {
			k.commits = k.commits[1:]
		}
		latest := k.committed.Load()
		now := k.now[:0]
		var later []kv.Message
		for _, m := range after {
			need := latest
			if r, ok := m.DurableAfter(); ok {
				need = k.seqAt(r)
			}
			if need <= synced {
				now = append(now, m)
			} else {
				later = append(later, m)
			}
		}
		k.dispatch(now)
		clear(now)
		k.now = now[:0]
		if len(later) == 0 {
			continue
		}
		select {
		case k.syncq <- syncJob{msgs: later}:
		case <-ctx.Done():
			return
		}
	}
}

// stepMore steps what else is waiting, up to a few thousand messages, so
// that one round (one write per peer, one commit) carries them all.
func (k *Server) stepMore() {
	yielded := false
	for i := 0; i < 4096; i++ {
		select {
		case m := <-k.inbox:
			k.node.Step(m)
			k.stepped++
			continue
		case b := <-k.batches:
			k.stepBatch(b)
			i += len(b.ms)
			continue
		default:
		}
		if !yielded {
			// Let the connections with requests under way hand them
			// over.
			yielded = true
			runtime.Gosched()
			continue
		}
		break
	}
}

// msgBatch is a batch of messages for the loop: a client connection's
// requests (doBatch), or what a peer sent together (deliver), in a slice
// from peerBatches (pooled) that the loop recycles once it has stepped
// them.
type msgBatch struct {
	ms     []kv.Message
	pooled *[]kv.Message
}

// stepBatch steps a batch in order.
func (k *Server) stepBatch(b msgBatch) {
	for i := range b.ms {
		if b.pooled != nil {
			if err := k.refuses(&b.ms[i]); err != nil {
				k.node.Refuse(b.ms[i], err.Error())
				continue
			}
		}
		k.node.Step(b.ms[i])
	}
	k.stepped += len(b.ms)
	if b.pooled != nil {
		// Step keeps what it needs of a message, not the slice.
		k.putPeerBatch(b.pooled)
	}
}

// putPeerBatch recycles a slice of deliver's, unless it grew large.
func (k *Server) putPeerBatch(p *[]kv.Message) {
	if cap(*p) > 4096 {
		return
	}
	clear(*p)
	*p = (*p)[:0]
	k.peerBatches.Put(p)
}

type roundCommit struct{ round, seq uint64 }

// seqAt is the commit number everything up to round r is in. Rounds older
// than the entries kept were synced.
func (k *Server) seqAt(r uint64) uint64 {
	i := sort.Search(len(k.commits), func(i int) bool { return k.commits[i].round > r })
	if i == 0 {
		return 0
	}
	return k.commits[i-1].seq
}

// syncJob is a round's answers waiting for an fsync: they need no more
// than what was committed when they were queued.
type syncJob struct {
	msgs []kv.Message
}

// syncLoop is the group commit: while one fsync runs, the driver keeps
// stepping, and the rounds it commits meanwhile share the next fsync.
func (k *Server) syncLoop(ctx context.Context) {
	var t <-chan time.Time
	if k.periodic {
		tk := time.NewTicker(k.n.cfg.KVSyncPeriod)
		defer tk.Stop()
		t = tk.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t:
			if err := k.syncWAL(); err != nil {
				k.n.log.Error("kv: periodic sync failed", "err", err)
			}
		case j := <-k.syncq:
			jobs := []syncJob{j}
			for more := true; more; {
				select {
				case j := <-k.syncq:
					jobs = append(jobs, j)
				default:
					more = false
				}
			}
			// Every job queued so far waits for commits made before this
			// fsync, and so does everything committed up to now.
			upTo := k.committed.Load()
			if err := k.syncWAL(); err != nil {
				k.n.log.Error("kv: sync failed; dropping answers", "err", err)
				continue
			}
			k.synced.Store(upTo)
			for _, j := range jobs {
				k.dispatch(j.msgs)
			}
		}
	}
}

// syncWAL makes every round committed so far durable, and times it.
func (k *Server) syncWAL() error {
	start := time.Now()
	err := k.n.eng.SyncWAL()
	d := time.Since(start)
	k.n.m.kvSync.Observe(d.Seconds())
	if d >= slowStorage {
		k.n.log.Warn("kv: slow fsync", "took", d.Round(time.Millisecond))
	}
	return err
}

// slowStorage is how long a persist round or an fsync may take before the
// node logs it: every acknowledgement that vouches for it waits as long.
const slowStorage = 500 * time.Millisecond

// dispatch hands answers to local callers or sends them to peers.
func (k *Server) dispatch(msgs []kv.Message) {
	ob := outbox{}
	defer k.flush(ob)
	for i := range msgs {
		m := &msgs[i]
		if m.To == clientAddr {
			k.mu.Lock()
			ch := k.wait[m.ID]
			delete(k.wait, m.ID)
			k.mu.Unlock()
			switch {
			case ch != nil:
				if m.Trace != "" {
					k.n.log.Warn("kv: slow request", "err", m.Err, "trace", m.Trace)
				}
				ch <- *m
			case m.Err != "" || m.Trace != "":
				// Its caller gave up first: the log is where its outcome
				// (which replicas and views fell short) shows.
				k.n.log.Warn("kv: a request ended after its caller gave up", "err", m.Err, "trace", m.Trace)
			}
			continue
		}
		ob.add(m)
	}
}

// outbox gathers a round's messages by destination and lane, so that
// each peer's share leaves in one write, and data moving between replicas
// never queues in front of requests. The messages must stay valid until
// flush, which encodes each peer's share into one buffer.
type outbox map[outKey][]*kv.Message

type outKey struct {
	to   string
	lane transport.Lane
}

func (ob outbox) add(m *kv.Message) {
	key := outKey{m.To, transport.Foreground}
	if bulkKind(m.Kind) {
		key.lane = transport.Bulk
	}
	ob[key] = append(ob[key], m)
}

func (k *Server) flush(ob outbox) {
	for key, ms := range ob {
		size := 0
		for _, m := range ms {
			size += kv.EncodedSize(m)
		}
		buf := make([]byte, 0, size)
		frames := make([][]byte, 0, len(ms))
		for _, m := range ms {
			start := len(buf)
			buf = kv.AppendMessage(buf, m)
			frames = append(frames, buf[start:len(buf):len(buf)])
		}
		k.tr.SendBatchOn(key.lane, key.to, frames)
	}
}

// ErrQuorum is returned when a write or read did not reach its quorum.
var ErrQuorum = errors.New("quorum not reached")

// do runs one client request through the local coordinator.
func (k *Server) do(ctx context.Context, m kv.Message) (kv.Message, error) {
	if err := k.waitReady(ctx); err != nil {
		return kv.Message{}, err
	}
	if err := k.checkSpace(&m); err != nil {
		return kv.Message{}, err
	}
	start := time.Now()
	defer func() { k.n.m.kvLatency.Observe(time.Since(start).Seconds()) }()
	id := k.nextID.Add(1)
	m.ID, m.From = id, clientAddr
	ch := make(chan kv.Message, 1)
	k.mu.Lock()
	k.wait[id] = ch
	k.mu.Unlock()
	select {
	case k.inbox <- m:
	case <-ctx.Done():
		return kv.Message{}, ctx.Err()
	}
	select {
	case r := <-ch:
		return r, k.replyErr(r)
	case <-ctx.Done():
		k.mu.Lock()
		delete(k.wait, id)
		k.mu.Unlock()
		return kv.Message{}, gaveUp(m, ctx.Err())
	}
}

// gaveUp is the error of a request the caller stopped waiting for once
// the coordinator had it: a write may still take effect, and must not be
// reported as failed.
func gaveUp(m kv.Message, err error) error {
	if m.Kind == kv.KindClientPut || m.Kind == kv.KindClientCas {
		return fmt.Errorf("%w: write outcome unknown: no answer before the caller gave up (%v); the write may still take effect", ErrQuorum, err)
	}
	return err
}

// doBatch runs client requests through the local coordinator together:
// one timeout and one reply channel for all of them. errs[i] is the
// failure of ms[i], if any.
func (k *Server) doBatch(ctx context.Context, ms []kv.Message, st *batchState) ([]kv.Message, []error) {
	out := slices.Grow(st.out[:0], len(ms))[:len(ms)]
	errs := slices.Grow(st.errs[:0], len(ms))[:len(ms)]
	clear(out)
	clear(errs)
	st.out, st.errs = out, errs
	if err := k.waitReady(ctx); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return out, errs
	}
	start := time.Now()
	defer func() {
		// Each request of a batch waited as long as the batch: answers
		// come in bursts.
		d := time.Since(start).Seconds()
		for range ms {
			k.n.m.kvLatency.Observe(d)
		}
	}()
	// The reply channel is kept for the next batch of the connection,
	// unless this one times out: an answer may then still arrive in it.
	if cap(st.ch) < len(ms) {
		st.ch = make(chan kv.Message, max(len(ms), 16))
	}
	ch := st.ch
	if st.idx == nil {
		st.idx = make(map[uint64]int, len(ms))
	}
	idx := st.idx
	clear(idx)
	k.mu.Lock()
	for i := range ms {
		id := k.nextID.Add(1)
		ms[i].ID, ms[i].From = id, clientAddr
		k.wait[id] = ch
		idx[id] = i
	}
	k.mu.Unlock()
	// forget gives up on the requests not answered; handed says whether
	// the coordinator has them (a write's outcome is then unknown).
	forget := func(handed bool) {
		k.mu.Lock()
		for id := range idx {
			delete(k.wait, id)
		}
		k.mu.Unlock()
		for _, i := range idx {
			errs[i] = ctx.Err()
			if handed {
				errs[i] = gaveUp(ms[i], ctx.Err())
			}
		}
		st.ch = nil
		// The loop may not have stepped ms yet: the caller must not reuse
		// it.
		st.abandoned = true
	}
	select {
	case k.batches <- msgBatch{ms: ms}:
	case <-ctx.Done():
		forget(false)
		return out, errs
	}
	for range ms {
		var r kv.Message
		select {
		case r = <-ch: // answers come in bursts: most are waiting already
		default:
			select {
			case r = <-ch:
			case <-ctx.Done():
				forget(true)
				return out, errs
			}
		}
		i := idx[r.ID]
		delete(idx, r.ID)
		out[i], errs[i] = r, k.replyErr(r)
	}
	return out, errs
}

// batchState is what doBatch reuses from one batch of a connection to
// the next.
type batchState struct {
	out  []kv.Message
	errs []error
	ch   chan kv.Message
	idx  map[uint64]int
	// abandoned: the last batch timed out, and the loop may still read
	// its requests.
	abandoned bool
}

// waitReady holds client requests until the node knows the ring (at most
// readyWait): a standby that knows none answers at once.
func (k *Server) waitReady(ctx context.Context) error {
	select {
	case <-k.ready:
		return nil
	default:
	}
	if !k.n.cfg.KnowsRing() {
		return status.Errorf(http.StatusServiceUnavailable, "%v", status.ErrNoRing)
	}
	t := time.NewTimer(readyWait)
	defer t.Stop()
	select {
	case <-k.ready:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	return fmt.Errorf("%w: this node has not learned the ring yet", ErrQuorum)
}

// readyWait bounds how long a request waits for a starting node to learn
// the ring.
const readyWait = 10 * time.Second

func (k *Server) replyErr(r kv.Message) error {
	switch r.Err {
	case "":
		return nil
	case "value too large":
		return status.Errorf(413, "value larger than %d bytes", k.n.cfg.KV.MaxValue)
	}
	if strings.HasPrefix(r.Err, "disk full") {
		// Replicas refused it (kv.Node.Refuse): 507, as for this node's
		// own disk.
		return &status.Error{Code: http.StatusInsufficientStorage, Msg: r.Err}
	}
	return fmt.Errorf("%w: %s", ErrQuorum, r.Err)
}

// Put writes key=value (W overrides the write quorum when > 0) and returns
// the version written.
func (k *Server) Put(ctx context.Context, key, value []byte, w int) (uint64, error) {
	if len(value) > k.n.cfg.KV.MaxValue {
		return 0, status.Errorf(413, "value of %d bytes is larger than the limit of %d", len(value), k.n.cfg.KV.MaxValue)
	}
	r, err := k.do(ctx, kv.Message{Kind: kv.KindClientPut, Rec: kv.Record{Key: key, Value: value}, W: w})
	return r.Rec.Version, err
}

// Delete deletes key, leaving a tombstone.
func (k *Server) Delete(ctx context.Context, key []byte, w int) (uint64, error) {
	r, err := k.do(ctx, kv.Message{Kind: kv.KindClientPut, Rec: kv.Record{Key: key, Tomb: true}, W: w})
	return r.Rec.Version, err
}

// Get reads key (R overrides the read quorum when > 0).
func (k *Server) Get(ctx context.Context, key []byte, r int) (kv.Record, bool, error) {
	m, err := k.do(ctx, kv.Message{Kind: kv.KindClientGet, Rec: kv.Record{Key: key}, W: r})
	return m.Rec, m.Found, err
}

// Busy reports whether hand-offs are in flight.
func (k *Server) Busy() bool { return k.handingOff.Load() }

// Stats returns the KV layer's counters.
func (k *Server) Stats() kv.Stats { return *k.stats.Load() }

// SetRing hands the driver a new ring table; the first one, once the
// driver has installed it, also lets client requests through (until then
// the node knows only itself, and a write it coordinated would count
// itself as the whole preference list).
func (k *Server) SetRing(r kv.Ring) {
	k.rings <- r
}

// MemberLeft tells the KV layer that the member whose peer address is addr
// announced it left the ring after handing its data off, so that no view
// waits for it once the ring drops it (see kv.Node.MemberLeft). It gives
// up if ctx ends first.
func (k *Server) MemberLeft(ctx context.Context, addr string) error {
	select {
	case k.left <- addr:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Applied is the table the loop has handed to the kv.Node: the one
// requests are routed by (the latest SetRing may be a moment ahead).
func (k *Server) Applied() kv.Ring {
	if p := k.applied.Load(); p != nil {
		return *p
	}
	return nil
}

// regionRing is another region's member table, for the KV loop.
type regionRing struct {
	region string
	ring   kv.Ring
}

// SetRegionRing hands the loop the member table of another region; it
// gives up if ctx ends first.
func (k *Server) SetRegionRing(ctx context.Context, region string, r kv.Ring) error {
	select {
	case k.regionRings <- regionRing{region: region, ring: r}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RegionStatus reports the replication to each other region, as of the
// last few ticks.
func (k *Server) RegionStatus() []kv.RegionStatus {
	if p := k.regionStatus.Load(); p != nil {
		return *p
	}
	return nil
}

// Clear is the seed's clear_cache: storage is emptied between rounds of
// the loop, and the node forgets the hints and versions it kept of it.
func (k *Server) Clear(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case k.clears <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-done
}

// SetDraining counts this node out of every preference list (a leave, a
// remove_node) or back in; the ring tables it is given then leave it out.
func (k *Server) SetDraining(on bool) { k.drain.Store(on) }

// Draining reports whether SetDraining(true) holds.
func (k *Server) Draining() bool { return k.drain.Load() }

// Committed counts the rounds that wrote to storage.
func (k *Server) Committed() uint64 { return k.committed.Load() }

// Dropped counts inbound messages a full queue turned away.
func (k *Server) Dropped() int64 { return k.dropped.Load() }

// NewBatcher returns a Batcher for one client connection.
func (k *Server) NewBatcher() *Batcher { return &Batcher{k: k} }

// Batcher runs one client connection's batches (a RESP pipeline's GETs
// and SETs) through the coordinator, reusing its buffers from one batch
// to the next.
type Batcher struct {
	k  *Server
	st batchState
}

// Do runs ms together; errs[i] is the failure of ms[i], if any.
func (c *Batcher) Do(ctx context.Context, ms []kv.Message) ([]kv.Message, []error) {
	var full error
	for i := range ms {
		if full = c.k.checkSpace(&ms[i]); full != nil {
			break
		}
	}
	if full == nil {
		return c.k.doBatch(ctx, ms, &c.st)
	}
	// The disk is full: the writes are refused, the rest run.
	out, errs := make([]kv.Message, len(ms)), make([]error, len(ms))
	var rest []kv.Message
	var at []int
	for i := range ms {
		if ms[i].StoredBytes() > 0 {
			errs[i] = full
			continue
		}
		rest, at = append(rest, ms[i]), append(at, i)
	}
	if len(rest) > 0 {
		o, e := c.k.doBatch(ctx, rest, &c.st)
		for j, i := range at {
			out[i], errs[i] = o[j], e[j]
		}
	}
	return out, errs
}

// Abandoned reports, once, whether the last batch timed out while the
// loop could still read its requests: the caller must not reuse them.
func (c *Batcher) Abandoned() bool {
	a := c.st.abandoned
	c.st.abandoned = false
	return a
}

package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"tide/chord"
	"tide/kv"
	"tide/transport"
)

// member is one ring member as the KV layer sees it.
type member struct {
	ref   chord.Ref
	addrs map[string]string // http, peer, resp
}

// kvRing is a kv.Ring over a snapshot of the ring's members.
type kvRing struct {
	*kv.StaticRing
	members []member
}

// clientAddr is the address a node's own KV clients use; replies to it are
// handed to the waiting caller instead of the network.
const clientAddr = "local"

// kvNode drives a kv.Node: one goroutine steps it with messages from peers
// and local callers and ticks it, persists what it asks in one synced batch
// per round, and only then sends.
type kvNode struct {
	n     *Node
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
	rings   chan *kvRing
	ring    atomic.Pointer[kvRing]
	// regionRings carries other regions' member tables to the loop;
	// regionStatus is the replication to them, as of the last few ticks.
	regionRings  chan regionRing
	regionStatus atomic.Pointer[[]kv.RegionStatus]
	// watch wakes reads waiting for a key to be written (KVGetAtLeast).
	watch keyWatch
	// applied is the table the loop has handed to the kv.Node: the one
	// requests are routed by (ring may be a moment ahead of it).
	applied atomic.Pointer[kvRing]
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
}

func (n *Node) startKV(ctx context.Context, peerLn net.Listener) error {
	k := &kvNode{n: n, tr: &transport.Transport{OwnFrames: true}, inbox: make(chan kv.Message, 1<<16), batches: make(chan msgBatch, 1<<14), bulk: make(chan bulkMsg, 256), rings: make(chan *kvRing, 4), regionRings: make(chan regionRing, 4), clears: make(chan chan error), wait: map[uint64]chan kv.Message{},
		periodic: n.cfg.KVSync == "periodic", syncq: make(chan syncJob, 1<<14), ready: make(chan struct{}), closing: ctx.Done()}
	k.tr.Log = n.log
	k.tr.Alloc = k.frames.get
	pos := n.pos
	self := n.ring.Self()
	initial := &kvRing{StaticRing: kv.NewStaticRing(pos, []kv.Member{{Addr: n.peerAddr, Token: uint32(self.ID)}}),
		members: []member{{ref: self, addrs: n.addrs()}}}
	if !n.ring.InRing() {
		// A standby owns nothing, and knows no ring before its first walk.
		initial = &kvRing{StaticRing: kv.NewStaticRing(pos, nil)}
	}
	k.ring.Store(initial)
	hints, err := n.eng.hints()
	if err != nil {
		peerLn.Close()
		return err
	}
	k.node = kv.NewNode(n.cfg.KV, n.peerAddr, initial, kvStorage{n.eng}, func() uint64 { return uint64(time.Now().UnixNano()) }, hints)
	outbox, err := n.eng.outbox()
	if err != nil {
		peerLn.Close()
		return err
	}
	k.node.RestoreOutbox(outbox)
	st := k.node.RegionStatus()
	k.regionStatus.Store(&st)
	k.stats.Store(&kv.Stats{})
	if err := k.tr.ServeBatch(peerLn, k.deliver); err != nil {
		return err
	}
	n.kv = k
	n.wg.Add(3)
	go func() { defer n.wg.Done(); k.loop(ctx) }()
	go func() { defer n.wg.Done(); k.syncLoop(ctx) }()
	go func() { defer n.wg.Done(); n.ringLoop(ctx) }()
	if len(n.cfg.KV.Regions) > 0 {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.regionLoop(ctx) }()
	}
	return nil
}

// deliver hands the messages a peer sent together to the loop: requests
// and answers as one batch, so that one round steps them all and one
// fsync covers what they store (one at a time, a pipeline's writes to a
// replica could take two rounds and two fsyncs); data moving between
// replicas through the bulk lane.
func (k *kvNode) deliver(frames [][]byte) {
	var fg *[]kv.Message
	for _, f := range frames {
		m, err := kv.DecodeOwned(f) // the transport hands over each frame (OwnFrames)
		if err != nil {
			continue
		}
		if bulkKind(m.Kind) {
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

// deliverBulk queues a message of the bulk lane. Data moving between
// replicas arrives on a lane of its own (see flush): waiting here for room
// stops reading that connection alone, and TCP slows the sender down
// instead of losing chunks that anti-entropy would have to find again.
func (k *kvNode) deliverBulk(m kv.Message, frame []byte) {
	b := bulkMsg{m: m}
	if m.Kind == kv.KindPush {
		// A push's records alias its frame until the round that stores
		// them is persisted; then the frame is recycled.
		b.frame = frame
	}
	select {
	case k.bulk <- b:
	case <-k.closing:
		k.dropped.Add(1)
	}
}

// bulkKind reports whether messages of kind k move data between replicas
// (anti-entropy, hand-off, range streams) rather than serve requests.
func bulkKind(k kv.Kind) bool {
	switch k {
	case kv.KindPush, kv.KindPull, kv.KindPullRange, kv.KindDigest, kv.KindDigestResp, kv.KindKeys, kv.KindKeysResp, kv.KindOffer, kv.KindOfferResp:
		return true
	}
	return false
}

func (k *kvNode) loop(ctx context.Context) {
	defer k.tr.Close()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-k.rings:
			// A draining node's tables leave it out (see the walk);
			// until its leave ends or fails it acknowledges no write.
			k.node.SetLeaving(k.drain.Load())
			k.node.SetRing(r)
			k.applied.Store(r)
		case r := <-k.regionRings:
			k.node.SetRegionRing(r.region, r.ring)
		case done := <-k.clears:
			// The seed's clear_cache: storage is emptied between rounds,
			// and the node forgets the hints and versions it kept of it.
			k.node.Clear()
			done <- k.n.eng.clearKV()
		case b := <-k.bulk:
			// Data moving between replicas takes a round to itself, so
			// that client requests never queue behind more than a few
			// MiB of it; pushes waiting already join the round, so that
			// storage writes them in large files (see kvingest.go).
			k.stepBulk(b)
			size := pushBytes(b.m)
		more:
			for size < bulkRoundBytes {
				select {
				case b := <-k.bulk:
					k.stepBulk(b)
					size += pushBytes(b.m)
				default:
					break more
				}
			}
		case m := <-k.inbox:
			k.node.Step(m)
			k.stepped++
			k.stepMore()
		case b := <-k.batches:
			k.stepBatch(b)
			k.stepMore()
		case <-t.C:
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
		if k.stepped > 0 {
			k.n.m.kvRound.Observe(float64(k.stepped))
			k.stepped = 0
		}
		rd := k.node.Ready()
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
		k.flush(ob)
		committed := false
		if len(rd.Persist) > 0 {
			if err := k.n.eng.applyKV(rd.Persist, false); err != nil {
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
func (k *kvNode) stepMore() {
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
func (k *kvNode) stepBatch(b msgBatch) {
	for i := range b.ms {
		k.node.Step(b.ms[i])
	}
	k.stepped += len(b.ms)
	if b.pooled != nil {
		// Step keeps what it needs of a message, not the slice.
		k.putPeerBatch(b.pooled)
	}
}

// putPeerBatch recycles a slice of deliver's, unless it grew large.
func (k *kvNode) putPeerBatch(p *[]kv.Message) {
	if cap(*p) > 4096 {
		return
	}
	clear(*p)
	*p = (*p)[:0]
	k.peerBatches.Put(p)
}

// bulkMsg is an inbound message of the bulk lane, with the frame it was
// decoded from when that frame may be recycled after the round.
type bulkMsg struct {
	m     kv.Message
	frame []byte
}

// stepBulk steps b's message and keeps its frame for recycling.
func (k *kvNode) stepBulk(b bulkMsg) {
	k.node.Step(b.m)
	if b.frame != nil {
		k.recycle = append(k.recycle, b.frame)
	}
}

// bulkRoundBytes bounds the pushes one round takes.
const bulkRoundBytes = 8 << 20

func pushBytes(m kv.Message) int {
	n := 0
	for _, r := range m.Records {
		n += len(r.Key) + len(r.Value)
	}
	return n
}

type roundCommit struct{ round, seq uint64 }

// seqAt is the commit number everything up to round r is in. Rounds older
// than the entries kept were synced.
func (k *kvNode) seqAt(r uint64) uint64 {
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
func (k *kvNode) syncLoop(ctx context.Context) {
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
func (k *kvNode) syncWAL() error {
	start := time.Now()
	err := k.n.eng.syncWAL()
	k.n.m.kvSync.Observe(time.Since(start).Seconds())
	return err
}

// dispatch hands answers to local callers or sends them to peers.
func (k *kvNode) dispatch(msgs []kv.Message) {
	ob := outbox{}
	defer k.flush(ob)
	for i := range msgs {
		m := &msgs[i]
		if m.To == clientAddr {
			k.mu.Lock()
			ch := k.wait[m.ID]
			delete(k.wait, m.ID)
			k.mu.Unlock()
			if ch != nil {
				ch <- *m
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

func (k *kvNode) flush(ob outbox) {
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
func (k *kvNode) do(ctx context.Context, m kv.Message) (kv.Message, error) {
	if err := k.waitReady(ctx); err != nil {
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
	if m.Kind == kv.KindClientPut {
		return fmt.Errorf("%w: write outcome unknown: no answer before the caller gave up (%v); the write may still take effect", ErrQuorum, err)
	}
	return err
}

// doBatch runs client requests through the local coordinator together:
// one timeout and one reply channel for all of them. errs[i] is the
// failure of ms[i], if any.
func (k *kvNode) doBatch(ctx context.Context, ms []kv.Message, st *batchState) ([]kv.Message, []error) {
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
func (k *kvNode) waitReady(ctx context.Context) error {
	select {
	case <-k.ready:
		return nil
	default:
	}
	if !k.n.ring.InRing() && len(k.n.following()) == 0 && !k.n.leaving.Load() {
		return statusf(http.StatusServiceUnavailable, "%v", errNoRing)
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

func (k *kvNode) replyErr(r kv.Message) error {
	switch r.Err {
	case "":
		return nil
	case "value too large":
		return statusf(413, "value larger than %d bytes", k.n.cfg.KV.MaxValue)
	}
	return fmt.Errorf("%w: %s", ErrQuorum, r.Err)
}

// KVPut writes key=value (W overrides the write quorum when > 0) and returns
// the version written.
func (n *Node) KVPut(ctx context.Context, key, value []byte, w int) (uint64, error) {
	if len(value) > n.cfg.KV.MaxValue {
		return 0, statusf(413, "value of %d bytes is larger than the limit of %d", len(value), n.cfg.KV.MaxValue)
	}
	r, err := n.kv.do(ctx, kv.Message{Kind: kv.KindClientPut, Rec: kv.Record{Key: key, Value: value}, W: w})
	return r.Rec.Version, err
}

// KVDelete deletes key, leaving a tombstone.
func (n *Node) KVDelete(ctx context.Context, key []byte, w int) (uint64, error) {
	r, err := n.kv.do(ctx, kv.Message{Kind: kv.KindClientPut, Rec: kv.Record{Key: key, Tomb: true}, W: w})
	return r.Rec.Version, err
}

// KVGet reads key (R overrides the read quorum when > 0).
func (n *Node) KVGet(ctx context.Context, key []byte, r int) (kv.Record, bool, error) {
	m, err := n.kv.do(ctx, kv.Message{Kind: kv.KindClientGet, Rec: kv.Record{Key: key}, W: r})
	return m.Rec, m.Found, err
}

// KVOwner returns the member that owns key.
func (n *Node) KVOwner(key []byte) (member, error) {
	r := n.kv.ring.Load()
	pos := n.pos(key)
	ms := r.members
	if len(ms) == 0 {
		return member{}, statusf(http.StatusServiceUnavailable, "%v", errNoRing)
	}
	i := sort.Search(len(ms), func(i int) bool { return uint32(ms[i].ref.ID) >= pos })
	return ms[i%len(ms)], nil
}

// Addrs returns this node's service addresses by name: "chord", "http",
// "peer", "resp" (if served) and "region" (if set).
func (n *Node) Addrs() map[string]string {
	a := n.addrs()
	a["chord"] = n.ring.Self().Addr()
	return a
}

// addrs are this node's service addresses.
func (n *Node) addrs() map[string]string {
	a := map[string]string{"http": n.HTTPAddr(), "peer": n.peerAddr}
	if n.cfg.Region != "" {
		a["region"] = n.cfg.Region
	}
	if n.respAddr != "" {
		a["resp"] = n.respAddr
	}
	return a
}

// ringLoop keeps the KV layer's member table: a walk of the ring whenever
// this node's neighbourhood changes, when asked (RefreshRing), and every
// 60 seconds regardless.
func (n *Node) ringLoop(ctx context.Context) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	var lastEpoch uint64
	var lastWalk time.Time
	announced := false
	followUps := 0
	shrinkSeen := "" // a smaller table seen once, waiting for a second walk
	var lastHello time.Time
	helloFor := "" // the table the members were last told of
	cache := addrCache{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.ringKick:
			// Walk now and a few times more: pointers around a new
			// member take a few stabilization rounds to settle.
			followUps = 6
			lastWalk = time.Time{}
		}
		// Follow-up walks come quickly, so that the table catches up
		// with a change within a few stabilization rounds, not seconds.
		if followUps > 1 {
			t.Reset(200 * time.Millisecond)
		} else {
			t.Reset(time.Second)
		}
		// A member walks when its neighbourhood changed, a standby (whose
		// Chord node sees no changes) every few seconds; both at least
		// every minute, and whenever asked.
		period := time.Minute
		if !n.ring.InRing() {
			period = standbyWalk
		}
		if e := n.ring.Epoch(); e == lastEpoch && time.Since(lastWalk) < period && !lastWalk.IsZero() && followUps == 0 {
			continue
		} else {
			lastEpoch = e
		}
		if followUps > 0 {
			followUps--
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ms, err := n.walk(wctx, cache)
		cancel()
		if err != nil {
			n.log.Debug("ring walk failed; will retry", "err", err)
			continue
		}
		lastWalk = time.Now()
		if n.kv.drain.Load() || !n.ring.InRing() {
			// A draining node counts itself out; a node out of the ring
			// (it left while this walk ran) is never in its own table.
			ms = slices.DeleteFunc(ms, func(m member) bool { return m.ref == n.ring.Self() })
		}
		// A walk while successor pointers settle can skip a member. A
		// table that loses members is installed only when the next walk,
		// a second later, agrees: a replica must not hand off and drop
		// records because of one short walk.
		if cur := n.kv.ring.Load(); cur != nil && lostMembers(cur.members, ms) && !n.kv.drain.Load() {
			if f := fmtRing(ms); f != shrinkSeen {
				shrinkSeen = f
				followUps = max(followUps, 1)
				continue
			}
		}
		shrinkSeen = ""
		n.setMembers(ms)
		if standby := !n.ring.InRing(); standby && (time.Since(lastHello) >= standbyHello || fmtRing(ms) != helloFor) {
			// Tell the members this standby follows them, so that their
			// membership changes wait for it too.
			lastHello, helloFor = time.Now(), fmtRing(ms)
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			n.helloMembers(hctx, ms)
			cancel()
		}
		if !announced && len(ms) > 1 {
			// A node that joined tells every member at once, so that
			// distant nodes do not route by an old table until their next
			// periodic walk.
			announced = true
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			n.announceRingChange(actx)
			cancel()
		}
	}
}

// lostMembers reports whether next lacks a member of cur.
func lostMembers(cur, next []member) bool {
	have := map[chord.Ref]bool{}
	for _, m := range next {
		have[m.ref] = true
	}
	for _, m := range cur {
		if !have[m.ref] {
			return true
		}
	}
	return false
}

// setMembers installs a new member table in the KV layer.
func (n *Node) setMembers(ms []member) {
	var kms []kv.Member
	for _, m := range ms {
		kms = append(kms, kv.Member{Addr: m.addrs["peer"], Token: uint32(m.ref.ID)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ref.ID < ms[j].ref.ID })
	r := &kvRing{StaticRing: kv.NewStaticRing(n.pos, kms), members: ms}
	old := n.kv.ring.Swap(r)
	if old == nil || fmtRing(old.members) != fmtRing(ms) {
		n.log.Info("kv ring changed", "members", len(ms))
	}
	n.kv.rings <- r
	n.kv.readyOnce.Do(func() { close(n.kv.ready) })
}

func fmtRing(ms []member) string {
	s := ""
	for _, m := range ms {
		s += m.ref.String() + ";"
	}
	return s
}

// standbyWalk is how often a standby walks the ring it follows.
const standbyWalk = 5 * time.Second

// walk follows successor pointers around the ring from this node, or for a
// standby from a member it follows.
func (n *Node) walk(ctx context.Context, cache addrCache) ([]member, error) {
	if !n.ring.InRing() && !n.leaving.Load() {
		return n.walkFollowed(ctx, cache)
	}
	self := n.ring.Self()
	out := []member{{ref: self, addrs: n.addrs()}}
	seen := map[chord.Ref]bool{self: true}
	cur := n.ring.Successor(0)
	for range 4096 {
		if seen[cur] || cur.IsZero() {
			break
		}
		seen[cur] = true
		a, err := n.addrsOf(ctx, cur, cache)
		if err != nil {
			return nil, err
		}
		if a["peer"] != "" {
			out = append(out, member{ref: cur, addrs: a})
		}
		next, err := n.rpc.CallRef(ctx, cur.Addr(), "get_successor", 0)
		if err != nil {
			return nil, fmt.Errorf("successor of %s: %w", cur.Addr(), err)
		}
		cur = next
	}
	return out, nil
}

// RefreshRing asks for an immediate walk of the ring.
func (n *Node) RefreshRing() {
	select {
	case n.ringKick <- struct{}{}:
	default:
	}
}

// busy reports whether hand-offs are in flight.
func (k *kvNode) busy() bool { return k.handingOff.Load() }

// KVStats returns the KV layer's counters.
func (n *Node) KVStats() kv.Stats { return *n.kv.stats.Load() }

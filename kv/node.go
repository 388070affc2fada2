package kv

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
)

type op struct {
	write     bool
	client    string
	clientID  uint64
	rec       Record // write: the record; read: Key only
	replicas  []string
	answered  addrSet
	got       gotSet // read: each replica's record (nil: not found)
	need      int
	start     int
	lastSend  int
	replied   bool
	hint      *Hint // a hint delivery
	writeback bool  // read: the newest version is being written back
	// wbRec is the record last written back; wbSent lists the write-backs
	// each replica has not acknowledged yet, oldest first. A replica
	// answers in the order it was sent to, so an acknowledgement vouches
	// for the oldest write-back sent to its replica.
	wbRec    Record
	wbSent   []wbSent
	sets     [][]string // the preference lists of every ring view in the transition window; quorums count in each
	fallback bool       // read: the node after the preference list was asked
	extra    string     // read: that node, until it answers or is given up on
	extraAt  int
	spare    []string // read: replicas not asked yet (see Config.SpeculateTicks)
	round    uint64   // write: the round of the coordinator's own copy
	push     *strayPush
	resends  int // times the requests of this op were sent again
	// room for answered and got, enough for most ops
	answeredBuf [4]string
	gotBuf      [4]gotEntry
}

// wbSent is a record written back to a replica by a read.
type wbSent struct {
	addr string
	rec  Record
}

// addrSet is a small set of node addresses, a few preference lists' worth:
// a slice searched in order beats a map at that size.
type addrSet []string

func (s addrSet) has(a string) bool { return slices.Contains(s, a) }

func (s *addrSet) add(a string) {
	if !s.has(a) {
		*s = append(*s, a)
	}
}

// gotSet is what each replica answered to a read.
type gotSet []gotEntry

type gotEntry struct {
	addr string
	rec  *Record // nil: not found
}

// get returns what a answered (nil: not found), and whether it answered.
func (g gotSet) get(a string) (*Record, bool) {
	for _, e := range g {
		if e.addr == a {
			return e.rec, true
		}
	}
	return nil, false
}

func (g *gotSet) set(a string, r *Record) {
	for i := range *g {
		if (*g)[i].addr == a {
			(*g)[i].rec = r
			return
		}
	}
	*g = append(*g, gotEntry{a, r})
}

// prevView is a ring view replaced within the transition window (see
// Node.prev).
type prevView struct {
	ring  Ring
	until int
	// gone lists the view's members that are no longer in the ring. They
	// handed their data off before they left (or crashed, and cannot
	// answer), so the view's quorums do not wait for them.
	gone []string
}

// preference is the view's preference list of pos without the members
// that have left.
func (p prevView) preference(pos uint32, n int) []string {
	s := p.ring.Preference(pos, n)
	if len(p.gone) == 0 || !slices.ContainsFunc(s, func(a string) bool { return slices.Contains(p.gone, a) }) {
		return s
	}
	out := make([]string, 0, len(s))
	for _, a := range s {
		if !slices.Contains(p.gone, a) {
			out = append(out, a)
		}
	}
	return out
}

// rangeSend is a whole range of records owed to a peer that holds none of
// it (a node that just joined, or an empty replica). It is read and sent
// as a stream of chunks of about rangeChunk bytes, each acknowledged once
// the peer has stored it. At most rangeWindow bytes per peer are out at a
// time: a sender reads no faster than its peer stores, and a stream holds
// a few MiB in memory, not its whole range.
type rangeSend struct {
	to     string
	lo, hi uint32
	next   uint32               // the next chunk starts after this position
	done   bool                 // the last chunk has been read
	out    map[uint64]chunkSent // chunks sent and not yet acknowledged, by ID
}

// inboundStream names a range stream coming in: its sender and the start
// of its range (the end grows when the sender adds the next bucket).
type inboundStream struct {
	from string
	lo   uint32
}

type chunkSent struct {
	at   int // the tick it left
	size int64
}

const (
	// rangeChunk is the size of one chunk (KindPush) of a range send.
	rangeChunk = 1 << 20
	// rangeWindow bounds the bytes of range chunks unacknowledged by one
	// peer. It spans a few of the receiver's rounds (which take up to
	// 8 MiB of pushes each), so that the receiver never waits for data.
	rangeWindow = 16 << 20
)

// strayPush is a batch of records this node holds but no longer replicates,
// on its way to the nodes that do.
type strayPush struct {
	recs    []Record
	targets []string
}

// Stats counts what a node did, for metrics and tests.
type Stats struct {
	Writes, Reads, WriteFailures, ReadFailures     int
	ReadRepairs, HintsHeld, HintsDelivered         int
	Pushed, Pulled, HandedOff, TombstonesCollected int
	PushedBytes                                    int64
	// RangesAbandoned counts range streams given up because a chunk went
	// unacknowledged (see expireRanges).
	RangesAbandoned int
	// VersionHits counts writes whose version was compared from the
	// version cache; VersionMisses those that read storage to compare.
	VersionHits, VersionMisses int
	// Resends counts client requests (and read write-backs) sent to a
	// replica again because it had not answered within ResendTicks.
	Resends int
}

// Node is one member of the replicated KV: a coordinator for client
// requests it receives, a replica for the keys it holds, and an
// anti-entropy peer of its ring neighbours.
type Node struct {
	cfg   Config
	self  string
	ring  Ring
	st    Storage
	clock func() uint64

	now     int
	round   uint64 // rounds are numbered by Ready
	nextID  uint64
	last    uint64
	rd      Ready
	spare   Ready // buffers of a released Ready, for the next round
	pending map[string]Record
	// vcache is the version cache (see remember): the version and size of
	// recently stored records, by key, up to Config.VersionCache of them.
	vcache map[string]vmeta
	gone   map[string]bool // keys deleted in this round (see local)
	ops    map[uint64]*op
	hints  map[string]map[string]Record // target -> key -> record
	// outReqs gathers this round's client writes and reads to each
	// replica, in the order replicas were first sent to (outOrder); they
	// leave as one KindPutBatch or KindGetBatch per replica and run of
	// the same kind (see queueReq). reqBatches are the batches sent and
	// not yet answered, by ID.
	outReqs    map[string]*reqGather
	outOrder   []string
	reqBatches map[uint64]reqBatch

	lastHint    int
	lastSync    int
	syncPeer    int
	lastMembers string
	lastStray   int
	strayBusy   bool
	salt        uint64
	migrations  []Message // anti-entropy and hand-off sends waiting for budget
	migBudget   int64     // bytes they may send now; negative after an overdraft
	scanDebt    int64     // bytes background scans read, not yet paid off
	// rangeSends are the range streams owed to peers, oldest first; a
	// stream stays until its last chunk is acknowledged. While any is
	// there, this node does not compare ranges again: the receiver is
	// still storing what the last comparison found missing, and a
	// comparison now would find it missing again and resend it.
	rangeSends []*rangeSend
	chunksOut  map[uint64]*rangeSend // the stream of each chunk out
	// inbound are the range streams coming in, with the tick of their
	// latest chunk. While any is, this node does not compare ranges: a
	// comparison would find the rest of the stream missing, and fetch
	// it a second time.
	inbound    map[inboundStream]int
	windowOut  map[string]int64  // bytes of chunks out, by peer
	pulling    map[[2]uint32]int // ranges asked of a peer with KindPullRange, and when
	lastPushIn int               // tick of the last KindPush received
	// ringChangedAt is the tick of the last change of the member table.
	// Records are handed off (and dropped) only once the table has been
	// stable for HandOffTicks: a table that flaps while pointers settle
	// must not make a replica drop what it replicates.
	ringChangedAt int
	// prev are the ring views replaced within the last TransitionTicks.
	// Until they expire, quorums must be met in the preference list of
	// every view as well as the current one: a write acknowledged under
	// an older view is then seen by a read under the newer one, and the
	// other way round, while data moves.
	prev     []prevView
	diverged bool // the last comparison found differences
	// marks holds, for each of the last SettleTicks+1 ticks, the newest
	// version this node had seen or could mint then (see horizon).
	marks    []uint64
	bulkFrom string // the sender of the push being applied (PersistOp.Bulk)
	Stats    Stats
}

// NewNode returns a node at self. clock gives physical time in
// nanoseconds for versions; hints are the hints it persisted before a
// restart.
func NewNode(cfg Config, self string, ring Ring, st Storage, clock func() uint64, hints []Hint) *Node {
	h := fnv.New64a()
	h.Write([]byte(self))
	n := &Node{cfg: cfg.withDefaults(), self: self, ring: ring, st: st, clock: clock, salt: h.Sum64() & 0xff,
		pending: map[string]Record{}, gone: map[string]bool{}, ops: map[uint64]*op{}, hints: map[string]map[string]Record{}}
	for _, h := range hints {
		n.holdHint(h, false)
	}
	return n
}

// SetRing replaces the node's view of the ring (membership changed, or the
// node is draining and must count itself out).
//
// A view replaced by one that adds a member stays in the transition window
// (see Node.prev). A member that leaves is dropped from every view of the
// window at once, not only from the view replaced: a departing node hands
// its data off before it leaves, and a view that still waited for it would
// stall every request whose preference list named it until the view
// expired.
func (n *Node) SetRing(r Ring) {
	oldRing := n.ring
	old := fmtMembers(oldRing.Members())
	n.ring = r
	if m := fmtMembers(r.Members()); m != old {
		n.ringChangedAt = n.now
		prev := oldRing
		if len(oldRing.Members()) <= 1 {
			// This node's first real view: the ring as it was before this
			// node joined is the view other coordinators may still use.
			var ms []Member
			for _, mb := range r.Members() {
				if mb.Addr != n.self {
					ms = append(ms, mb)
				}
			}
			prev = NewStaticRing(r.Position, ms)
		}
		if joined(prev.Members(), r.Members()) && len(prev.Members()) > 0 {
			n.prev = append(n.prev, prevView{ring: prev, until: n.now + n.cfg.TransitionTicks})
		}
		live := n.prev[:0]
		for _, p := range n.prev {
			p.gone = p.gone[:0]
			for _, mb := range p.ring.Members() {
				if !hasAddr(r.Members(), mb.Addr) && !slices.Contains(p.gone, mb.Addr) {
					p.gone = append(p.gone, mb.Addr)
				}
			}
			if len(p.gone) < len(distinctAddrs(p.ring.Members())) {
				live = append(live, p)
			}
		}
		clear(n.prev[len(live):])
		n.prev = live
	}
	if fmtMembers(r.Members()) != n.lastMembers {
		n.lastSync = n.now - n.cfg.SyncTicks // compare at the next tick, hand off once the ring is stable
	}
}

// joined reports whether next has a member (by address) that prev lacks.
func joined(prev, next []Member) bool {
	for _, m := range next {
		if !hasAddr(prev, m.Addr) {
			return true
		}
	}
	return false
}

func hasAddr(ms []Member, addr string) bool {
	return slices.ContainsFunc(ms, func(m Member) bool { return m.Addr == addr })
}

func distinctAddrs(ms []Member) []string {
	var out []string
	for _, m := range ms {
		if !slices.Contains(out, m.Addr) {
			out = append(out, m.Addr)
		}
	}
	return out
}

func (n *Node) send(m Message) {
	if len(n.outOrder) > 0 {
		// Requests queued for m.To leave first: a replica sees a node's
		// messages in the order the node sent them.
		if g := n.outReqs[m.To]; g != nil && len(g.ops) > 0 {
			n.sendReqs(m.To, g)
		}
	}
	n.emit(m)
}

// emit adds m to this round's output.
func (n *Node) emit(m Message) {
	m.From = n.self
	n.rd.Messages = append(n.rd.Messages, m)
}

// migrate sends data that moves between replicas (anti-entropy, hand-off)
// within the per-tick budget; the rest waits for the next ticks.
func (n *Node) migrate(m Message) {
	if n.cfg.MigrationBytesPerTick <= 0 {
		n.send(m)
		return
	}
	n.migrations = append(n.migrations, m)
}

func recordsSize(rs []Record) int64 {
	var s int64
	for _, r := range rs {
		s += int64(len(r.Key) + len(r.Value) + 16)
	}
	return s
}

// reqGather is a run of client requests of one kind (KindPut or KindGet)
// to one replica, this round.
type reqGather struct {
	kind  Kind
	recs  []Record // KindPut: the records; KindGet: the keys, in Key
	ops   []uint64
	bytes int
}

// reqBatch is a KindPutBatch or KindGetBatch sent: the ops it carries
// requests of, in order, and the tick it left.
type reqBatch struct {
	ops []uint64
	at  int
}

// maxReqBatch bounds the record bytes of one batch.
const maxReqBatch = 1 << 20

// queueReq adds a client write (KindPut of rec) or read (KindGet of
// rec.Key) of op id to what this round sends replica to: one message per
// replica per round instead of one per request, and one answer. A request
// of the other kind than those queued sends them first, so that the
// replica sees every request in the order it was made.
func (n *Node) queueReq(kind Kind, to string, id uint64, rec Record) {
	if n.outReqs == nil {
		n.outReqs = map[string]*reqGather{}
	}
	g := n.outReqs[to]
	if g == nil {
		g = &reqGather{}
		n.outReqs[to] = g
	}
	if len(g.ops) > 0 && g.kind != kind {
		n.sendReqs(to, g)
	}
	if len(g.ops) == 0 {
		n.outOrder = append(n.outOrder, to)
	}
	g.kind = kind
	g.recs = append(g.recs, rec)
	g.ops = append(g.ops, id)
	g.bytes += len(rec.Key) + len(rec.Value)
	if g.bytes >= maxReqBatch {
		n.sendReqs(to, g)
	}
}

// flushReqs sends the requests queued this round.
func (n *Node) flushReqs() {
	for _, to := range n.outOrder {
		if g := n.outReqs[to]; len(g.ops) > 0 {
			n.sendReqs(to, g)
		}
	}
	n.outOrder = n.outOrder[:0]
}

// sendReqs sends g's requests to replica to: a lone one as a KindPut or
// KindGet of its op, several as a KindPutBatch or KindGetBatch.
func (n *Node) sendReqs(to string, g *reqGather) {
	switch {
	case len(g.ops) == 1 && g.kind == KindGet:
		n.emit(Message{Kind: KindGet, To: to, ID: g.ops[0], Rec: Record{Key: g.recs[0].Key}})
	case len(g.ops) == 1:
		n.emit(Message{Kind: KindPut, To: to, ID: g.ops[0], Rec: g.recs[0]})
	default:
		n.nextID++
		if n.reqBatches == nil {
			n.reqBatches = map[uint64]reqBatch{}
		}
		n.reqBatches[n.nextID] = reqBatch{ops: g.ops, at: n.now}
		m := Message{Kind: KindPutBatch, To: to, ID: n.nextID, Records: g.recs}
		if g.kind == KindGet {
			keys := make([][]byte, len(g.recs))
			for i := range g.recs {
				keys[i] = g.recs[i].Key
			}
			m = Message{Kind: KindGetBatch, To: to, ID: n.nextID, Keys: keys}
		}
		n.emit(m)
		// The message and the batch keep their slices: g starts new
		// ones.
		g.recs, g.ops, g.bytes = nil, nil, 0
		return
	}
	g.recs, g.ops, g.bytes = g.recs[:0], g.ops[:0], 0
}

// answeredBatch forgets batch id, answered, and returns the ops it
// carried requests of, in order (none if the batch is unknown: answered
// already, or timed out).
func (n *Node) answeredBatch(id uint64) []uint64 {
	b := n.reqBatches[id]
	delete(n.reqBatches, id)
	return b.ops
}

// Ready returns and clears the pending output of this round.
func (n *Node) Ready() Ready {
	n.flushReqs()
	rd := n.rd
	rd.Round = n.round
	n.round++
	n.rd = Ready{Messages: n.spare.Messages, Persist: n.spare.Persist}
	n.spare = Ready{}
	clear(n.pending)
	clear(n.gone)
	return rd
}

// Release hands back a Ready the driver is done with (its messages sent
// or copied, its ops persisted), so that a later round reuses its buffers
// instead of growing new ones. Calling it is optional.
func (n *Node) Release(rd Ready) {
	clear(rd.Messages)
	clear(rd.Persist)
	n.spare = Ready{Messages: rd.Messages[:0], Persist: rd.Persist[:0]}
}

// version hands out a hybrid logical clock timestamp: physical time, never
// behind any version seen, with this node's salt in the low 8 bits so that
// two coordinators cannot mint the same version for different writes.
func (n *Node) version() uint64 {
	n.last = max(n.clock()&^0xff, (n.last&^0xff)+0x100) | n.salt
	return n.last
}

func (n *Node) observe(v uint64) { n.last = max(n.last, v) }

// local returns this node's record of key, including writes persisted in
// the current round.
func (n *Node) local(key []byte) (Record, bool) {
	if r, ok := n.pending[string(key)]; ok {
		return r, true
	}
	if n.gone[string(key)] {
		return Record{}, false
	}
	r, ok, err := n.st.Get(key)
	if err != nil {
		return Record{}, false
	}
	return r, ok
}

// apply stores r if it is newer than what this node holds.
func (n *Node) apply(r Record) bool {
	n.observe(r.Version)
	var had bool
	var hadBytes int64
	if m, ok := n.vcache[string(r.Key)]; ok && m.version != r.Version {
		// Known without reading storage. (Equal versions are ordered by
		// value, which the cache does not keep.)
		n.Stats.VersionHits++
		if r.Version < m.version {
			return false
		}
		had, hadBytes = true, m.size
	} else {
		n.Stats.VersionMisses++
		cur, ok := n.local(r.Key)
		if ok && !r.Newer(cur) {
			return false
		}
		had, hadBytes = ok, cur.Size()
	}
	rc := r
	ks := string(r.Key) // one copy of the key for both maps
	n.pending[ks] = rc
	delete(n.gone, ks)
	n.remember(ks, r)
	n.rd.Persist = append(n.rd.Persist, PersistOp{Put: &rc, Had: had, HadBytes: hadBytes, Bulk: n.bulkFrom})
	return true
}

// vmeta is what the version cache keeps of a stored record.
type vmeta struct {
	version uint64
	size    int64 // key and value bytes (Record.Size)
}

// remember notes the version of a record being stored, so that the next
// write of its key need not read storage to compare versions. Tombstones
// are not kept: storage may collect one as it writes it.
func (n *Node) remember(ks string, r Record) {
	if n.cfg.VersionCache < 0 {
		return
	}
	if r.Tomb {
		delete(n.vcache, ks)
		return
	}
	if n.vcache == nil {
		n.vcache = make(map[string]vmeta)
	}
	if _, ok := n.vcache[ks]; !ok && len(n.vcache) >= n.cfg.VersionCache {
		// Full: drop a sixteenth, wherever map iteration starts.
		drop := max(len(n.vcache)/16, 1)
		for k := range n.vcache {
			delete(n.vcache, k)
			if drop--; drop == 0 {
				break
			}
		}
	}
	n.vcache[ks] = vmeta{r.Version, r.Size()}
}

// Clear forgets the hints this node holds and the versions it cached: the
// driver calls it when it empties the node's storage (the Dynamo seed's
// clear_cache), and persists nothing for it.
func (n *Node) Clear() {
	clear(n.hints)
	clear(n.vcache)
}

// ForgetVersions empties the version cache. The driver calls it when
// persisting a round failed: the cache then runs ahead of storage.
func (n *Node) ForgetVersions() { clear(n.vcache) }

// forget deletes r's key entirely, in this round.
func (n *Node) forget(r Record) {
	n.rd.Persist = append(n.rd.Persist, PersistOp{Delete: r.Key, Had: true, HadBytes: r.Size()})
	delete(n.pending, string(r.Key))
	delete(n.vcache, string(r.Key))
	n.gone[string(r.Key)] = true
}

// Step handles one message.
func (n *Node) Step(m Message) {
	switch m.Kind {
	case KindClientPut:
		n.clientPut(m)
	case KindClientGet:
		n.clientGet(m)
	case KindPut:
		n.apply(m.Rec)
		if m.ID != 0 {
			n.send(Message{Kind: KindPutAck, To: m.From, ID: m.ID})
		}
	case KindPutAck:
		n.onPutAck(m.ID, m.From)
	case KindPutBatch:
		for _, r := range m.Records {
			n.apply(r)
		}
		n.send(Message{Kind: KindPutBatchAck, To: m.From, ID: m.ID})
	case KindPutBatchAck:
		for _, id := range n.answeredBatch(m.ID) {
			n.onPutAck(id, m.From)
		}
	case KindGetBatch:
		recs := make([]Record, len(m.Keys))
		for i, k := range m.Keys {
			if r, ok := n.local(k); ok {
				recs[i] = r
			} else {
				recs[i] = Record{Key: k} // version 0: not held
			}
		}
		n.send(Message{Kind: KindGetBatchResp, To: m.From, ID: m.ID, Records: recs})
	case KindGetBatchResp:
		for i, id := range n.answeredBatch(m.ID) {
			if i < len(m.Records) {
				r := m.Records[i]
				n.onGetResp(id, m.From, r, r.Version != 0)
			}
		}
	case KindGet:
		r, ok := n.local(m.Rec.Key)
		n.send(Message{Kind: KindGetResp, To: m.From, ID: m.ID, Rec: r, Found: ok})
	case KindGetResp:
		n.onGetResp(m.ID, m.From, m.Rec, m.Found)
	case KindDigest:
		n.send(Message{Kind: KindDigestResp, To: m.From, Lo: m.Lo, Hi: m.Hi, Buckets: m.Buckets, Horizon: m.Horizon, Hashes: n.digest(m.Lo, m.Hi, m.Buckets, m.Horizon)})
	case KindDigestResp:
		n.onDigestResp(m)
	case KindKeys:
		n.send(Message{Kind: KindKeysResp, To: m.From, Lo: m.Lo, Hi: m.Hi, Horizon: m.Horizon, Versions: n.versions(m.Lo, m.Hi)})
	case KindKeysResp:
		n.onKeysResp(m)
	case KindPush:
		n.lastPushIn = n.now
		if m.Lo != m.Hi { // a chunk of a range stream
			k := inboundStream{m.From, m.Lo}
			if m.Found {
				delete(n.inbound, k)
			} else {
				if n.inbound == nil {
					n.inbound = map[inboundStream]int{}
				}
				n.inbound[k] = n.now
			}
		}
		n.bulkFrom = m.From
		for _, r := range m.Records {
			n.apply(r)
		}
		n.bulkFrom = ""
		if m.ID != 0 {
			n.send(Message{Kind: KindPushAck, To: m.From, ID: m.ID})
		}
	case KindPushAck:
		n.onPushAck(m)
	case KindOffer:
		// Answered once what this round stored is durable (AfterPersist):
		// the sender drops its copies of every key not asked for.
		var want [][]byte
		for _, v := range m.Versions {
			cur, ok := n.local(v.Key)
			if !ok || (Record{Version: v.Version, Tomb: v.Tomb}).Newer(cur) {
				want = append(want, v.Key)
			}
		}
		n.send(Message{Kind: KindOfferResp, To: m.From, ID: m.ID, Keys: want})
	case KindOfferResp:
		n.onOfferResp(m)
	case KindPullRange:
		// Sent at the next tick: a comparison asks for each bucket it
		// lacks in a message of its own, and those that arrive meanwhile
		// join one stream.
		n.queueRange(m.From, m.Lo, m.Hi)
	case KindPull:
		var recs []Record
		for _, k := range m.Keys {
			if r, ok := n.local(k); ok {
				recs = append(recs, r)
			}
		}
		if len(recs) > 0 {
			n.Stats.Pushed += len(recs)
			n.Stats.PushedBytes += recordsSize(recs)
			n.migrate(Message{Kind: KindPush, To: m.From, Records: recs})
		}
	}
}

// prefSets returns the preference lists of pos under the current view and
// every view still in its transition window, the current one first, and
// their union.
func (n *Node) prefSets(pos uint32) ([][]string, []string) {
	cur := n.ring.Preference(pos, n.cfg.N)
	sets := [][]string{cur}
	union := slices.Clip(cur) // copied below before anything is added
	live := n.prev[:0]
	for _, p := range n.prev {
		if n.now >= p.until {
			continue
		}
		live = append(live, p)
		s := p.preference(pos, n.cfg.N)
		if len(s) == 0 || slices.Equal(s, cur) {
			continue
		}
		sets = append(sets, s)
		for _, a := range s {
			if !slices.Contains(union, a) {
				union = append(slices.Clip(union), a)
			}
		}
	}
	n.prev = live
	return sets, union
}

// quorumIn reports whether, in every set, at least min(q, len(set))
// members satisfy has.
func quorumIn(sets [][]string, q int, has func(string) bool) bool {
	for _, set := range sets {
		c := 0
		for _, a := range set {
			if has(a) {
				c++
			}
		}
		if c < min(q, len(set)) {
			return false
		}
	}
	return true
}

func (n *Node) newOp(o *op) uint64 {
	n.nextID++
	o.start, o.lastSend = n.now, n.now
	o.answered = o.answeredBuf[:0]
	n.ops[n.nextID] = o
	return n.nextID
}

func (n *Node) reply(o *op, m Message) {
	if o.replied || o.client == "" {
		o.replied = true
		return
	}
	o.replied = true
	m.Kind, m.To, m.ID = KindClientResp, o.client, o.clientID
	n.send(m)
}

func (n *Node) clientPut(m Message) {
	if len(m.Rec.Value) > n.cfg.MaxValue {
		n.send(Message{Kind: KindClientResp, To: m.From, ID: m.ID, Err: "value too large"})
		return
	}
	rec := Record{Key: m.Rec.Key, Value: m.Rec.Value, Tomb: m.Rec.Tomb, Version: n.version()}
	if rec.Tomb {
		rec.Value = nil
	}
	w := n.cfg.W
	if m.W > 0 {
		w = min(m.W, n.cfg.N)
	}
	sets, reps := n.prefSets(n.ring.Position(rec.Key))
	o := &op{write: true, client: m.From, clientID: m.ID, rec: rec, replicas: reps, sets: sets, need: w, round: n.round}
	id := n.newOp(o)
	n.Stats.Writes++
	for _, r := range reps {
		if r == n.self {
			n.apply(rec)
			o.answered.add(r)
		} else {
			n.queueReq(KindPut, r, id, rec)
		}
	}
	n.checkWrite(id, o)
}

func (n *Node) checkWrite(id uint64, o *op) {
	if !o.replied && quorumIn(o.sets, o.need, func(a string) bool { return o.answered.has(a) }) {
		// The acknowledgement vouches for the replicas' copies, each
		// durable before it was acknowledged, and for this node's own,
		// durable once the round that stored it is.
		n.reply(o, Message{Rec: Record{Key: o.rec.Key, Version: o.rec.Version}, Found: true, dep: o.round + 1})
	}
	if len(o.answered) == len(o.replicas) {
		delete(n.ops, id)
	}
}

// onPutAck notes that replica from stored the write of op id.
func (n *Node) onPutAck(id uint64, from string) {
	o := n.ops[id]
	if o == nil {
		return
	}
	switch {
	case o.hint != nil:
		delete(n.ops, id)
		h := *o.hint
		if cur, ok := n.hints[h.Target][string(h.Rec.Key)]; ok && cur.Version == h.Rec.Version {
			delete(n.hints[h.Target], string(h.Rec.Key))
			n.rd.Persist = append(n.rd.Persist, PersistOp{DoneHint: &h})
			n.Stats.HintsDelivered++
		}
	case o.write:
		o.answered.add(from)
		n.checkWrite(id, o)
	case o.writeback:
		for i, w := range o.wbSent {
			if w.addr != from {
				continue
			}
			o.wbSent = slices.Delete(o.wbSent, i, i+1)
			if cur, _ := o.got.get(from); cur == nil || w.rec.Newer(*cur) {
				r := w.rec
				o.got.set(from, &r)
			}
			n.checkRead(id, o)
			break
		}
	}
}

func (n *Node) clientGet(m Message) {
	r := n.cfg.R
	if m.W > 0 {
		r = min(m.W, n.cfg.N)
	}
	sets, reps := n.prefSets(n.ring.Position(m.Rec.Key))
	o := &op{client: m.From, clientID: m.ID, rec: Record{Key: m.Rec.Key}, replicas: reps, sets: sets, need: r}
	o.got = o.gotBuf[:0]
	// The write-back of a read needs W holders among the replicas it
	// asked; a read quorum smaller than W asks everyone.
	if !n.cfg.ReadAll && r >= n.cfg.W {
		o.replicas, o.spare = readSet(n.self, sets, reps, r)
	}
	id := n.newOp(o)
	n.Stats.Reads++
	for _, rep := range o.replicas {
		if rep == n.self {
			if rec, ok := n.local(m.Rec.Key); ok {
				o.got.set(rep, &rec)
			} else {
				o.got.set(rep, nil)
			}
			o.answered.add(rep)
		} else {
			n.queueReq(KindGet, rep, id, Record{Key: m.Rec.Key})
		}
	}
	n.checkRead(id, o)
}

// onGetResp notes replica from's answer to read op id: rec if found.
func (n *Node) onGetResp(id uint64, from string, rec Record, found bool) {
	o := n.ops[id]
	if o == nil || o.write || o.answered.has(from) {
		return
	}
	o.answered.add(from)
	if found {
		o.got.set(from, &rec)
		n.observe(rec.Version)
	} else {
		o.got.set(from, nil)
	}
	n.checkRead(id, o)
}

// readSet splits reps into the replicas a read asks first, the fewest
// that make a quorum of r in every set (self first, then in order), and
// the rest.
func readSet(self string, sets [][]string, reps []string, r int) (ask, spare []string) {
	in := func(a string) bool { return slices.Contains(ask, a) }
	if slices.Contains(reps, self) {
		ask = append(ask, self)
	}
	for _, a := range reps {
		if quorumIn(sets, r, in) {
			break
		}
		if !in(a) {
			ask = append(ask, a)
		}
	}
	for _, a := range reps {
		if !in(a) {
			spare = append(spare, a)
		}
	}
	return ask, spare
}

// askSpares sends a read to the replicas it has not asked yet.
func (n *Node) askSpares(id uint64, o *op) {
	for _, a := range o.spare {
		o.replicas = append(o.replicas, a)
		n.send(Message{Kind: KindGet, To: a, ID: id, Rec: Record{Key: o.rec.Key}})
	}
	o.spare = nil
}

// newest returns the newest record among the answers.
func newest(got gotSet) *Record {
	var best *Record
	for _, e := range got {
		r := e.rec
		if r != nil && (best == nil || r.Newer(*best)) {
			best = r
		}
	}
	return best
}

// checkRead answers a read once R replicas have answered and the newest
// version among them is held by a write quorum. If it is not, the read
// first writes that version back to the replicas that answered with less
// (ABD's write-back), so that no later read can return an older value:
// with a single writer per key this makes reads linearizable.
func (n *Node) checkRead(id uint64, o *op) {
	if !o.replied && quorumIn(o.sets, o.need, func(a string) bool { return o.answered.has(a) }) {
		best := newest(o.got)
		holds := func(a string) bool {
			r, _ := o.got.get(a)
			return r != nil && best != nil && r.Version == best.Version
		}
		missing := false
		for _, e := range o.got {
			missing = missing || e.rec == nil
		}
		switch {
		case o.extra != "" && !o.answered.has(o.extra):
			return // wait for the node after the preference list
		case missing && !o.fallback:
			// A replica that answered lacks the key. Right after a node
			// joins, the new replica is still receiving its ranges and the
			// node it displaced, the next one along the ring, may hold
			// the newest version that a write quorum acknowledged. Ask it
			// before answering.
			o.fallback = true
			n.askSpares(id, o)
			pref := n.ring.Preference(n.ring.Position(o.rec.Key), len(o.replicas)+1)
			if len(pref) > len(o.replicas) {
				extra := pref[len(pref)-1]
				o.replicas = append(o.replicas, extra)
				o.extra, o.extraAt = extra, n.now
				if extra == n.self {
					if rec, ok := n.local(o.rec.Key); ok {
						o.got.set(extra, &rec)
					} else {
						o.got.set(extra, nil)
					}
					o.answered.add(extra)
					n.checkRead(id, o)
				} else {
					n.send(Message{Kind: KindGet, To: extra, ID: id, Rec: Record{Key: o.rec.Key}})
				}
				return
			}
			n.checkRead(id, o) // no node beyond the preference list
			return
		case best == nil:
			n.reply(o, Message{Rec: Record{Key: o.rec.Key}})
		case quorumIn(o.sets, n.cfg.W, holds):
			if best.Tomb {
				n.reply(o, Message{Rec: Record{Key: o.rec.Key, Version: best.Version}})
			} else {
				n.reply(o, Message{Rec: *best, Found: true})
			}
		case !o.writeback || best.Newer(o.wbRec):
			// Write the newest version back to the replicas that answered
			// with an older one; again if a newer one turns up meanwhile
			// (a write that raced the read), or the read could never see
			// a quorum hold what it would answer.
			o.writeback = true
			o.wbRec = *best
			for _, rep := range o.replicas {
				if cur, ok := o.got.get(rep); ok && (cur == nil || best.Newer(*cur)) {
					if rep == n.self {
						n.apply(*best)
						b := *best
						o.got.set(rep, &b)
					} else {
						n.send(Message{Kind: KindPut, To: rep, ID: id, Rec: *best})
						o.wbSent = append(o.wbSent, wbSent{rep, *best})
					}
				}
			}
			n.Stats.ReadRepairs++
			n.checkRead(id, o)
			return
		}
	}
	if len(o.answered) >= len(o.replicas) && o.replied {
		n.readRepair(o)
		delete(n.ops, id)
	}
}

// readRepair sends the newest version to every replica that answered with
// an older one or none.
func (n *Node) readRepair(o *op) {
	best := newest(o.got)
	if best == nil {
		return
	}
	for _, rep := range o.replicas {
		if !o.answered.has(rep) {
			continue
		}
		if cur, _ := o.got.get(rep); cur == nil || best.Newer(*cur) {
			n.Stats.ReadRepairs++
			if rep == n.self {
				n.apply(*best)
			} else {
				n.send(Message{Kind: KindPut, To: rep, Rec: *best})
			}
		}
	}
}

func (n *Node) holdHint(h Hint, persist bool) {
	if n.hints[h.Target] == nil {
		n.hints[h.Target] = map[string]Record{}
	}
	if cur, ok := n.hints[h.Target][string(h.Rec.Key)]; ok && !h.Rec.Newer(cur) {
		return
	}
	if persist {
		// A hint may be held for long: it gets memory of its own rather
		// than keep alive the request buffer its key and value are in.
		kv := make([]byte, len(h.Rec.Key)+len(h.Rec.Value))
		copy(kv[copy(kv, h.Rec.Key):], h.Rec.Value)
		h.Rec.Key = kv[:len(h.Rec.Key):len(h.Rec.Key)]
		if h.Rec.Value != nil {
			h.Rec.Value = kv[len(h.Rec.Key):]
		}
	}
	n.hints[h.Target][string(h.Rec.Key)] = h.Rec
	if persist {
		hc := h
		n.rd.Persist = append(n.rd.Persist, PersistOp{Hint: &hc})
		n.Stats.HintsHeld++
	}
}

// Hints returns how many writes are held for other nodes.
func (n *Node) Hints() int {
	k := 0
	for _, m := range n.hints {
		k += len(m)
	}
	return k
}

// Tick advances time: retransmissions, time-outs (which turn unanswered
// writes into hints), hint delivery, and anti-entropy.
func (n *Node) Tick() {
	n.now++
	if n.marks == nil {
		n.marks = make([]uint64, n.cfg.SettleTicks+1)
	}
	n.marks[n.now%len(n.marks)] = max(n.last, n.clock())
	// The migration budget refills by one tick's worth, up to one tick's
	// worth: a send that overdraws it (a whole chunk leaves at once) is
	// paid back by the ticks after, so the rate holds on average.
	per := n.cfg.MigrationBytesPerTick
	if per <= 0 {
		per = 64 << 20
	}
	n.migBudget = min(n.migBudget+per, per)
	for len(n.migrations) > 0 && n.migBudget > 0 {
		m := n.migrations[0]
		n.migrations = n.migrations[1:]
		n.migBudget -= recordsSize(m.Records)
		n.send(m)
		if o := n.ops[m.ID]; o != nil && o.push != nil {
			o.start, o.lastSend = n.now, n.now // time out from when it leaves
		}
	}
	n.pumpRanges()
	for id, b := range n.reqBatches {
		if n.now-b.at >= n.cfg.TimeoutTicks {
			// Unanswered: its ops were resent one by one, and have
			// timed out by now.
			delete(n.reqBatches, id)
		}
	}
	ids := make([]uint64, 0, len(n.ops))
	for id := range n.ops {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		o := n.ops[id]
		if n.now-o.start >= n.cfg.TimeoutTicks {
			n.expire(id, o)
			continue
		}
		if len(o.spare) > 0 && !o.replied && n.now-o.start >= n.cfg.SpeculateTicks {
			n.askSpares(id, o)
		}
		if o.extra != "" && !o.answered.has(o.extra) && n.now-o.extraAt >= n.cfg.ResendTicks {
			// The node after the preference list does not answer: read
			// without it, as without any node that holds nothing.
			o.answered.add(o.extra)
			o.got.set(o.extra, nil)
			n.checkRead(id, o)
			continue
		}
		if n.now-o.lastSend >= n.cfg.ResendTicks<<min(o.resends, 4) && o.hint == nil && o.push == nil {
			// Sent again after ResendTicks, then twice, four, eight and
			// sixteen times as long: a replica that is slow, not cut
			// off, is not sent the same request over and over.
			o.lastSend = n.now
			o.resends++
			n.Stats.Resends++
			for _, rep := range o.replicas {
				if o.answered.has(rep) {
					continue
				}
				if o.write {
					n.send(Message{Kind: KindPut, To: rep, ID: id, Rec: o.rec})
				} else {
					n.send(Message{Kind: KindGet, To: rep, ID: id, Rec: Record{Key: o.rec.Key}})
				}
			}
		}
	}
	if n.now-n.lastHint >= n.cfg.HintTicks {
		n.lastHint = n.now
		n.deliverHints()
	}
	// Compare again only once data has stopped flowing in and out: a
	// comparison in the middle of a stream finds it half done and asks for
	// the rest twice.
	n.expireRanges()
	for k, at := range n.inbound {
		if n.now-at >= 10*n.cfg.SyncTicks {
			delete(n.inbound, k) // the sender gave up, or is gone
		}
	}
	quiet := len(n.rangeSends) == 0 && len(n.inbound) == 0 && len(n.migrations) == 0 && n.now-n.lastPushIn >= 20
	// A comparison reads whole ranges: the next waits until what the last
	// ones read is paid off at ScanBytesPerTick, unless the ring changed.
	n.scanDebt = max(0, n.scanDebt-n.cfg.ScanBytesPerTick)
	if n.now-n.lastSync >= n.cfg.SyncTicks && quiet && (n.scanDebt == 0 || fmtMembers(n.ring.Members()) != n.lastMembers) {
		n.lastSync = n.now
		n.syncRound()
	}
}

func (n *Node) expire(id uint64, o *op) {
	delete(n.ops, id)
	switch {
	case o.push != nil:
		n.strayBusy = false
	case o.hint != nil:
	case o.write:
		for _, rep := range o.replicas {
			if !o.answered.has(rep) {
				n.holdHint(Hint{Target: rep, Rec: o.rec}, true)
			}
		}
		if !o.replied {
			n.Stats.WriteFailures++
			n.reply(o, Message{Err: writeUnknown(o)})
		}
	default:
		n.readRepair(o)
		if !o.replied {
			n.Stats.ReadFailures++
			n.reply(o, Message{Err: "read quorum not reached"})
		}
	}
}

// writeUnknown says why a write timed out, and that it may still take
// effect: the replicas that acknowledged it hold it, and the others are
// sent it as hints until they do. A client must not take the error for a
// write that did not happen.
func writeUnknown(o *op) string {
	var b strings.Builder
	b.WriteString("write quorum not reached; outcome unknown: ")
	if len(o.answered) == 0 {
		b.WriteString("no replica acknowledged it in time")
	} else {
		fmt.Fprintf(&b, "stored on %s", strings.Join(o.answered, ", "))
	}
	fmt.Fprintf(&b, " (%d acknowledgements needed)", o.need)
	var rest []string
	for _, rep := range o.replicas {
		if !o.answered.has(rep) {
			rest = append(rest, rep)
		}
	}
	if len(rest) > 0 {
		fmt.Fprintf(&b, ", held for %s as a hint", strings.Join(rest, ", "))
	}
	b.WriteString(": the write may still take effect")
	return b.String()
}

func (n *Node) deliverHints() {
	targets := make([]string, 0, len(n.hints))
	for t := range n.hints {
		targets = append(targets, t)
	}
	slices.Sort(targets)
	for _, t := range targets {
		keys := make([]string, 0, len(n.hints[t]))
		for k := range n.hints[t] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i >= 256 {
				break
			}
			h := Hint{Target: t, Rec: n.hints[t][k]}
			id := n.newOp(&op{hint: &h, replicas: []string{t}})
			n.send(Message{Kind: KindPut, To: t, ID: id, Rec: h.Rec})
		}
	}
}

// primaryRange returns the range this node is primary for: (predecessor's
// token, own token].
func (n *Node) primaryRange() (lo, hi uint32, ok bool) {
	ms := n.ring.Members()
	for i, m := range ms {
		if m.Addr == n.self {
			return ms[(i+len(ms)-1)%len(ms)].Token, m.Token, true
		}
	}
	return 0, 0, false
}

// syncRound compares this node's primary range with its replicas: one
// replica per round normally, every replica at once after the ring changed
// or while the last comparison found differences, so data moves to new
// replicas without waiting for the rotation. It also hands off keys this
// node no longer replicates when the ring has changed.
func (n *Node) syncRound() {
	for r, t := range n.pulling {
		if n.now-t >= 10*n.cfg.SyncTicks {
			delete(n.pulling, r)
		}
	}
	members := fmtMembers(n.ring.Members())
	changed := members != n.lastMembers
	stable := n.now-n.ringChangedAt >= n.cfg.HandOffTicks
	if (changed || n.now-n.lastStray >= 10*n.cfg.SyncTicks) && !n.strayBusy && stable {
		n.lastMembers = members
		n.lastStray = n.now
		n.handOff()
	} else if changed && !stable {
		// Come back when the table has been stable long enough.
		n.lastSync = min(n.lastSync, n.ringChangedAt+n.cfg.HandOffTicks-n.cfg.SyncTicks)
	}
	lo, hi, ok := n.primaryRange()
	if !ok {
		return
	}
	pref := n.ring.Preference(hi, n.cfg.N)
	var peers []string
	for _, p := range pref {
		if p != n.self {
			peers = append(peers, p)
		}
	}
	if len(peers) == 0 {
		return
	}
	h := n.horizon()
	if changed || n.diverged {
		n.diverged = false
		for _, p := range peers {
			n.send(Message{Kind: KindDigest, To: p, Lo: lo, Hi: hi, Buckets: n.cfg.Buckets, Horizon: h})
		}
		return
	}
	n.syncPeer = (n.syncPeer + 1) % len(peers)
	n.send(Message{Kind: KindDigest, To: peers[n.syncPeer], Lo: lo, Hi: hi, Buckets: n.cfg.Buckets, Horizon: h})
}

func fmtMembers(ms []Member) string {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString(m.Addr)
		binary.Write(&b, binary.BigEndian, m.Token)
	}
	return b.String()
}

// bucketOf maps a position in (lo, hi] to one of b buckets.
func bucketOf(pos, lo, hi uint32, b int) int {
	width := uint64(hi - lo)
	if lo == hi {
		width = 1 << 32
	}
	off := uint64(pos - lo - 1)
	return int(off * uint64(b) / width)
}

// bucketRange returns the sub-range of bucket i of (lo, hi] split in b.
func bucketRange(i int, lo, hi uint32, b int) (uint32, uint32) {
	width := uint64(hi - lo)
	if lo == hi {
		width = 1 << 32
	}
	start := func(k int) uint32 {
		// smallest offset o with o*b/width >= k, minus one position
		o := (uint64(k)*width + uint64(b) - 1) / uint64(b)
		return lo + uint32(o)
	}
	return start(i), start(i + 1)
}

func recordHash(r Record) uint64 {
	h := fnv.New64a()
	h.Write(r.Key)
	var v [9]byte
	binary.BigEndian.PutUint64(v[:8], r.Version)
	if r.Tomb {
		v[8] = 1
	}
	h.Write(v[:])
	return h.Sum64()
}

// scan is st.Scan for the background work that reads whole ranges
// (digests, key versions, hand-off), counting the bytes it reads against
// the scan budget (Config.ScanBytesPerTick).
func (n *Node) scan(lo, hi uint32, fn func(uint32, Record) bool) {
	n.st.Scan(lo, hi, func(pos uint32, r Record) bool {
		n.scanDebt += int64(len(r.Key) + len(r.Value) + 16)
		return fn(pos, r)
	})
}

// scanVersions is scan for work that needs no values: through the
// storage's VersionScanner when it has one, which copies no values out
// (the records fn sees are valid only during the call).
func (n *Node) scanVersions(lo, hi uint32, fn func(uint32, Record) bool) {
	vs, ok := n.st.(VersionScanner)
	if !ok {
		n.scan(lo, hi, fn)
		return
	}
	vs.ScanVersions(lo, hi, func(pos uint32, r Record) bool {
		n.scanDebt += int64(len(r.Key) + 16) // the values are read but not copied
		return fn(pos, r)
	})
}

// horizon is the newest version a comparison starting now covers: what
// this node had seen or could mint SettleTicks ago (the oldest mark it
// has, right after it starts).
func (n *Node) horizon() uint64 {
	if len(n.marks) == 0 {
		return max(n.last, n.clock())
	}
	if n.now < len(n.marks)-1 {
		return n.marks[1] // the first tick's
	}
	return n.marks[(n.now+1)%len(n.marks)]
}

// settled reports whether a record of version v is covered by a
// comparison up to horizon h (0: everything).
func settled(v, h uint64) bool { return h == 0 || v <= h }

// digest hashes the records of (lo, hi] up to version h into b buckets.
func (n *Node) digest(lo, hi uint32, b int, h uint64) []uint64 {
	if b <= 0 || b > 4096 {
		return nil
	}
	out := make([]uint64, b)
	var recent []bool // buckets with records newer than h
	n.scanVersions(lo, hi, func(pos uint32, r Record) bool {
		i := bucketOf(pos, lo, hi, b)
		if !settled(r.Version, h) {
			if recent == nil {
				recent = make([]bool, b)
			}
			recent[i] = true
			return true
		}
		out[i] ^= recordHash(r)
		return true
	})
	// 0 says the bucket is empty, and has it sent whole (onDigestResp):
	// one that holds only newer records is not.
	for i, r := range recent {
		if r && out[i] == 0 {
			out[i] = 1
		}
	}
	return out
}

// queueRange queues the range (lo, hi] for to; pumpRanges sends it.
func (n *Node) queueRange(to string, lo, hi uint32) {
	if lo == hi {
		// The whole ring, as two halves: a stream resumes after the last
		// position it sent, which needs a range with a start.
		n.queueRange(to, lo, lo+1<<31)
		n.queueRange(to, lo+1<<31, lo)
		return
	}
	for _, rs := range n.rangeSends {
		if rs.to != to || rs.done {
			continue
		}
		if rs.lo == lo && rs.hi == hi && rs.next == lo {
			return // queued and not started: it will send everything
		}
		if rs.hi == lo && hi != rs.lo {
			// The range right after one still being read (the next
			// bucket of a comparison): one stream reads both, in
			// chunks of full size.
			rs.hi = hi
			return
		}
	}
	n.rangeSends = append(n.rangeSends, &rangeSend{to: to, lo: lo, hi: hi, next: lo})
}

// pumpRanges sends the next chunks of the range streams, oldest stream
// first, while their peers' windows and the migration budget allow, and
// drops the streams that are complete.
func (n *Node) pumpRanges() {
	for _, rs := range n.rangeSends {
		for !rs.done && n.windowOut[rs.to] < rangeWindow && n.migBudget > 0 {
			n.migBudget -= n.sendChunk(rs)
		}
	}
	n.rangeSends = slices.DeleteFunc(n.rangeSends, func(rs *rangeSend) bool { return rs.done && len(rs.out) == 0 })
}

// sendChunk reads and sends the next chunk of rs, and returns its bytes.
// A chunk ends only where the position changes, so the next one starts
// after a position with nothing left in it.
func (n *Node) sendChunk(rs *rangeSend) int64 {
	var chunk []Record
	var size int64
	last, more := rs.next, false
	n.st.Scan(rs.next, rs.hi, func(pos uint32, r Record) bool {
		if size >= rangeChunk && pos != last {
			more = true
			return false
		}
		chunk = append(chunk, r)
		size += int64(len(r.Key) + len(r.Value) + 16)
		last = pos
		return true
	})
	rs.next, rs.done = last, !more
	if len(chunk) == 0 {
		return 0
	}
	n.Stats.Pushed += len(chunk)
	n.Stats.PushedBytes += size
	n.nextID++
	id := n.nextID
	if rs.out == nil {
		rs.out = map[uint64]chunkSent{}
	}
	if n.chunksOut == nil {
		n.chunksOut, n.windowOut = map[uint64]*rangeSend{}, map[string]int64{}
	}
	rs.out[id] = chunkSent{at: n.now, size: size}
	n.chunksOut[id] = rs
	n.windowOut[rs.to] += size
	// The chunk names its stream (Lo, Hi) and whether it is the last
	// (Found), so that the receiver holds off comparing ranges until the
	// stream is in.
	n.send(Message{Kind: KindPush, To: rs.to, ID: id, Records: chunk, Lo: rs.lo, Hi: rs.hi, Found: rs.done})
	return size
}

// onChunkAck takes the acknowledgement of a range chunk, if id is one,
// and sends what the window then allows.
func (n *Node) onChunkAck(id uint64) bool {
	rs, ok := n.chunksOut[id]
	if !ok {
		return false
	}
	delete(n.chunksOut, id)
	n.windowOut[rs.to] -= rs.out[id].size
	delete(rs.out, id)
	n.pumpRanges()
	return true
}

// expireRanges gives up the streams with a chunk unacknowledged for
// 10 × SyncTicks (the peer is gone, or the chunk was lost): the next
// comparison finds what is missing.
func (n *Node) expireRanges() {
	n.rangeSends = slices.DeleteFunc(n.rangeSends, func(rs *rangeSend) bool {
		for _, c := range rs.out {
			if n.now-c.at >= 10*n.cfg.SyncTicks {
				for id, c := range rs.out {
					delete(n.chunksOut, id)
					n.windowOut[rs.to] -= c.size
				}
				n.Stats.RangesAbandoned++
				return true
			}
		}
		return false
	})
}

func (n *Node) versions(lo, hi uint32) []KeyVersion {
	var out []KeyVersion
	n.scan(lo, hi, func(_ uint32, r Record) bool {
		out = append(out, KeyVersion{Key: r.Key, Version: r.Version, Tomb: r.Tomb})
		return len(out) < 100000
	})
	return out
}

func (n *Node) onDigestResp(m Message) {
	mine := n.digest(m.Lo, m.Hi, m.Buckets, m.Horizon)
	if len(mine) != len(m.Hashes) {
		return
	}
	moved := false
	for i := range mine {
		if mine[i] != m.Hashes[i] {
			lo, hi := bucketRange(i, m.Lo, m.Hi, m.Buckets)
			switch {
			case m.Hashes[i] == 0:
				// The peer holds nothing here (it just joined): send it
				// the whole bucket, without comparing keys.
				n.queueRange(m.From, lo, hi)
				moved = true
			case mine[i] == 0:
				// Ask one replica for the bucket, not every one that
				// answers; ask again if it has not come after a while.
				if n.pulling == nil {
					n.pulling = map[[2]uint32]int{}
				}
				if t, ok := n.pulling[[2]uint32{lo, hi}]; !ok || n.now-t >= 10*n.cfg.SyncTicks {
					n.pulling[[2]uint32{lo, hi}] = n.now
					n.send(Message{Kind: KindPullRange, To: m.From, Lo: lo, Hi: hi})
				}
				moved = true
			default:
				// Compared key by key (onKeysResp), which decides
				// whether anything needs to move.
				n.send(Message{Kind: KindKeys, To: m.From, Lo: lo, Hi: hi, Horizon: m.Horizon})
			}
		}
	}
	n.pumpRanges() // what the comparison queued
	if moved {
		n.compareSoon()
	}
}

// compareSoon makes the next comparison come soon, with every replica:
// one found differences, and runs until the ranges agree.
func (n *Node) compareSoon() {
	n.diverged = true
	n.lastSync = min(n.lastSync, n.now-n.cfg.SyncTicks+max(n.cfg.SyncTicks/20, 1))
}

// onKeysResp compares a bucket key by key: pushes what the peer lacks,
// pulls what the peer has newer.
func (n *Node) onKeysResp(m Message) {
	theirs := map[string]KeyVersion{}
	for _, kv := range m.Versions {
		theirs[string(kv.Key)] = kv
	}
	var push []Record
	var pull [][]byte
	seen := map[string]bool{}
	n.scan(m.Lo, m.Hi, func(_ uint32, r Record) bool {
		seen[string(r.Key)] = true
		t, ok := theirs[string(r.Key)]
		if !settled(r.Version, m.Horizon) || (ok && !settled(t.Version, m.Horizon)) {
			return true // written since the comparison's horizon: left to the next one
		}
		other := Record{Key: t.Key, Version: t.Version, Tomb: t.Tomb}
		switch {
		case !ok || (r.Version > t.Version) || (r.Version == t.Version && r.Tomb && !t.Tomb):
			push = append(push, r)
		case t.Version > r.Version || (t.Tomb && !r.Tomb && other.Version == r.Version):
			pull = append(pull, r.Key)
		}
		return true
	})
	for _, kv := range m.Versions {
		if !seen[string(kv.Key)] && settled(kv.Version, m.Horizon) {
			pull = append(pull, kv.Key)
		}
	}
	if len(push) > 0 || len(pull) > 0 {
		n.compareSoon()
	}
	for len(push) > 0 {
		k := min(len(push), 256)
		n.Stats.Pushed += k
		n.Stats.PushedBytes += recordsSize(push[:k])
		n.migrate(Message{Kind: KindPush, To: m.From, Records: push[:k]})
		push = push[k:]
	}
	if len(pull) > 0 {
		n.Stats.Pulled += len(pull)
		n.send(Message{Kind: KindPull, To: m.From, Keys: pull})
	}
}

// handOff finds records this node holds but does not replicate (the ring
// changed, or the node is draining), sends each batch to the nodes that
// replicate it, and forgets the records once all of them acknowledge.
func (n *Node) handOff() {
	groups := map[string]*strayPush{}
	var order []string
	var size int64
	now := n.clock()
	n.scan(0, 0, func(pos uint32, r Record) bool {
		if r.Tomb && now > r.Version && now-r.Version > n.cfg.TombstoneTTL {
			// Old enough that every replica has it: collect the tombstone
			// (unless this round wrote or dropped the key since: the scan
			// sees storage as the round began).
			if _, written := n.pending[string(r.Key)]; !written && !n.gone[string(r.Key)] {
				n.forget(r)
				n.Stats.TombstonesCollected++
			}
			return true
		}
		pref := n.ring.Preference(pos, n.cfg.N)
		if slices.Contains(pref, n.self) || len(pref) == 0 {
			return true
		}
		key := strings.Join(pref, ",")
		g := groups[key]
		if g == nil {
			g = &strayPush{targets: pref}
			groups[key] = g
			order = append(order, key)
		}
		g.recs = append(g.recs, r)
		size += int64(len(r.Key) + len(r.Value))
		return size < 64<<20
	})
	for _, key := range order {
		g := groups[key]
		for len(g.recs) > 0 {
			k := min(len(g.recs), 256)
			batch := &strayPush{recs: g.recs[:k], targets: g.targets}
			g.recs = g.recs[k:]
			id := n.newOp(&op{push: batch, replicas: batch.targets})
			// Each target is offered the versions first and sent only
			// what it lacks: after a join, anti-entropy has usually
			// brought the new replica most of them already, and the
			// other targets held them all along.
			vs := make([]KeyVersion, len(batch.recs))
			for i, r := range batch.recs {
				vs[i] = KeyVersion{Key: r.Key, Version: r.Version, Tomb: r.Tomb}
			}
			for _, t := range batch.targets {
				n.send(Message{Kind: KindOffer, To: t, ID: id, Versions: vs})
			}
			n.strayBusy = true
		}
	}
}

func (n *Node) onPushAck(m Message) {
	if n.onChunkAck(m.ID) {
		return
	}
	n.pushAnswered(m.ID, m.From)
}

// onOfferResp sends a hand-off target the records it lacks, or counts it
// as holding them all.
func (n *Node) onOfferResp(m Message) {
	o := n.ops[m.ID]
	if o == nil || o.push == nil || o.answered.has(m.From) {
		return
	}
	if len(m.Keys) == 0 {
		n.pushAnswered(m.ID, m.From)
		return
	}
	want := make(map[string]bool, len(m.Keys))
	for _, k := range m.Keys {
		want[string(k)] = true
	}
	var recs []Record
	for _, r := range o.push.recs {
		if want[string(r.Key)] {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		n.pushAnswered(m.ID, m.From) // it asked for nothing it was offered
		return
	}
	n.Stats.PushedBytes += recordsSize(recs)
	n.migrate(Message{Kind: KindPush, To: m.From, ID: m.ID, Records: recs})
}

// pushAnswered records that target from holds a hand-off batch; once
// every target does, this node drops its copies.
func (n *Node) pushAnswered(id uint64, from string) {
	o := n.ops[id]
	if o == nil || o.push == nil {
		return
	}
	o.answered.add(from)
	if len(o.answered) < len(o.replicas) {
		return
	}
	delete(n.ops, id)
	for _, r := range o.push.recs {
		if cur, ok := n.local(r.Key); ok && cur.Version == r.Version {
			n.forget(cur)
			n.Stats.HandedOff++
		}
	}
	busy := false
	for _, o := range n.ops {
		if o.push != nil {
			busy = true
		}
	}
	n.strayBusy = busy
	if !busy {
		// More may be waiting beyond the first 64 MiB.
		n.lastStray = n.now - 10*n.cfg.SyncTicks
	}
}

// Rebalance asks for a hand-off pass at the next anti-entropy round.
func (n *Node) Rebalance() {
	n.lastMembers = ""
	n.lastSync = n.now - n.cfg.SyncTicks
}

// Busy reports whether hand-offs are in flight.
func (n *Node) Busy() bool { return n.strayBusy }

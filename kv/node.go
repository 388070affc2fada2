// The Node: its state, its round (Step, Tick, Ready), and the output and
// migration budget every concern sends through. The concerns are in files of
// their own: coordinator.go (client reads and writes), reqbatch.go (their
// requests to replicas, batched per round), replica.go (applying writes),
// vcache.go, hints.go (hinted hand-off), views.go (ring views and quorums),
// antientropy.go (range digests), streams.go (range streams) and handoff.go
// (records this node no longer replicates).

package kv

import (
	"hash/fnv"
)

// Stats counts what a node did, for metrics and tests.
type Stats struct {
	Writes, Reads, WriteFailures, ReadFailures int
	ReadRepairs, HintsHeld, HintsDelivered     int
	// HintsDropped counts hints dropped because their target had been
	// out of the ring for HintDropTicks.
	HintsDropped int
	// HintsRerouted counts hints held for a member that announced its
	// leave, handed to the records' current replicas instead.
	HintsRerouted                                  int
	Pushed, Pulled, HandedOff, TombstonesCollected int
	// Expired counts values past their deadline that this node replaced
	// with tombstones.
	Expired     int
	PushedBytes int64
	// RangesAbandoned counts range streams given up because a chunk went
	// unacknowledged (see expireRanges).
	RangesAbandoned int
	// VersionHits counts writes whose version was compared from the
	// version cache; VersionMisses those that read storage to compare.
	VersionHits, VersionMisses int
	// Resends counts client requests (and read write-backs) sent to a
	// replica again because it had not answered within ResendTicks, and
	// writes sent to another region again.
	Resends int
	// RegionWrites counts writes from other regions this node
	// coordinated.
	RegionWrites int
	// CasOps counts read-modify-write ops this node led; CasWrites the
	// values they chose and wrote; CasRetries the ballots refused.
	CasOps, CasWrites, CasRetries int
	// LeadersSuspected counts the forwarded ops whose key's leader did
	// not confirm them in time (see Config.LeaderWaitTicks).
	LeadersSuspected int
	// Views is how many ring views quorums must be met in (see Views),
	// as of the last tick.
	Views int
	// Held is how many client requests wait for the node to learn the
	// views the members run with (see informed.go).
	Held int
	// Transition is how far the transition to the current view has come,
	// while older views are in force: 1 once every member runs with it, 2
	// once this node has settled on it too (its data handed off and its
	// primary range compared), 3 once every member has (see viewsync.go).
	Transition int
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
	vcache versionCache
	gone   map[string]bool // keys deleted in this round (see local)
	ops    map[uint64]*op
	hints  hintStore // writes held for replicas that missed them
	// hintAbsent records, by hint target not in the ring, the tick it was
	// first seen out of it (see dropDepartedHints).
	hintAbsent map[string]int
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
	strayLate   bool       // a leaving node stored a write during the pass under way (strayArrived)
	strayPass   *strayPass // the hand-off pass under way
	strayOut    int64      // bytes of strays offered and not yet answered
	salt        uint64
	migrations  []Message // anti-entropy and hand-off sends waiting for budget
	migBudget   int64     // bytes they may send now; negative after an overdraft
	scanDebt    int64     // bytes background scans read, not yet paid off
	streams     rangeStreams
	pulling     map[[2]uint32]int // ranges asked of a peer with KindPullRange, and when
	lastPushIn  int               // tick of the last KindPush received
	// ringChangedAt is the tick of the last change of the member table.
	// Records are handed off (and dropped) only once the table has been
	// stable for HandOffTicks: a table that flaps while pointers settle
	// must not make a replica drop what it replicates.
	ringChangedAt int
	// prev are the ring views replaced and not yet retired: quorums must
	// be met in the preference list of every one as well as the current
	// one, so that a write acknowledged under an older view is seen by a
	// read under the newer one, and the other way round, while data moves.
	// They retire together once every member of the current view runs
	// with it and has settled on it (views), and not before
	// TransitionTicks.
	prev  []prevView
	views viewSync
	// leaving: the node is draining out of the ring (SetLeaving). It
	// still stores the writes sent to it but acknowledges none, so that
	// no write counts it toward W: it may exit before handing off what
	// arrived last, while coordinators that have not seen it go still
	// route to it.
	leaving bool
	// left lists members that announced they left the ring (MemberLeft):
	// they handed their data off first, so a view of the transition
	// window stops counting them as soon as they are out of the ring. A
	// member that drops out of the ring without one (it crashed, or is cut
	// off) keeps counting in the views that had it until they expire: it
	// may hold the only other copy of an acknowledged write.
	left     []string
	diverged bool // the last comparison found differences
	// marks holds, for each of the last SettleTicks+1 ticks, the newest
	// version this node had seen or could mint then (see horizon).
	marks    []uint64
	bulkFrom string // the sender of the push being applied (PersistOp.Bulk)
	regions  regionState
	lwt      lwtState
	salt2    uint64 // state of the random waits after a refused ballot
	// informed: the node knows the views every member coordinates with
	// (informed.go); until then it holds the client requests it would
	// coordinate (held) and hands nothing off.
	informed  bool
	told      map[string]bool // the members that told it their views
	alive     map[string]bool // the members it received anything from meanwhile
	askSince  int             // the tick it began asking
	held      []heldReq
	informAsk int // the tick it last asked the members it has not heard
	Stats     Stats
}

// NewNode returns a node at self. clock gives physical time in
// nanoseconds for versions; hints are the hints it persisted before a
// restart.
func NewNode(cfg Config, self string, ring Ring, st Storage, clock func() uint64, hints []Hint) *Node {
	h := fnv.New64a()
	h.Write([]byte(self))
	n := &Node{cfg: cfg.withDefaults(), self: self, ring: ring, st: st, clock: clock, salt: h.Sum64() & 0xff, salt2: h.Sum64(),
		pending: map[string]Record{}, gone: map[string]bool{}, ops: map[uint64]*op{}, hints: hintStore{}}
	for _, h := range hints {
		n.holdHint(h, false)
	}
	n.views.reset(ringDigest(ring))
	// Until a ring of others replaces a ring of itself alone (SetRing),
	// the view it started with is the only one it knows of.
	n.informed = true
	n.informAsk = -1 << 30
	return n
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
	clear(n.lwt.pending)
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

// heard notes a message from a peer: a key leader suspected of being
// down answers again.
func (n *Node) heard(from string) {
	if n.alive != nil {
		n.alive[from] = true
	}
	if len(n.lwt.suspect) > 0 {
		delete(n.lwt.suspect, from)
	}
}

// Refuse answers m, a peer's write that the driver turns away unstored
// (why: its disk is full), with KindPutRefused, so that the write's
// coordinator need not wait out its timeout to learn that this replica
// will not hold it. A write that expects no answer is dropped.
func (n *Node) Refuse(m Message, why string) {
	n.heard(m.From)
	if n.leaving {
		return // a leaving node answers no write (see Step)
	}
	switch {
	case m.Kind == KindPut && m.ID != 0:
		n.send(Message{Kind: KindPutRefused, To: m.From, ID: m.ID, Err: why})
	case m.Kind == KindPutBatch:
		n.send(Message{Kind: KindPutRefused, To: m.From, ID: m.ID, Found: true, Err: why})
	}
}

// Step handles one message.
func (n *Node) Step(m Message) {
	n.heard(m.From)
	if coordinates(m) && n.holdUninformed(m) {
		return
	}
	switch m.Kind {
	case KindClientPut:
		n.clientPut(m)
	case KindClientGet:
		n.clientGet(m)
	case KindPut:
		n.apply(m.Rec)
		if n.leaving {
			n.strayArrived()
			if m.ID != 0 {
				n.send(Message{Kind: KindPutLeaving, To: m.From, ID: m.ID})
			}
		} else if m.ID != 0 {
			n.send(Message{Kind: KindPutAck, To: m.From, ID: m.ID})
		}
	case KindPutAck:
		n.onPutAck(m.ID, m.From)
	case KindPutBatch:
		for _, r := range m.Records {
			n.apply(r)
		}
		if n.leaving {
			n.strayArrived()
			n.send(Message{Kind: KindPutLeaving, To: m.From, ID: m.ID, Found: true})
		} else {
			n.send(Message{Kind: KindPutBatchAck, To: m.From, ID: m.ID})
		}
	case KindPutBatchAck:
		for _, id := range n.answeredBatch(m.ID) {
			n.onPutAck(id, m.From)
		}
	case KindPutLeaving:
		if !m.Found {
			n.onPutLeaving(m.ID, m.From)
			break
		}
		for _, id := range n.answeredBatch(m.ID) {
			n.onPutLeaving(id, m.From)
		}
	case KindPutRefused:
		if !m.Found {
			n.onPutRefused(m.ID, m.From, m.Err)
			break
		}
		for _, id := range n.answeredBatch(m.ID) {
			n.onPutRefused(id, m.From, m.Err)
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
		n.send(DigestReply(n.self, m, n.digest(m.Lo, m.Hi, m.Buckets, m.Horizon)))
	case KindDigestResp:
		n.onDigestResp(m)
	case KindKeys:
		n.send(Message{Kind: KindKeysResp, To: m.From, Lo: m.Lo, Hi: m.Hi, Horizon: m.Horizon, Versions: n.versions(m.Lo, m.Hi)})
	case KindKeysResp:
		n.onKeysResp(m)
	case KindPush:
		n.lastPushIn = n.now
		if m.Lo != m.Hi { // a chunk of a range stream
			n.streams.chunkIn(m, n.now)
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
	case KindRegionPut:
		n.regionPut(m)
	case KindRegionAck:
		n.onRegionAck(m)
	case KindRegionMark:
		n.onRegionMark(m)
	case KindViewState:
		n.onViewState(m)
	case KindClientCas:
		n.clientCas(m)
	case KindPrepare:
		n.send(n.onPrepare(m))
	case KindPromise:
		n.lwtInit()
		n.onPromise(m, m.From)
	case KindAccept:
		n.send(n.onAccept(m))
	case KindAccepted:
		n.lwtInit()
		n.onAccepted(m, m.From)
	case KindClientResp:
		n.onFwdResp(m)
	case KindCasTaken:
		n.onCasTaken(m)
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

// Tick advances time: retransmissions, time-outs (which turn unanswered
// writes into hints), hint delivery, and anti-entropy.
func (n *Node) Tick() {
	n.now++
	if n.marks == nil {
		n.marks = make([]uint64, n.cfg.SettleTicks+1)
	}
	n.marks[n.now%len(n.marks)] = max(n.last, n.clock())
	n.sendMigrations()
	n.pumpRanges()
	n.expireBatches()
	n.tickOps()
	n.continueHandOff()
	if n.now-n.lastHint >= n.cfg.HintTicks {
		n.lastHint = n.now
		n.dropDepartedHints()
		n.deliverHints()
	}
	n.tickRegions()
	n.tickLwt()
	n.tickSync()
	n.tickViews()
	n.tickInformed()
}

// sendMigrations sends the anti-entropy and hand-off messages waiting for
// budget (see migrate), as far as this tick's budget goes.
func (n *Node) sendMigrations() {
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
}

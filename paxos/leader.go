package paxos

import (
	"math/rand/v2"
	"slices"
)

type leaderState uint8

const (
	follower leaderState = iota
	candidate
	active
)

type proposal struct {
	value  Value
	sentAt int
}

// Leader is a proposer. One leader is active at a time: it runs phase 1
// against every acceptor group once per ballot, then assigns each batch a
// slot and hands it to a proxy leader for phase 2. Standby leaders watch the
// active leader's heartbeats and campaign, with a higher ballot, when they
// stop.
type Leader struct {
	outbox
	cfg  Config
	id   uint32
	rng  *rand.Rand
	now  int
	lead leaderState

	ballot  Ballot // this leader's ballot while candidate or active
	highest Ballot // the highest ballot seen anywhere
	hint    string // the leader believed active

	// phase 1
	votes   []map[string]bool
	best    map[uint64]Entry
	p1GC    uint64
	p1Sent  int
	waiting []Command

	// phase 2
	nextSlot  uint64
	pending   map[uint64]*proposal
	nextProxy int
	chosen    map[uint64]*Value // values chosen at or above the GC point
	watermark uint64            // every slot below is chosen

	lastHeard  int
	timeout    int
	lastBeat   int
	replicaWM  map[string]uint64
	gcSent     uint64
	Elections  int // campaigns started, for metrics
	ChosenRecv int
}

// NewLeader returns leader number id of cfg.Leaders, seeded for its random
// election timeouts. last is the highest ballot it persisted before a
// restart (zero for a fresh leader): a leader never campaigns twice with the
// same ballot, even across restarts, because two proposals in one ballot
// could differ.
func NewLeader(cfg Config, id int, seed uint64, last Ballot) *Leader {
	cfg = cfg.withDefaults()
	l := &Leader{
		outbox: outbox{self: cfg.Leaders[id]}, cfg: cfg, id: uint32(id),
		rng:     rand.New(rand.NewPCG(seed, uint64(id)+1)),
		pending: map[uint64]*proposal{}, chosen: map[uint64]*Value{}, replicaWM: map[string]uint64{},
		best: map[uint64]Entry{}, highest: last,
	}
	l.timeout = l.randomTimeout()
	if id == 0 {
		l.timeout = 1 // the first leader campaigns at once
	}
	return l
}

func (l *Leader) randomTimeout() int {
	return l.cfg.ElectionTicks + l.rng.IntN(l.cfg.ElectionTicks)
}

// Active reports whether this leader is the active one in phase 2.
func (l *Leader) Active() bool { return l.lead == active }

// Ballot returns the leader's current ballot.
func (l *Leader) Ballot() Ballot { return l.ballot }

// Watermark returns the slot below which every slot is known chosen.
func (l *Leader) Watermark() uint64 { return l.watermark }

// NextSlot returns the next slot the leader will assign.
func (l *Leader) NextSlot() uint64 { return l.nextSlot }

// Step handles one message.
func (l *Leader) Step(m Message) {
	switch m.Kind {
	case KindRequest:
		l.propose(m.From, []Command{m.Command})
	case KindBatch:
		l.propose(m.From, m.Batch)
	case KindPhase1b:
		l.onPhase1b(m)
	case KindNack:
		l.observe(m.Ballot)
	case KindChosen:
		l.onChosen(m)
	case KindHeartbeat:
		l.observe(m.Ballot)
		if m.Ballot == l.highest {
			l.hint = m.From
			l.lastHeard = l.now
		}
	case KindRecover:
		l.sendChosen(m.From, m.Slot)
	case KindWatermark:
		l.onWatermark(m.From, m.Slot, m.Durable)
	}
}

// observe steps down if b is newer than anything this leader holds.
func (l *Leader) observe(b Ballot) {
	if !l.highest.Less(b) {
		return
	}
	l.highest = b
	l.lastHeard = l.now
	if l.lead != follower {
		l.lead = follower
		l.pending = map[uint64]*proposal{}
		l.waiting = nil
		l.timeout = l.randomTimeout()
	}
}

func (l *Leader) propose(from string, cmds []Command) {
	switch l.lead {
	case active:
		l.assign(Value{Commands: cmds})
	case candidate:
		l.waiting = append(l.waiting, cmds...)
	default:
		hint := l.hint
		if hint == l.self {
			hint = ""
		}
		l.send(Message{Kind: KindNotLeader, To: from, Leader: hint})
	}
}

func (l *Leader) assign(v Value) {
	slot := l.nextSlot
	l.nextSlot++
	l.sendPhase2a(slot, v)
}

func (l *Leader) sendPhase2a(slot uint64, v Value) {
	l.pending[slot] = &proposal{value: v, sentAt: l.now}
	proxy := l.cfg.ProxyLeaders[l.nextProxy%len(l.cfg.ProxyLeaders)]
	l.nextProxy++
	l.send(Message{Kind: KindPhase2a, To: proxy, Ballot: l.ballot, Slot: slot, Value: v})
}

func (l *Leader) campaign() {
	l.Elections++
	l.ballot = Ballot{Round: l.highest.Round + 1, ID: l.id}
	l.highest = l.ballot
	b := l.ballot
	l.rd.Persist = append(l.rd.Persist, PersistOp{Promised: &b})
	l.lead = candidate
	l.hint = ""
	l.votes = make([]map[string]bool, len(l.cfg.Groups))
	for i := range l.votes {
		l.votes[i] = map[string]bool{}
	}
	l.best = map[uint64]Entry{}
	l.p1GC = 0
	l.sendPhase1a()
}

func (l *Leader) sendPhase1a() {
	l.p1Sent = l.now
	for gi, g := range l.cfg.Groups {
		for _, a := range g.Acceptors {
			if !l.votes[gi][a] {
				l.send(Message{Kind: KindPhase1a, To: a, Ballot: l.ballot, Slot: l.watermark})
			}
		}
	}
}

func (l *Leader) groupOf(acceptor string) int {
	for gi, g := range l.cfg.Groups {
		if g.index(acceptor) >= 0 {
			return gi
		}
	}
	return -1
}

func (l *Leader) onPhase1b(m Message) {
	if l.lead != candidate || m.Ballot != l.ballot {
		return
	}
	gi := l.groupOf(m.From)
	if gi < 0 {
		return
	}
	l.votes[gi][m.From] = true
	l.p1GC = max(l.p1GC, m.Slot)
	for _, e := range m.Entries {
		if cur, ok := l.best[e.Slot]; !ok || cur.Ballot.Less(e.Ballot) {
			l.best[e.Slot] = e
		}
	}
	for gi, g := range l.cfg.Groups {
		if !g.IsReadQuorum(l.votes[gi]) {
			return
		}
	}
	l.becomeActive()
}

// becomeActive finishes phase 1: every slot from the watermark up to the
// highest slot any acceptor reported is proposed again, with the value
// accepted in the highest ballot, or a no-op where nothing was accepted.
func (l *Leader) becomeActive() {
	l.lead = active
	l.hint = l.self
	l.lastBeat = l.now - l.cfg.HeartbeatTicks
	l.advanceWatermark(l.p1GC)
	top := l.watermark
	for s := range l.best {
		top = max(top, s+1)
	}
	// No slot at or past top was accepted by a read quorum of its group, so
	// none can have been chosen: assignment restarts there, whatever this
	// leader handed out under an older ballot.
	l.nextSlot = top
	for s := l.watermark; s < top; s++ {
		if _, done := l.chosen[s]; done {
			continue
		}
		if e, ok := l.best[s]; ok {
			l.sendPhase2a(s, e.Value)
		} else {
			l.sendPhase2a(s, Value{Noop: true})
		}
	}
	l.best = map[uint64]Entry{}
	if len(l.waiting) > 0 {
		cmds := l.waiting
		l.waiting = nil
		for len(cmds) > 0 {
			n := min(len(cmds), l.cfg.BatchSize)
			l.assign(Value{Commands: cmds[:n]})
			cmds = cmds[n:]
		}
	}
	l.heartbeat()
}

// onChosen records a slot a proxy leader saw chosen. The message carries
// no value: the value is the one this leader proposed in that ballot (Paxos
// guarantees no other can be chosen). A slot chosen in an older ballot is
// not counted: the leader must know every value below its watermark, so
// that it can serve replicas that missed them, and so that phase 1 after a
// restart of leadership recovers from the right place.
func (l *Leader) onChosen(m Message) {
	l.ChosenRecv++
	slot := m.Slot
	p := l.pending[slot]
	if p == nil || m.Ballot != l.ballot || slot < l.watermark {
		return
	}
	delete(l.pending, slot)
	v := p.value
	l.chosen[slot] = &v
	l.advanceWatermark(l.watermark)
}

// advanceWatermark raises the watermark to at least w, then past every
// slot known chosen.
func (l *Leader) advanceWatermark(w uint64) {
	l.watermark = max(l.watermark, w)
	for {
		if _, ok := l.chosen[l.watermark]; !ok {
			break
		}
		l.watermark++
	}
}

// sendChosen answers a replica that is missing slots from `from` on with
// the chosen values this leader remembers.
func (l *Leader) sendChosen(to string, from uint64) {
	var entries []Entry
	for s := from; s < l.watermark && len(entries) < 256; s++ {
		if v := l.chosen[s]; v != nil {
			entries = append(entries, Entry{Slot: s, Value: *v})
		}
	}
	if len(entries) > 0 {
		l.send(Message{Kind: KindChosen, To: to, Entries: entries})
	}
}

// onWatermark learns how far a replica has executed, and up to where it
// holds a durable snapshot. Once a quorum of replicas holds snapshots at or
// past w, acceptors may forget the slots below w: every replica can recover
// them from a peer's snapshot, even after all replicas restart.
func (l *Leader) onWatermark(from string, exec, durable uint64) {
	l.replicaWM[from] = durable
	if l.lead == active && exec < l.watermark {
		l.sendChosen(from, exec)
	}
	q := l.cfg.replicaQuorum()
	if len(l.replicaWM) < q {
		return
	}
	wms := make([]uint64, 0, len(l.replicaWM))
	for _, v := range l.replicaWM {
		wms = append(wms, v)
	}
	slices.Sort(wms)
	slices.Reverse(wms)
	gc := wms[q-1]
	if l.lead != active || gc <= l.gcSent {
		return
	}
	l.gcSent = gc
	// Slots below gc are executed by a quorum of replicas, so chosen: the
	// leader need not remember or chase them any longer.
	for s := range l.chosen {
		if s < gc {
			delete(l.chosen, s)
		}
	}
	for s := range l.pending {
		if s < gc {
			delete(l.pending, s)
		}
	}
	l.advanceWatermark(gc)
	for _, g := range l.cfg.Groups {
		for _, a := range g.Acceptors {
			l.send(Message{Kind: KindGC, To: a, Slot: gc})
		}
	}
}

// heartbeat tells the other leaders this one is alive, and the batchers
// where to send their batches.
func (l *Leader) heartbeat() {
	l.lastBeat = l.now
	for _, o := range l.cfg.Leaders {
		if o != l.self {
			l.send(Message{Kind: KindHeartbeat, To: o, Ballot: l.ballot})
		}
	}
	for _, b := range l.cfg.Batchers {
		l.send(Message{Kind: KindHeartbeat, To: b, Ballot: l.ballot})
	}
}

// Tick advances time: heartbeats and retransmissions for the active leader,
// phase 1 retries for a candidate, election timeouts for a follower.
func (l *Leader) Tick() {
	l.now++
	switch l.lead {
	case active:
		if l.now-l.lastBeat >= l.cfg.HeartbeatTicks {
			l.heartbeat()
		}
		for _, s := range sortedKeys(l.pending) {
			if p := l.pending[s]; l.now-p.sentAt >= l.cfg.ResendTicks {
				l.sendPhase2a(s, p.value)
			}
		}
	case candidate:
		if l.now-l.p1Sent >= l.cfg.ResendTicks {
			l.sendPhase1a()
		}
	default:
		if l.now-l.lastHeard >= l.timeout {
			l.timeout = l.randomTimeout()
			l.campaign()
		}
	}
}

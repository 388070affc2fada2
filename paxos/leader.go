package paxos

import (
	"math/rand/v2"
	"slices"
)

type leaderState uint8

const (
	follower  leaderState = iota
	matching              // registering the round with the matchmakers
	candidate             // phase 1
	active
)

var leaderStateNames = [...]string{"follower", "matching", "candidate", "active"}

type proposal struct {
	value  Value
	sentAt int
	tries  int    // resends so far: each waits twice as long (backoff)
	proxy  string // the proxy leader it was last sent to
}

// phase1Config is one live configuration in a leader's phase 1 and the
// acceptors of each of its groups that have promised.
type phase1Config struct {
	rc    RoundConfig
	votes []map[string]bool
}

// Leader is a proposer. One leader is active at a time. A leader's round
// (its ballot) uses one set of acceptor groups for phase 2, registered
// with the matchmakers first; phase 1 then runs against every configuration
// older rounds registered that is still live, and the leader assigns each
// batch a slot and hands it to a proxy leader for phase 2. Standby leaders
// watch the active leader's heartbeats and campaign, with a higher ballot,
// when they stop.
//
// Reconfiguration. The configuration (Config) is chosen in the log: the
// active leader proposes the next epoch as a slot's value and adopts it
// when that slot is chosen. Roles other than acceptors simply follow the
// newest epoch. When the acceptor groups change, the leader starts a new
// round with the new groups: it registers them with the matchmakers, runs
// phase 1 over the old round's groups (and any other live ones), and from
// then on proposes in the new groups only. Once every slot that could have
// been chosen in an older round is chosen in the new one (or held durably
// by a quorum of replicas), it tells the matchmakers to retire the older
// rounds; their acceptors are no longer needed.
//
// Safety argument (after Matchmaker Paxos, §4-5). Rounds are ballots; round
// i's configuration C_i is the acceptor groups it registered with a
// majority of matchmakers before anything else. Claim: if v is chosen in
// slot s in round j (a write quorum of s's group in C_j accepted (s, j, v)),
// every round i > j that reaches phase 2 proposes v in s, if it proposes
// anything there.
//
//  1. Round i learns C_j, or C_j was retired. Both registered with a
//     majority; a matchmaker in both recorded one first. Had it recorded i
//     first, it would have refused j (it refuses rounds below the newest it
//     holds), so it recorded j first and reported C_j to i: leader i unions
//     every older round that a majority of matchmakers report, minus
//     retired ones. (Rounds of an older configuration than the retiring
//     round's are dropped too: such a round registered above a round that
//     completed matchmaking would have been refused by some matchmaker in
//     both majorities, so it never completed matchmaking and chose nothing.)
//  2. Retired rounds hold nothing i needs. The leader of round r retires
//     rounds below r only when every slot from the floor up to the highest
//     slot its phase 1 saw is chosen in round r (a new round forgets what it
//     knew chosen above the floor and proposes it again), and every slot
//     below the floor is durable on a quorum of replicas; the floor travels
//     through the matchmakers, and no leader recovers a slot below it. By
//     induction on rounds, a v chosen below r is then chosen in C_r as well.
//  3. Round i's phase 1 reads a read quorum of every group of every live
//     configuration, so it meets the write quorum that chose v (in C_j, or
//     in the C_r of step 2), and proposes the value of the highest ballot it
//     sees in s. That ballot is at least j, and by induction every round
//     between j and i proposed v in s. Rounds below i can gain no vote from
//     an acceptor that promised i.
//
// The slot-to-group mapping only decides where phase 2 runs: different
// rounds may map a slot to different groups without conflict. A
// configuration enters the log (Value.Config) before any round uses its
// groups, and matchmakers refuse rounds of a configuration older than one
// they hold, so a leader with a stale configuration cannot bring retired
// acceptors back.
type Leader struct {
	outbox
	membership
	id      uint32
	rng     *rand.Rand
	now     int
	lead    leaderState
	removed bool // no longer a leader of the configuration

	ballot  Ballot // this leader's ballot while matching, candidate or active
	highest Ballot // the highest ballot seen anywhere
	hint    string // the leader believed active

	// matchmaking
	round     RoundConfig // this round's acceptor groups
	mmVotes   map[string]bool
	mmRounds  map[Ballot]RoundConfig
	mmRetired Ballot
	mmFloor   uint64
	mmEpoch   uint64 // retired epoch
	mmSent    int

	// phase 1
	p1       []phase1Config
	p1Cursor map[string]uint64 // acceptors whose votes come in pages: the next page
	best     map[uint64]Entry
	p1GC     uint64
	p1Sent   int
	p1Heard  int // when phase 1 last made progress (started, or an answer)
	waiting  []Command
	previous map[uint64]Value // what this leader proposed in its last round

	// phase 2
	nextSlot  uint64
	pending   map[uint64]*proposal
	nextProxy int
	chosen    map[uint64]*Value // values chosen at or above the GC point
	watermark uint64            // every slot below is chosen

	// retirement of older rounds
	live         []RoundConfig // configurations phase 1 covered, then only round
	retireAt     uint64        // once the watermark passes this, older rounds may go
	retireVotes  map[string]bool
	retireSent   int
	retiring     bool
	retiredBelow Ballot

	// reconfiguration
	cfgSlot    uint64 // slot of the reconfiguration in flight
	cfgPending bool
	cfgFrom    string // who asked for it

	lastHeard int
	timeout   int
	lastBeat  int
	replicaWM map[string]uint64
	heldBy    map[string]uint64 // durable snapshot slot of every replica that reports, member or not
	gcSent    uint64
	leaving   map[string]int // roles removed, and how many more heartbeats tell them
	stats     LeaderStatus

	// a change of acceptor groups waiting for the replicas to hold the log
	// through it before the new round starts
	moving    bool
	moveAt    uint64
	moveSince int
}

// leavingBeats is how many heartbeats tell a removed role of the
// configuration that removed it.
const leavingBeats = 20

// LeaderStatus is a leader's counters and state, for metrics and status.
type LeaderStatus struct {
	State      string
	Ballot     Ballot
	Epoch      uint64
	Watermark  uint64
	NextSlot   uint64
	Elections  int
	Dropped    int           // commands dropped while not yet active
	Live       []RoundConfig // acceptor configurations not yet retired
	Retired    Ballot        // rounds below are retired
	Retiring   bool          // older rounds are still live
	ChosenRecv int
	Removed    bool
	RoundEpoch uint64 // the configuration epoch of the round's acceptor groups
}

// NewLeader returns leader number id of cfg.Leaders, seeded for its random
// election timeouts. last is the highest ballot it persisted before a
// restart (zero for a fresh leader): a leader never campaigns twice with the
// same ballot, even across restarts, because two proposals in one ballot
// could differ.
func NewLeader(cfg Config, id int, seed uint64, last Ballot) *Leader {
	return NewLeaderAt(cfg, cfg.Leaders[id], seed, last)
}

// NewLeaderAt returns the leader at self. A leader not (or no longer) in
// cfg.Leaders only follows until a configuration that lists it arrives.
func NewLeaderAt(cfg Config, self string, seed uint64, last Ballot) *Leader {
	l := &Leader{
		outbox:  outbox{self: self},
		pending: map[uint64]*proposal{}, chosen: map[uint64]*Value{}, replicaWM: map[string]uint64{}, heldBy: map[string]uint64{},
		best: map[uint64]Entry{}, highest: last, leaving: map[string]int{},
	}
	l.adoptConfig(cfg)
	l.rng = rand.New(rand.NewPCG(seed, uint64(l.id)+1))
	l.timeout = l.randomTimeout()
	if i := slices.Index(cfg.Leaders, self); i == 0 && last == (Ballot{}) {
		// The first leader of a new log campaigns at once. Restarted, it
		// waits like the others: another leader is likely active, and a
		// campaign would only force a needless failover.
		l.timeout = 1
	}
	return l
}

// Restore makes a configuration the leader persisted before a restart its
// own, if it is newer than the one it started with.
func (l *Leader) Restore(c Config) {
	if c.Epoch > l.cfg.Epoch && c.Validate() == nil {
		l.adoptConfig(c)
	}
}

// adoptConfig makes c the leader's configuration and finds its ballot id.
// The configuration is persisted: a leader that restarts with an older
// one could not register rounds (matchmakers refuse rounds of an older
// configuration) and might find no member left to learn from.
func (l *Leader) adoptConfig(c Config) {
	if l.adopt(&l.outbox, c) && l.cfg.Epoch > 0 {
		cc := l.cfg.Clone()
		l.rd.Persist = append(l.rd.Persist, PersistOp{Config: &cc})
	}
	i := slices.Index(l.cfg.Leaders, l.self)
	l.removed = i < 0
	if i >= 0 {
		l.id = l.cfg.LeaderID(i)
	}
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

// Status returns the leader's counters and state.
func (l *Leader) Status() LeaderStatus {
	s := l.stats
	s.State, s.Ballot, s.Epoch = leaderStateNames[l.lead], l.ballot, l.cfg.Epoch
	s.Watermark, s.NextSlot, s.Retired, s.Removed = l.watermark, l.nextSlot, l.retiredBelow, l.removed
	s.Live = slices.Clone(l.live)
	s.RoundEpoch = l.round.Epoch
	s.Retiring = l.retiring || l.lead != active
	return s
}

// Step handles one message.
func (l *Leader) Step(m Message) {
	if next, handled := l.gossip(&l.outbox, l.now, m); handled {
		if next != nil {
			l.applyConfig(*next)
		}
		return
	}
	switch m.Kind {
	case KindRequest:
		l.propose(m.From, []Command{m.Command})
	case KindBatch:
		if l.lead == follower {
			// Hand the batch back with the hint, so that the batcher sends
			// it on at once rather than its clients resending it later.
			hint := l.hint
			if hint == l.self {
				hint = ""
			}
			back := Message{Kind: KindNotLeader, To: m.From, Leader: hint}
			if hint != "" {
				back.Batch, back.Hops = m.Batch, m.Hops
			}
			l.send(back)
			return
		}
		l.propose(m.From, m.Batch)
	case KindMatchB:
		l.onMatchB(m)
	case KindGarbageB:
		l.onGarbageB(m)
	case KindPhase1b:
		l.onPhase1b(m)
	case KindNack:
		if l.lead == matching && m.Ballot == l.ballot && m.Epoch > l.round.Epoch && m.Epoch <= l.cfg.Epoch && slices.Contains(l.cfg.Matchmakers, m.From) {
			// Refused for the configuration this round was registered
			// under, while this leader has learnt one as new since:
			// register a new round under that one.
			l.rematch()
			return
		}
		if l.lead == matching && m.Ballot == l.ballot && m.Epoch > l.cfg.Epoch && slices.Contains(l.cfg.Matchmakers, m.From) {
			// The matchmakers hold rounds of a newer configuration than
			// ours: stand by, and take the newer configuration from the
			// refusal, or ask roles that follow the log for it.
			l.stepDown()
			l.lastHeard = l.now
			if c := m.Config; c != nil && c.Epoch > l.cfg.Epoch && c.Validate() == nil {
				l.applyConfig(c.Clone().withDefaults())
				return
			}
			for _, a := range slices.Concat(l.cfg.Replicas, l.cfg.ProxyLeaders, l.cfg.Leaders) {
				if a != l.self {
					l.send(Message{Kind: KindConfigQuery, To: a})
				}
			}
			return
		}
		l.observe(m.Ballot)
	case KindChosen:
		l.onChosen(m)
	case KindHeartbeat:
		l.observe(m.Ballot)
		if m.Ballot == l.highest {
			l.hint = m.From
			l.lastHeard = l.now
		}
	case KindTakeover:
		if l.lead == follower && !l.removed {
			l.campaign()
		}
	case KindRecover:
		l.sendChosen(m.From, m.Slot)
		l.pointToHolder(m.From, m.Slot)
		if l.lead == active && m.Upto > l.nextSlot && m.Upto <= l.nextSlot+1<<20 {
			// A read waits for slots below Upto, one of which only a lone
			// acceptor reported: fill them, so the replica can execute.
			l.fillTo(m.Upto)
		}
	case KindWatermark:
		l.onWatermark(m.From, m.Slot, m.Durable)
	case KindReconfigure:
		l.onReconfigure(m)
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
		l.stepDown()
	}
}

func (l *Leader) stepDown() {
	l.lead = follower
	l.pending = map[uint64]*proposal{}
	l.waiting = nil
	l.timeout = l.randomTimeout()
	if l.cfgPending && l.cfgFrom != "" {
		l.send(Message{Kind: KindReconfigured, To: l.cfgFrom, Note: "leader stepped down; retry"})
	}
	l.cfgPending, l.cfgFrom = false, ""
	l.retiring = false
}

func (l *Leader) propose(from string, cmds []Command) {
	switch l.lead {
	case active:
		l.assign(Value{Commands: cmds})
	case matching, candidate:
		if len(l.waiting)+len(cmds) > l.cfg.MaxWaiting {
			l.stats.Dropped += len(cmds) // the clients retry
			return
		}
		l.waiting = append(l.waiting, cmds...)
	default:
		hint := l.hint
		if hint == l.self {
			hint = ""
		}
		l.send(Message{Kind: KindNotLeader, To: from, Leader: hint})
	}
}

func (l *Leader) assign(v Value) uint64 {
	slot := l.nextSlot
	l.nextSlot++
	l.sendPhase2a(slot, v)
	return slot
}

// fillTo proposes no-ops up to slot end.
func (l *Leader) fillTo(end uint64) {
	for l.nextSlot < end {
		l.assign(Value{Noop: true})
	}
}

// maxBackoff caps how many times a slot's resend period doubles.
const maxBackoff = 4

// backoff is how long to wait before resending something sent tries
// times already: base, then twice as long each time, up to 2^maxBackoff
// times base. A saturated role then gets fewer copies of what it has not
// yet had time to answer, instead of more.
func backoff(base, tries int) int {
	return base << min(tries, maxBackoff)
}

// sendPhase2a hands slot to the next proxy leader in turn. A resend goes
// to another proxy leader than the last one it went to: that one may be
// down or frozen, and every later slot waits for this one to be chosen.
func (l *Leader) sendPhase2a(slot uint64, v Value) {
	prev := ""
	if p := l.pending[slot]; p != nil {
		prev = p.proxy
	}
	proxy := l.cfg.ProxyLeaders[l.nextProxy%len(l.cfg.ProxyLeaders)]
	l.nextProxy++
	if proxy == prev && len(l.cfg.ProxyLeaders) > 1 {
		proxy = l.cfg.ProxyLeaders[l.nextProxy%len(l.cfg.ProxyLeaders)]
		l.nextProxy++
	}
	l.pending[slot] = &proposal{value: v, sentAt: l.now, proxy: proxy}
	g := l.round.Groups[slot%uint64(len(l.round.Groups))]
	l.send(Message{Kind: KindPhase2a, To: proxy, Ballot: l.ballot, Slot: slot, Value: v, Group: &g})
}

// onChosen records a slot a proxy leader saw chosen. The message carries
// no value: the value is the one this leader proposed in that ballot (Paxos
// guarantees no other can be chosen). A slot chosen in an older ballot is
// not counted: the leader must know every value below its watermark, so
// that it can serve replicas that missed them, and so that phase 1 after a
// restart of leadership recovers from the right place.
func (l *Leader) onChosen(m Message) {
	l.stats.ChosenRecv++
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
// slot known chosen, adopting each configuration it passes.
func (l *Leader) advanceWatermark(w uint64) {
	l.watermark = max(l.watermark, w)
	for {
		v, ok := l.chosen[l.watermark]
		if !ok {
			break
		}
		l.watermark++
		if v.Config != nil {
			l.configChosen(l.watermark-1, *v.Config)
		}
	}
	if l.cfgPending && l.watermark > l.cfgSlot {
		// The reconfiguration's slot is behind the watermark: chosen, or
		// garbage-collected because replicas executed it.
		l.cfgPending = false
	}
	l.maybeRetire()
}

// sendChosen answers a replica that is missing slots from `from` on with
// the chosen values this leader remembers.
func (l *Leader) sendChosen(to string, from uint64) {
	var entries []Entry
	// Nothing below the GC point is kept (onWatermark forgets it, and a
	// slot is only counted chosen at or above the watermark): start there,
	// not at a replica's far older slot.
	for s := max(from, l.gcSent); s < l.watermark && len(entries) < 256; s++ {
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
	l.heldBy[from] = durable
	if !slices.Contains(l.cfg.Replicas, from) {
		return
	}
	l.replicaWM[from] = durable
	if l.lead == active && exec < l.watermark {
		l.sendChosen(from, exec)
	}
	q := l.cfg.replicaQuorum()
	wms := make([]uint64, 0, len(l.cfg.Replicas))
	for _, r := range l.cfg.Replicas {
		if v, ok := l.replicaWM[r]; ok {
			wms = append(wms, v)
		}
	}
	if len(wms) < q {
		return
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
	defer l.maybeMove()
	sent := map[string]bool{}
	for _, rc := range l.live {
		for _, g := range rc.Groups {
			for _, a := range g.Acceptors {
				if !sent[a] {
					sent[a] = true
					l.send(Message{Kind: KindGC, To: a, Slot: gc})
				}
			}
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
	for _, a := range sortedKeys(l.leaving) {
		c := l.cfg.Clone()
		l.send(Message{Kind: KindConfigReply, To: a, Config: &c})
		if l.leaving[a]--; l.leaving[a] <= 0 {
			delete(l.leaving, a)
		}
	}
}

// Tick advances time: heartbeats and retransmissions for the active leader,
// matchmaking and phase 1 retries for a candidate, election timeouts for a
// follower.
func (l *Leader) Tick() {
	l.now++
	switch l.lead {
	case active:
		if l.now-l.lastBeat >= l.cfg.HeartbeatTicks {
			l.heartbeat()
		}
		due := func(p *proposal) bool { return l.now-p.sentAt >= backoff(l.cfg.ResendTicks, p.tries) }
		for _, s := range keysWhere(l.pending, due) {
			p := l.pending[s]
			l.sendPhase2a(s, p.value)
			l.pending[s].tries = p.tries + 1
		}
		l.maybeRetire()
		l.maybeMove()
	case matching:
		if l.now-l.mmSent >= l.cfg.ResendTicks {
			l.sendMatchA()
		}
	case candidate:
		if l.now-l.p1Heard >= phase1Stall*l.cfg.ResendTicks {
			// No acceptor has answered for a long time: those of the
			// rounds the matchmakers named may all be gone, their rounds
			// retired since by a newer leader. Match again.
			l.rematch()
		} else if l.now-l.p1Sent >= l.cfg.ResendTicks {
			l.sendPhase1a()
		}
	default:
		if !l.removed && l.now-l.lastHeard >= l.timeout {
			l.timeout = l.randomTimeout()
			l.campaign()
		}
	}
}

package paxos

import (
	"slices"
)

// The leader's election: matchmaking (the acceptor rounds a new ballot
// must read), phase 1 over them, becoming active, and retiring the
// rounds below its own once they hold nothing that matters.

// phase1Stall is how many resend periods phase 1 may go without an answer
// before the leader matches again.
const phase1Stall = 10

// rematch starts a new round under the current configuration while
// matchmaking an older one. Phase 1 has not run, so what the leader was to
// propose again is kept.
func (l *Leader) rematch() {
	prev := l.previous
	l.campaign()
	for s, v := range prev {
		if _, ok := l.previous[s]; !ok {
			l.previous[s] = v
		}
	}
}

// campaign starts a new round with the configuration's acceptor groups.
func (l *Leader) campaign() {
	if l.removed {
		return
	}
	l.moving = false
	// What this leader had in flight may not have reached any acceptor;
	// if phase 1 finds no vote for such a slot, it proposes the same value
	// again rather than a no-op, so its clients need not retry.
	l.previous = map[uint64]Value{}
	for s, p := range l.pending {
		l.previous[s] = p.value
	}
	l.pending = map[uint64]*proposal{}
	// A new round forgets which slots it knows chosen above the replicas'
	// GC point and proposes them again: they were chosen in an older
	// round's acceptor groups, and those may be retired only once every
	// such slot is chosen in this round's groups too (or durable on a
	// quorum of replicas). Phase 1 finds their values again.
	for s, v := range l.chosen {
		if s >= l.gcSent {
			l.previous[s] = *v
		}
	}
	clear(l.chosen)
	l.watermark = min(l.watermark, l.gcSent)
	l.stats.Elections++
	l.ballot = Ballot{Round: l.highest.Round + 1, ID: l.id}
	l.highest = l.ballot
	b := l.ballot
	l.rd.Persist = append(l.rd.Persist, PersistOp{Promised: &b})
	l.hint = ""
	l.retiring = false
	l.round = RoundConfig{Ballot: l.ballot, Epoch: l.cfg.Epoch, Groups: cloneGroups(l.cfg.Groups)}
	if len(l.cfg.Matchmakers) == 0 {
		// A fixed set of acceptor groups: phase 1 covers just those.
		l.startPhase1([]RoundConfig{l.round})
		return
	}
	l.lead = matching
	l.mmVotes = map[string]bool{}
	l.mmRounds = map[Ballot]RoundConfig{}
	l.mmRetired = Ballot{}
	l.mmFloor, l.mmEpoch = 0, 0
	l.sendMatchA()
}

func (l *Leader) sendMatchA() {
	l.mmSent = l.now
	for _, mm := range l.cfg.Matchmakers {
		if !l.mmVotes[mm] {
			c := l.cfg.Clone()
			l.send(Message{Kind: KindMatchA, To: mm, Ballot: l.ballot, Rounds: []RoundConfig{l.round}, Config: &c})
		}
	}
}

func (l *Leader) onMatchB(m Message) {
	if l.lead != matching || m.Ballot != l.ballot || !slices.Contains(l.cfg.Matchmakers, m.From) {
		return
	}
	l.mmVotes[m.From] = true
	for _, rc := range m.Rounds {
		l.mmRounds[rc.Ballot] = rc
	}
	if l.mmRetired.Less(m.Retired) {
		l.mmRetired = m.Retired
	}
	l.mmFloor = max(l.mmFloor, m.Slot)
	l.mmEpoch = max(l.mmEpoch, m.RetiredEpoch)
	if len(l.mmVotes) < l.cfg.matchQuorum() {
		return
	}
	// Slots below the floor are durable on a quorum of replicas, and the
	// acceptor groups that chose them may be retired: never recover them.
	l.gcSent = max(l.gcSent, l.mmFloor)
	l.watermark = max(l.watermark, l.mmFloor)
	// Every older round not retired, each configuration once.
	var live []RoundConfig
	for _, b := range sortedBallots(l.mmRounds) {
		rc := l.mmRounds[b]
		if b.Less(l.mmRetired) || rc.Epoch < l.mmEpoch {
			continue
		}
		if i := slices.IndexFunc(live, func(x RoundConfig) bool { return groupsEqual(x.Groups, rc.Groups) }); i >= 0 {
			live[i] = rc // the newest round of a configuration stands for it
			continue
		}
		live = append(live, rc)
	}
	l.retiredBelow = l.mmRetired
	l.startPhase1(live)
}

func sortedBallots(m map[Ballot]RoundConfig) []Ballot {
	out := make([]Ballot, 0, len(m))
	for b := range m {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b Ballot) int { return cmpRound(RoundConfig{Ballot: a}, b) })
	return out
}

// startPhase1 runs phase 1 against every live configuration; with none
// (the very first round), no value was ever accepted and the leader is
// active at once.
func (l *Leader) startPhase1(live []RoundConfig) {
	l.lead = candidate
	l.p1 = nil
	for _, rc := range live {
		pc := phase1Config{rc: rc, votes: make([]map[string]bool, len(rc.Groups))}
		for i := range pc.votes {
			pc.votes[i] = map[string]bool{}
		}
		l.p1 = append(l.p1, pc)
	}
	l.live = live
	l.best = map[uint64]Entry{}
	l.p1Cursor = map[string]uint64{}
	l.p1GC = 0
	l.p1Heard = l.now
	if len(l.p1) == 0 {
		l.becomeActive()
		return
	}
	l.sendPhase1a()
}

func (l *Leader) sendPhase1a() {
	l.p1Sent = l.now
	sent := map[string]bool{}
	for _, pc := range l.p1 {
		for gi, g := range pc.rc.Groups {
			for _, a := range g.Acceptors {
				if !pc.votes[gi][a] && !sent[a] {
					sent[a] = true
					from := l.watermark
					if c, ok := l.p1Cursor[a]; ok {
						from = c
					}
					l.send(Message{Kind: KindPhase1a, To: a, Ballot: l.ballot, Slot: from})
				}
			}
		}
	}
}

func (l *Leader) onPhase1b(m Message) {
	if m.Ballot != l.ballot {
		return
	}
	if l.lead == active {
		// A late answer: phase 1 finished without it, so nothing it
		// reports was chosen, but a slot past the ones assigned must not
		// stay empty, or a leaderless read that saw it would wait forever.
		for _, e := range m.Entries {
			if e.Slot >= l.nextSlot && e.Slot < l.nextSlot+1<<20 {
				l.fillTo(e.Slot + 1)
			}
		}
		return
	}
	if l.lead != candidate {
		return
	}
	l.p1Heard = l.now
	if m.Upto != 0 {
		// One page of the acceptor's votes: keep it, and ask for the next.
		// The acceptor promised this ballot, so its votes can change only
		// by a higher ballot, which would end this phase 1 anyway.
		if c, ok := l.p1Cursor[m.From]; ok && m.Upto <= c {
			return // a duplicate of an earlier page
		}
		l.p1GC = max(l.p1GC, m.Slot)
		l.mergeVotes(m.Entries)
		l.p1Cursor[m.From] = m.Upto
		l.send(Message{Kind: KindPhase1a, To: m.From, Ballot: l.ballot, Slot: m.Upto})
		return
	}
	member := false
	for _, pc := range l.p1 {
		for gi, g := range pc.rc.Groups {
			if g.index(m.From) >= 0 {
				pc.votes[gi][m.From] = true
				member = true
			}
		}
	}
	if !member {
		return
	}
	l.p1GC = max(l.p1GC, m.Slot)
	l.mergeVotes(m.Entries)
	for _, pc := range l.p1 {
		for gi, g := range pc.rc.Groups {
			if !g.IsReadQuorum(pc.votes[gi]) {
				return
			}
		}
	}
	l.becomeActive()
}

// mergeVotes keeps, for each slot, the vote of the highest ballot.
func (l *Leader) mergeVotes(entries []Entry) {
	for _, e := range entries {
		if cur, ok := l.best[e.Slot]; !ok || cur.Ballot.Less(e.Ballot) {
			l.best[e.Slot] = e
		} else if cur.Ballot == e.Ballot && !sameValue(cur.Value, e.Value) {
			l.violated("phase 1: slot %d has two values in ballot %s: %s and %s", e.Slot, e.Ballot, describe(cur.Value), describe(e.Value))
		}
	}
}

// becomeActive finishes phase 1: every slot from the watermark up to the
// highest slot any acceptor reported is proposed again, with the value
// accepted in the highest ballot, or where nothing was accepted the value
// this leader proposed there before, or a no-op.
func (l *Leader) becomeActive() {
	l.lead = active
	l.hint = l.self
	l.lastBeat = l.now - l.cfg.HeartbeatTicks
	// Acceptors forget slots below p1GC only once a quorum of replicas
	// holds them durably: that is a floor this leader may hand on.
	l.gcSent = max(l.gcSent, l.p1GC)
	l.advanceWatermark(l.p1GC)
	top := l.watermark
	for s := range l.best {
		top = max(top, s+1)
	}
	// No slot at or past top was accepted by a read quorum of its group in
	// any live configuration, so none can have been chosen: assignment
	// restarts there, whatever this leader handed out in an older round.
	l.nextSlot = top
	for s := l.watermark; s < top; s++ {
		if _, done := l.chosen[s]; done {
			continue
		}
		v := Value{Noop: true}
		if e, ok := l.best[s]; ok {
			v = e.Value
		} else if p, ok := l.previous[s]; ok {
			v = p
		}
		if v.Config != nil {
			l.cfgSlot, l.cfgPending = s, true
		}
		l.sendPhase2a(s, v)
	}
	l.best = map[uint64]Entry{}
	l.previous = nil
	l.retireAt = top
	l.retiring = len(l.live) > 1 || (len(l.live) == 1 && l.live[0].Ballot != l.ballot)
	l.retireVotes = map[string]bool{}
	l.retireSent = l.now - l.cfg.ResendTicks
	if !l.retiring {
		l.live = []RoundConfig{l.round}
	} else if !slices.ContainsFunc(l.live, func(x RoundConfig) bool { return groupsEqual(x.Groups, l.round.Groups) }) {
		l.live = append(l.live, l.round)
	}
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
	l.maybeRetire()
	if !groupsEqual(l.round.Groups, l.cfg.Groups) {
		// A newer configuration arrived during phase 1: move to its
		// acceptor groups.
		l.campaign()
	}
}

// maybeRetire asks the matchmakers to retire the rounds below this one
// once every slot that could have been chosen in them is chosen in this
// round or below the replicas' GC point.
func (l *Leader) maybeRetire() {
	if l.lead != active || !l.retiring || l.watermark < l.retireAt || len(l.cfg.Matchmakers) == 0 {
		return
	}
	if l.now-l.retireSent < l.cfg.ResendTicks {
		return
	}
	l.retireSent = l.now
	for _, mm := range l.cfg.Matchmakers {
		if !l.retireVotes[mm] {
			l.send(Message{Kind: KindGarbageA, To: mm, Ballot: l.ballot, Slot: l.gcSent, Rounds: []RoundConfig{l.round}})
		}
	}
}

func (l *Leader) onGarbageB(m Message) {
	if l.lead != active || !l.retiring || m.Ballot != l.ballot || !slices.Contains(l.cfg.Matchmakers, m.From) {
		return
	}
	l.retireVotes[m.From] = true
	if len(l.retireVotes) >= l.cfg.matchQuorum() {
		l.retiring = false
		l.retiredBelow = l.ballot
		l.live = []RoundConfig{l.round}
	}
}

package paxos

import "slices"

type phase2 struct {
	ballot Ballot
	value  Value
	group  Group
	leader string
	votes  map[string]bool
	sentAt int
	born   int
	tries  int // resends so far (backoff)
	// thrifty holds the write quorum phase 2a went to first (see
	// thriftyTargets) until it goes to the rest too.
	thrifty []string
}

// widenTicks is how long a slot sent to a write quorum only waits for
// its votes before it goes to the group's other acceptors too.
const widenTicks = 2

// silenceTicks is how long an acceptor that left a thrifty slot
// unanswered is left out of thrifty quorums, unless it votes.
const silenceTicks = 100

// giveUpResends is how many unanswered resends a proxy leader makes before
// it drops a slot; the leader resends what it still needs.
const giveUpResends = 50

// ProxyLeader runs phase 2 for the leader: it sends a slot's value to the
// acceptors of the group the leader named, counts their votes until a
// write quorum has accepted, and announces the value as chosen to the
// replicas and the leader. This takes the fan-out and fan-in off the
// leader. A proxy leader the configuration leaves out finishes what it
// holds; Drained reports when it has nothing left.
type ProxyLeader struct {
	outbox
	membership
	now     int
	pending map[uint64]*phase2
	// silent holds, by acceptor, the tick it last left a thrifty slot
	// unanswered: it is left out of thrifty quorums for silenceTicks.
	silent map[string]int
}

// NewProxyLeader returns proxy leader number id of cfg.ProxyLeaders.
func NewProxyLeader(cfg Config, id int) *ProxyLeader {
	return NewProxyLeaderAt(cfg, cfg.ProxyLeaders[id])
}

// NewProxyLeaderAt returns the proxy leader at self.
func NewProxyLeaderAt(cfg Config, self string) *ProxyLeader {
	p := &ProxyLeader{outbox: outbox{self: self}, pending: map[uint64]*phase2{}, silent: map[string]int{}}
	p.adopt(&p.outbox, cfg)
	return p
}

// Drained reports whether the proxy leader is out of the configuration
// and holds no slot in flight: its process may stop.
func (p *ProxyLeader) Drained() bool {
	return len(p.pending) == 0 && !slices.Contains(p.cfg.ProxyLeaders, p.self)
}

// Pending returns how many slots the proxy leader holds in flight.
func (p *ProxyLeader) Pending() int { return len(p.pending) }

// Step handles one message.
func (p *ProxyLeader) Step(m Message) {
	if next, handled := p.gossip(&p.outbox, p.now, m); handled {
		if next != nil {
			p.adopt(&p.outbox, *next)
		}
		return
	}
	switch m.Kind {
	case KindPhase2a:
		if m.Group == nil || m.Group.Validate() != nil {
			return
		}
		cur := p.pending[m.Slot]
		if cur != nil && m.Ballot.Less(cur.ballot) {
			return
		}
		first := cur == nil || cur.ballot != m.Ballot
		if first {
			cur = &phase2{ballot: m.Ballot, value: m.Value, group: *m.Group, leader: m.From, votes: map[string]bool{}, born: p.now}
			p.pending[m.Slot] = cur
		}
		// The leader's resend of a slot held here goes to everyone.
		p.sendPhase2a(m.Slot, cur, first)
	case KindPhase2b:
		cur := p.pending[m.Slot]
		if cur == nil || cur.ballot != m.Ballot || cur.group.index(m.From) < 0 {
			return
		}
		cur.votes[m.From] = true
		delete(p.silent, m.From)
		if cur.group.IsWriteQuorum(cur.votes) {
			delete(p.pending, m.Slot)
			p.sendAll(Message{Kind: KindChosen, Slot: m.Slot, Value: cur.value}, p.cfg.Replicas)
			// The leader knows the value; it needs only the news.
			p.send(Message{Kind: KindChosen, To: cur.leader, Slot: m.Slot, Ballot: cur.ballot})
		}
	case KindNack:
		cur := p.pending[m.Slot]
		if cur == nil || !cur.ballot.Less(m.Ballot) {
			return
		}
		delete(p.pending, m.Slot)
		p.send(Message{Kind: KindNack, To: cur.leader, Ballot: m.Ballot, Slot: m.Slot})
	}
}

func (p *ProxyLeader) sendPhase2a(slot uint64, cur *phase2, first bool) {
	cur.sentAt = p.now
	if first {
		// Thrifty (the paper's §3.3): a first send goes to a write
		// quorum only, the next in turn by slot, so each acceptor
		// stores and syncs a fraction of the slots. The rest get it
		// after widenTicks without a quorum of votes.
		if to := p.thriftyTargets(slot, cur.group); to != nil {
			cur.thrifty = to
			p.sendAll(Message{Kind: KindPhase2a, Ballot: cur.ballot, Slot: slot, Value: cur.value}, to)
			return
		}
	}
	cur.thrifty = nil
	to := make([]string, 0, len(cur.group.Acceptors))
	for _, a := range cur.group.Acceptors {
		if !cur.votes[a] {
			to = append(to, a)
		}
	}
	p.sendAll(Message{Kind: KindPhase2a, Ballot: cur.ballot, Slot: slot, Value: cur.value}, to)
}

// thriftyTargets returns a write quorum of g to send slot to first: the
// smallest majority, starting at the acceptor slot picks and skipping
// acceptors silent of late. Nil means every acceptor: a grid, a group
// whose every majority is all of it, or too many silent.
func (p *ProxyLeader) thriftyTargets(slot uint64, g Group) []string {
	n := len(g.Acceptors)
	need := n/2 + 1
	if p.cfg.FullFanout || g.Rows != 0 || g.Cols != 0 || need == n {
		return nil
	}
	to := make([]string, 0, need)
	for i := range n {
		a := g.Acceptors[(int(slot%uint64(n))+i)%n]
		if at, ok := p.silent[a]; ok && p.now-at < silenceTicks {
			continue
		}
		if to = append(to, a); len(to) == need {
			return to
		}
	}
	return nil
}

// Tick resends phase 2a to acceptors that have not voted. A slot whose
// leader has moved to a newer ballot is resent by that leader, possibly
// through another proxy leader; this one gives up on it after a while so
// that it can drain.
func (p *ProxyLeader) Tick() {
	p.now++
	due := func(cur *phase2) bool {
		return p.now-cur.born > giveUpResends*p.cfg.ResendTicks || p.now-cur.sentAt >= backoff(p.cfg.ResendTicks, cur.tries)
	}
	widen := func(cur *phase2) bool { return cur.thrifty != nil && p.now-cur.sentAt >= widenTicks }
	for _, slot := range keysWhere(p.pending, widen) {
		cur := p.pending[slot]
		// The quorum it went to did not answer in time: note who was
		// silent, and ask everyone who has not voted.
		for _, a := range cur.thrifty {
			// A mark still running is not extended: the acceptor is
			// tried again silenceTicks after it was first missed.
			if at, ok := p.silent[a]; !cur.votes[a] && (!ok || p.now-at >= silenceTicks) {
				p.silent[a] = p.now
			}
		}
		p.sendPhase2a(slot, cur, false)
	}
	for _, slot := range keysWhere(p.pending, due) {
		cur := p.pending[slot]
		if p.now-cur.born > giveUpResends*p.cfg.ResendTicks {
			delete(p.pending, slot)
			continue
		}
		if p.now-cur.sentAt >= backoff(p.cfg.ResendTicks, cur.tries) {
			p.sendPhase2a(slot, cur, false)
			cur.tries++
		}
	}
}

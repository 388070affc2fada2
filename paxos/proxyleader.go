package paxos

type phase2 struct {
	ballot Ballot
	value  Value
	leader string
	votes  map[string]bool
	sentAt int
}

// ProxyLeader runs phase 2 for the leader: it sends a slot's value to the
// acceptors of the slot's group, counts their votes until a write quorum
// has accepted, and announces the value as chosen to the replicas and the
// leader. This takes the fan-out and fan-in off the leader.
type ProxyLeader struct {
	outbox
	cfg     Config
	now     int
	pending map[uint64]*phase2
}

// NewProxyLeader returns proxy leader number id of cfg.ProxyLeaders.
func NewProxyLeader(cfg Config, id int) *ProxyLeader {
	cfg = cfg.withDefaults()
	return &ProxyLeader{outbox: outbox{self: cfg.ProxyLeaders[id]}, cfg: cfg, pending: map[uint64]*phase2{}}
}

// Step handles one message.
func (p *ProxyLeader) Step(m Message) {
	switch m.Kind {
	case KindPhase2a:
		cur := p.pending[m.Slot]
		if cur != nil && m.Ballot.Less(cur.ballot) {
			return
		}
		if cur == nil || cur.ballot != m.Ballot {
			cur = &phase2{ballot: m.Ballot, value: m.Value, leader: m.From, votes: map[string]bool{}}
			p.pending[m.Slot] = cur
		}
		p.sendPhase2a(m.Slot, cur)
	case KindPhase2b:
		cur := p.pending[m.Slot]
		if cur == nil || cur.ballot != m.Ballot {
			return
		}
		cur.votes[m.From] = true
		if p.cfg.Groups[p.cfg.GroupOf(m.Slot)].IsWriteQuorum(cur.votes) {
			delete(p.pending, m.Slot)
			for _, r := range p.cfg.Replicas {
				p.send(Message{Kind: KindChosen, To: r, Slot: m.Slot, Value: cur.value})
			}
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

func (p *ProxyLeader) sendPhase2a(slot uint64, cur *phase2) {
	cur.sentAt = p.now
	for _, a := range p.cfg.Groups[p.cfg.GroupOf(slot)].Acceptors {
		if !cur.votes[a] {
			p.send(Message{Kind: KindPhase2a, To: a, Ballot: cur.ballot, Slot: slot, Value: cur.value})
		}
	}
}

// Tick resends phase 2a to acceptors that have not voted.
func (p *ProxyLeader) Tick() {
	p.now++
	for _, slot := range sortedKeys(p.pending) {
		if cur := p.pending[slot]; p.now-cur.sentAt >= p.cfg.ResendTicks {
			p.sendPhase2a(slot, cur)
		}
	}
}

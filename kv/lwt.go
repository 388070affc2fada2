// Lightweight transactions: conditional writes and counters (package
// docs: docs/lwt.md), linearizable per key, as Cassandra runs them: Paxos
// among the key's replicas, then the result written to them as any write.
//
// One node leads each key: the first replica of the oldest ring view in
// the transition window (so that nodes that learn of a join at different
// moments agree); others forward it the ops they receive. The leader runs
// the ops of a key one proposal at a time, each proposal carrying every
// op that queued meanwhile, applied in order. A proposal:
//
//  1. prepare: a ballot (a fresh version) to every replica; a majority of
//     every view must promise. Each promise carries the replica's record
//     and the proposal it last accepted.
//  2. If the newest of those (the accepted one with the highest ballot,
//     or the newest record) is not yet held by W of the replicas that
//     answered, it is finished first: accepted at this ballot, written,
//     and the proposal starts again. Otherwise the ops are applied to it.
//  3. accept: the result, versioned with the ballot, to every replica; a
//     majority of every view must accept.
//  4. commit: the result is written as a plain write (W acknowledgements,
//     hints for the rest), and only then answered.
//
// A refusal at 1 or 3 (a higher promise) retries with a higher ballot
// after a short random wait. A proposal refused at 3 may still have been
// accepted by a majority, and any later proposal finishes it: retrying
// then applies the ops only if the next prepare shows the earlier result
// was not chosen and cannot be; otherwise the ops are answered with an
// unknown outcome (or, when the earlier result is found chosen, with it).

package kv

import (
	"slices"
)

// PaxosState is a replica's Paxos acceptor state for one key.
type PaxosState struct {
	_msgpack struct{} `msgpack:",as_array"`
	Key      []byte   `msgpack:"k"`
	Promised uint64   `msgpack:"p"`
	Accepted uint64   `msgpack:"a"` // ballot of Rec; 0: none
	Rec      Record   `msgpack:"r"`
	// Lineage lists the versions of the values Rec was built on, oldest
	// first, back to the key's first value or a plain write (then the
	// list starts with 0), at most lineageMax, Rec's own last.
	Lineage []uint64 `msgpack:"l,omitempty"`
}

// lineageMax bounds a value's lineage.
const lineageMax = 64

// PaxosStorage is a Storage that keeps Paxos acceptor state (written with
// PersistOp.Paxos). A node whose Storage lacks it keeps the state in
// memory, lost on restart.
type PaxosStorage interface {
	Paxos(key []byte) (PaxosState, bool, error)
}

// casReq is one client op waiting for, or carried by, a proposal.
type casReq struct {
	client string
	id     uint64
	op     Op
}

// attempt is a proposal's value that reached the accept phase: if it is
// chosen, these are the answers of its ops.
type attempt struct {
	rec     Record
	replies []Message
	lineage []uint64
}

const (
	phaseWait    = iota // backing off before the next prepare
	phasePrepare        // promises wanted
	phaseAccept         // acceptances wanted
	phaseCommit         // written as a plain write (see op.prop)
)

type proposal struct {
	key      []byte
	reqs     []casReq
	phase    int
	ballot   uint64
	id       uint64 // the current attempt's message ID
	sets     [][]string
	replicas []string
	answered addrSet
	data     []*Record // by replica, as answered
	accBal   uint64
	acc      *Record
	lineages map[uint64][]uint64 // accepted values' lineages, by version
	lineage  []uint64            // rec's lineage
	rec      Record              // being accepted
	replies  []Message           // the answers if rec is chosen
	finish   bool                // rec is an earlier value being finished
	mine     []attempt           // values of this proposal that may be chosen
	start    int                 // tick the proposal started (its time-out)
	lastSend int
	wait     int // phaseWait: tick of the next prepare
	tries    int
	maxNack  uint64
}

// lwtState is a node's share of the lightweight transactions.
type lwtState struct {
	props   map[uint64]*proposal // by attempt ID
	active  map[string]*proposal // by key
	queue   map[string][]casReq  // ops waiting for the key's proposal to end
	pending map[string]PaxosState
	mem     map[string]PaxosState // without a PaxosStorage
	fwd     map[uint64]fwdReq     // ops forwarded to their key's leader
	seen    map[fwdKey]int        // ops received (dropping duplicates), by tick
	// suspect holds the leaders that did not confirm a forwarded op in
	// time, by tick: leader skips them until they are heard from again.
	suspect map[string]int
}

type fwdReq struct {
	client string
	id     uint64
	at     int
	leader string
	key    []byte
	op     [][]byte
	sent   int  // last sent to leader
	taken  bool // leader confirmed receiving it
}

type fwdKey struct {
	from string
	id   uint64
}

func (n *Node) lwtInit() {
	if n.lwt.props == nil {
		n.lwt = lwtState{props: map[uint64]*proposal{}, active: map[string]*proposal{}, queue: map[string][]casReq{},
			pending: map[string]PaxosState{}, mem: map[string]PaxosState{}, fwd: map[uint64]fwdReq{}, seen: map[fwdKey]int{}, suspect: map[string]int{}}
	}
}

// leader returns the node that runs the proposals of a key whose
// preference lists are sets: the first replica of the oldest view that
// this node does not suspect (see fwdReq). Nodes that suspect the same
// crashed leader so agree on the next; nodes that disagree lead at the
// same time, which is safe (ballots decide), only slower.
func (n *Node) leader(sets [][]string) string {
	for i := len(sets) - 1; i >= 0; i-- {
		if len(sets[i]) > 0 {
			for _, a := range sets[i] {
				if _, s := n.lwt.suspect[a]; !s || a == n.self {
					return a
				}
			}
			return sets[i][0]
		}
	}
	return n.self
}

func (n *Node) clientCas(m Message) {
	n.lwtInit()
	op := Op(m.Keys)
	if err := op.Check(); err != nil {
		n.send(Message{Kind: KindClientResp, To: m.From, ID: m.ID, Err: err.Error()})
		return
	}
	fk := fwdKey{m.From, m.ID}
	if _, dup := n.lwt.seen[fk]; dup {
		if m.Found {
			n.send(Message{Kind: KindCasTaken, To: m.From, ID: m.ID})
		}
		return // a duplicate of an op already taken
	}
	n.lwt.seen[fk] = n.now
	sets, _ := n.prefSets(n.ring.Position(m.Rec.Key))
	if l := n.leader(sets); l != n.self && !m.Found {
		// Forwarded (Found marks it so, and the leader runs it even if
		// its view differs): the leader's answer comes back to this node.
		// Its ID is a fresh version: unique across restarts, so that the
		// leader's duplicate check never takes a new op for an old one.
		fid := n.version()
		n.lwt.fwd[fid] = fwdReq{client: m.From, id: m.ID, at: n.now, leader: l, key: m.Rec.Key, op: m.Keys, sent: n.now}
		n.send(Message{Kind: KindClientCas, To: l, ID: fid, Rec: Record{Key: m.Rec.Key}, Keys: m.Keys, Found: true})
		return
	}
	if m.Found {
		n.send(Message{Kind: KindCasTaken, To: m.From, ID: m.ID})
	}
	n.Stats.CasOps++
	req := casReq{client: m.From, id: m.ID, op: op}
	key := string(m.Rec.Key)
	if n.lwt.active[key] != nil {
		n.lwt.queue[key] = append(n.lwt.queue[key], req)
		return
	}
	p := &proposal{key: m.Rec.Key, reqs: []casReq{req}, start: n.now}
	n.lwt.active[key] = p
	n.prepare(p)
}

// onFwdResp relays the leader's answer to a forwarded op.
func (n *Node) onFwdResp(m Message) {
	n.lwtInit()
	f, ok := n.lwt.fwd[m.ID]
	if !ok {
		return
	}
	delete(n.lwt.fwd, m.ID)
	m.To, m.ID = f.client, f.id
	m.dep = 0
	n.send(m)
}

// onCasTaken notes that the leader received a forwarded op.
func (n *Node) onCasTaken(m Message) {
	n.lwtInit()
	if f, ok := n.lwt.fwd[m.ID]; ok && f.leader == m.From {
		f.taken = true
		n.lwt.fwd[m.ID] = f
	}
}

// paxosState returns this node's acceptor state of key.
func (n *Node) paxosState(key []byte) PaxosState {
	if s, ok := n.lwt.pending[string(key)]; ok {
		return s
	}
	if ps, ok := n.st.(PaxosStorage); ok {
		if s, found, err := ps.Paxos(key); err == nil && found {
			return s
		}
		return PaxosState{Key: key}
	}
	if s, ok := n.lwt.mem[string(key)]; ok {
		return s
	}
	return PaxosState{Key: key}
}

func (n *Node) setPaxos(s PaxosState) {
	n.lwt.pending[string(s.Key)] = s
	if _, ok := n.st.(PaxosStorage); !ok {
		n.lwt.mem[string(s.Key)] = s
	}
	sc := s
	n.rd.Persist = append(n.rd.Persist, PersistOp{Paxos: &sc})
}

// onPrepare is the acceptor's answer to a prepare.
func (n *Node) onPrepare(m Message) Message {
	n.lwtInit()
	s := n.paxosState(m.Rec.Key)
	if m.Ballot <= s.Promised {
		return Message{Kind: KindPromise, To: m.From, ID: m.ID, Ballot: s.Promised}
	}
	s.Promised = m.Ballot
	n.setPaxos(s)
	r := Message{Kind: KindPromise, To: m.From, ID: m.ID, Found: true, Ballot: s.Accepted}
	if cur, ok := n.local(m.Rec.Key); ok {
		r.Rec = cur
	} else {
		r.Rec = Record{Key: m.Rec.Key}
	}
	if s.Accepted != 0 {
		r.Records = []Record{s.Rec}
		r.Hashes = s.Lineage
	}
	return r
}

// onAccept is the acceptor's answer to an accept.
func (n *Node) onAccept(m Message) Message {
	n.lwtInit()
	s := n.paxosState(m.Rec.Key)
	if m.Ballot < s.Promised {
		return Message{Kind: KindAccepted, To: m.From, ID: m.ID, Ballot: s.Promised}
	}
	s.Promised, s.Accepted, s.Rec, s.Lineage = m.Ballot, m.Ballot, m.Rec, m.Hashes
	n.setPaxos(s)
	n.observe(m.Rec.Version)
	return Message{Kind: KindAccepted, To: m.From, ID: m.ID, Found: true}
}

// prepare starts an attempt of p: a new ballot to every replica.
func (n *Node) prepare(p *proposal) {
	if p.id != 0 {
		delete(n.lwt.props, p.id)
	}
	n.observe(p.maxNack)
	p.ballot = n.version()
	n.nextID++
	p.id = n.nextID
	n.lwt.props[p.id] = p
	p.phase = phasePrepare
	p.sets, p.replicas = n.prefSets(n.ring.Position(p.key))
	p.answered = p.answered[:0]
	p.data = make([]*Record, len(p.replicas))
	p.accBal, p.acc = 0, nil
	p.lineages = map[uint64][]uint64{}
	p.lastSend = n.now
	for _, r := range p.replicas {
		m := Message{Kind: KindPrepare, To: r, ID: p.id, Rec: Record{Key: p.key}, Ballot: p.ballot}
		if r == n.self {
			m.From = n.self
			n.onPromise(n.onPrepare(m), n.self)
		} else {
			n.send(m)
		}
	}
}

func (n *Node) lwtQuorum(p *proposal) bool {
	return quorumIn(p.sets, n.cfg.N/2+1, p.answered.has)
}

// refused notes a refusal: the attempt ends, and the next one starts after
// a random wait of up to 2^tries ticks (bounded).
func (n *Node) refused(p *proposal, promised uint64) {
	n.Stats.CasRetries++
	p.maxNack = max(p.maxNack, promised)
	p.phase = phaseWait
	p.tries++
	span := uint64(1) << min(p.tries, 5)
	n.salt2 = n.salt2*6364136223846793005 + 1442695040888963407
	p.wait = n.now + 1 + int((n.salt2>>33)%span)
}

func (n *Node) onPromise(m Message, from string) {
	p := n.lwt.props[m.ID]
	if p == nil || p.phase != phasePrepare || p.answered.has(from) {
		return
	}
	if !m.Found {
		n.refused(p, m.Ballot)
		return
	}
	i := slices.Index(p.replicas, from)
	if i < 0 {
		return
	}
	p.answered.add(from)
	if m.Rec.Version != 0 {
		r := m.Rec
		p.data[i] = &r
		n.observe(r.Version)
	}
	if len(m.Records) == 1 && len(m.Hashes) > 0 {
		p.lineages[m.Records[0].Version] = slices.Clone(m.Hashes)
	}
	if len(m.Records) == 1 && m.Ballot > p.accBal {
		r := m.Records[0]
		p.accBal, p.acc = m.Ballot, &r
	}
	if n.lwtQuorum(p) {
		n.decide(p)
	}
}

// decide runs once a prepare has its promises.
func (n *Node) decide(p *proposal) {
	var newest *Record
	for _, r := range p.data {
		if r != nil && (newest == nil || r.Newer(*newest)) {
			newest = r
		}
	}
	cand := newest
	if p.acc != nil && (cand == nil || p.acc.Newer(*cand)) {
		cand = p.acc
	}
	held := func(v Record) bool {
		return quorumIn(p.sets, n.cfg.W, func(a string) bool {
			i := slices.Index(p.replicas, a)
			return i >= 0 && p.answered.has(a) && p.data[i] != nil && !v.Newer(*p.data[i])
		})
	}
	// An earlier value of this proposal, refused at accept, may be
	// chosen: find out before applying the ops again. Every way on goes
	// through an accept at this ballot, which keeps the other refused
	// values, accepted by a minority at lower ballots, from being chosen
	// later.
	if len(p.mine) > 0 {
		for _, a := range p.mine {
			if cand != nil && cand.Version == a.rec.Version {
				p.rec, p.replies, p.finish = *cand, a.replies, false
				p.lineage = p.lineages[cand.Version]
				if p.lineage == nil {
					p.lineage = a.lineage
				}
				n.accept(p)
				return
			}
		}
		if cand != nil && cand.Version > p.mine[0].rec.Version {
			// Something newer than our first value exists. Its lineage
			// tells whether it was built on one of ours (a value is
			// built on only once a write quorum holds it): then that
			// one was chosen. A lineage that reaches back past our
			// first value without one of ours says none was; without
			// one (a plain write came between), it cannot be told.
			l := p.lineages[cand.Version]
			for _, a := range p.mine {
				if slices.Contains(l, a.rec.Version) {
					n.answer(p, a.replies, nil)
					return
				}
			}
			if len(l) == 0 || l[0] == 0 || (len(l) >= lineageMax && l[0] > p.mine[0].rec.Version) {
				n.answer(p, nil, errUnknownCas)
				return
			}
		}
		// Nothing as new as any of ours: none of them was accepted by a
		// majority (this prepare's promisers would show it), and the
		// ballot they promised keeps the rest from being chosen unless
		// a later prepare finds one as the highest accepted; the
		// accept below, at a higher ballot, prevents that too. They
		// stay in mine until it succeeds.
	}
	lineageOf := func(r *Record) []uint64 {
		if r == nil {
			return nil // the key's first value
		}
		if l, ok := p.lineages[r.Version]; ok {
			return l
		}
		return []uint64{0, r.Version} // a plain write's
	}
	if cand != nil && !held(*cand) {
		p.rec, p.replies, p.finish = *cand, nil, true
		p.lineage = lineageOf(cand)
		n.accept(p)
		return
	}
	now := n.clock()
	var cur *Record
	if newest != nil && newest.Live(now) {
		c := *newest
		cur = &c
	}
	replies := make([]Message, len(p.reqs))
	var final *Record
	for i, q := range p.reqs {
		next, write, err := q.op.apply(p.key, cur, now)
		r := Message{Rec: Record{Key: p.key}}
		if cur != nil {
			r.Records = []Record{*cur}
			r.Rec = *cur
		}
		switch {
		case err != nil:
			r.Err = err.Error()
		case write:
			r.Found = true
			nr := next
			final = &nr
			if next.Tomb {
				cur = nil
				r.Rec = Record{Key: p.key}
			} else {
				c := next
				c.Version = p.ballot
				cur = &c
				r.Rec = c
			}
		}
		replies[i] = r
	}
	if final == nil {
		n.answer(p, replies, nil)
		return
	}
	if newest != nil && newest.Version >= p.ballot {
		n.refused(p, newest.Version) // a write newer than the ballot: retry above it
		return
	}
	rec := *final
	rec.Version = p.ballot
	if rec.Tomb {
		rec.Value, rec.Expire = nil, 0
	}
	p.rec, p.replies, p.finish = rec, replies, false
	p.lineage = append(slices.Clone(lineageOf(newest)), rec.Version)
	if len(p.lineage) > lineageMax {
		p.lineage = p.lineage[len(p.lineage)-lineageMax:]
	}
	n.accept(p)
}

var errUnknownCas = errorString("outcome unknown: the operation met a concurrent one, and may have taken effect")

type errorString string

func (e errorString) Error() string { return string(e) }

// accept sends p.rec at p's ballot to every replica.
func (n *Node) accept(p *proposal) {
	p.phase = phaseAccept
	p.answered = p.answered[:0]
	p.lastSend = n.now
	if !p.finish && !slices.ContainsFunc(p.mine, func(a attempt) bool { return a.rec.Version == p.rec.Version }) {
		p.mine = append(p.mine, attempt{rec: p.rec, replies: p.replies, lineage: p.lineage})
	}
	for _, r := range p.replicas {
		m := Message{Kind: KindAccept, To: r, ID: p.id, Rec: p.rec, Ballot: p.ballot, Hashes: p.lineage}
		if r == n.self {
			m.From = n.self
			n.onAccepted(n.onAccept(m), n.self)
		} else {
			n.send(m)
		}
	}
}

func (n *Node) onAccepted(m Message, from string) {
	p := n.lwt.props[m.ID]
	if p == nil || p.phase != phaseAccept || p.answered.has(from) {
		return
	}
	if !m.Found {
		n.refused(p, m.Ballot)
		return
	}
	p.answered.add(from)
	if !n.lwtQuorum(p) {
		return
	}
	// Chosen: write it as any write, answered once W replicas hold it.
	p.phase = phaseCommit
	delete(n.lwt.props, p.id)
	o := &op{write: true, rec: p.rec, replicas: p.replicas, sets: p.sets, need: n.cfg.W, round: n.round, prop: p}
	id := n.newOp(o)
	n.Stats.Writes++
	n.Stats.CasWrites++
	n.replicateOut(p.rec)
	for _, r := range p.replicas {
		if r == n.self {
			n.apply(p.rec)
			o.answered.add(r)
		} else {
			n.queueReq(KindPut, r, id, p.rec)
		}
	}
	n.checkWrite(id, o)
}

// committed is called once the write of a chosen value reached W
// (failed "") or failed (failed says why: it timed out, or too many
// replicas refused it).
func (n *Node) committed(p *proposal, o *op, failed string) {
	switch {
	case failed != "":
		n.answer(p, nil, errorString(failed))
	case p.finish:
		// An earlier value is in place: now the ops.
		p.finish = false
		n.prepare(p)
	default:
		n.answer(p, p.replies, nil)
	}
}

// answer ends proposal p: each op gets its reply (or err), and the next
// ops queued on the key start.
func (n *Node) answer(p *proposal, replies []Message, err error) {
	for i, q := range p.reqs {
		var r Message
		if err != nil || i >= len(replies) {
			r.Err = "cas failed"
			if err != nil {
				r.Err = err.Error()
			}
		} else {
			r = replies[i]
		}
		r.Kind, r.To, r.ID = KindClientResp, q.client, q.id
		r.dep = n.round + 1
		n.send(r)
	}
	delete(n.lwt.props, p.id)
	key := string(p.key)
	delete(n.lwt.active, key)
	if q := n.lwt.queue[key]; len(q) > 0 {
		delete(n.lwt.queue, key)
		np := &proposal{key: p.key, reqs: q, start: n.now}
		n.lwt.active[key] = np
		n.prepare(np)
	}
}

// tickLwt resends what replicas have not answered, starts attempts whose
// wait is over, and times out proposals and forwarded ops.
func (n *Node) tickLwt() {
	if n.lwt.props == nil {
		return
	}
	keys := make([]string, 0, len(n.lwt.active))
	for k := range n.lwt.active {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := n.lwt.active[k]
		if p.phase == phaseCommit {
			continue // the write op times out on its own
		}
		if n.now-p.start >= n.cfg.TimeoutTicks {
			var err error = errorString("lightweight transaction: no quorum of replicas answered in time")
			if len(p.mine) > 0 || p.phase == phaseAccept && !p.finish {
				err = errUnknownCas
			}
			n.answer(p, nil, err)
			continue
		}
		switch {
		case p.phase == phaseWait && n.now >= p.wait:
			n.prepare(p)
		case p.phase != phaseWait && n.now-p.lastSend >= n.cfg.ResendTicks:
			p.lastSend = n.now
			for _, r := range p.replicas {
				if p.answered.has(r) || r == n.self {
					continue
				}
				if p.phase == phasePrepare {
					n.send(Message{Kind: KindPrepare, To: r, ID: p.id, Rec: Record{Key: p.key}, Ballot: p.ballot})
				} else {
					n.send(Message{Kind: KindAccept, To: r, ID: p.id, Rec: p.rec, Ballot: p.ballot, Hashes: p.lineage})
				}
			}
		}
	}
	ids := make([]uint64, 0, len(n.lwt.fwd))
	for id := range n.lwt.fwd {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		f := n.lwt.fwd[id]
		switch {
		case n.now-f.at >= n.cfg.TimeoutTicks+n.cfg.TimeoutTicks/2:
			delete(n.lwt.fwd, id)
			n.send(Message{Kind: KindClientResp, To: f.client, ID: f.id, Err: "outcome unknown: the key's leader did not answer in time"})
		case !f.taken && n.now-f.at >= n.cfg.LeaderWaitTicks:
			// The leader may have taken the op (its confirmation lost)
			// or not: the op's outcome is unknown. The key's next ops
			// go to the next replica, which runs Paxos at a higher
			// ballot: a value the leader got accepted is finished
			// first, never lost or contradicted.
			delete(n.lwt.fwd, id)
			n.lwt.suspect[f.leader] = n.now
			n.Stats.LeadersSuspected++
			n.send(Message{Kind: KindClientResp, To: f.client, ID: f.id,
				Err: "outcome unknown: the key's leader " + f.leader + " did not answer; the key's next operations go to another replica"})
		case !f.taken && n.now-f.sent >= n.cfg.ResendTicks:
			f.sent = n.now
			n.lwt.fwd[id] = f
			n.send(Message{Kind: KindClientCas, To: f.leader, ID: id, Rec: Record{Key: f.key}, Keys: f.op, Found: true})
		}
	}
	for k, at := range n.lwt.seen {
		if n.now-at > 4*n.cfg.TimeoutTicks {
			delete(n.lwt.seen, k)
		}
	}
}

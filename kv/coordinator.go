// The coordinator: a client write or read becomes an op that sends to the
// key's replicas, counts their answers against the quorums of every ring
// view, writes back and repairs, and times out into hints or errors.

package kv

import (
	"fmt"
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
	region    bool  // write: from another region; answered with KindRegionAck
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
	prop     *proposal // write: the commit of a lightweight transaction's value
	resends  int       // times the requests of this op were sent again
	// refused lists the replicas that turned the write (or a read's
	// write-back) away unstored (KindPutRefused), until they acknowledge
	// a resend.
	refused addrSet
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
	if n.now-o.start >= SlowTicks {
		m.Trace = o.trace(n.now)
	}
	if o.region {
		m.Kind = KindRegionAck
		m.Rec = Record{Key: o.rec.Key, Version: o.rec.Version}
		m.Found = false
	}
	n.send(m)
}

// SlowTicks is how long a client request may take before its answer
// carries a Trace.
const SlowTicks = 100

// trace says what op asked and heard, at tick now.
func (o *op) trace(now int) string {
	var b strings.Builder
	kind := "read"
	if o.write {
		kind = "write"
	}
	fmt.Fprintf(&b, "%s of %q after %d ticks, %d resends; need %d", kind, o.rec.Key, now-o.start, o.resends, o.need)
	for i, set := range o.sets {
		fmt.Fprintf(&b, "; view %d: %s", i+1, strings.Join(set, " "))
	}
	fmt.Fprintf(&b, "; asked %s", strings.Join(o.replicas, " "))
	b.WriteString("; answered")
	for _, a := range o.answered {
		b.WriteString(" " + a)
		if r, ok := o.got.get(a); ok {
			if r == nil {
				b.WriteString("=none")
			} else {
				fmt.Fprintf(&b, "=v%d", r.Version)
			}
		}
	}
	if len(o.spare) > 0 {
		fmt.Fprintf(&b, "; spares not asked %s", strings.Join(o.spare, " "))
	}
	if o.extra != "" {
		fmt.Fprintf(&b, "; after the list %s since tick -%d", o.extra, now-o.extraAt)
	}
	if o.writeback {
		fmt.Fprintf(&b, "; wrote back v%d, unacknowledged", o.wbRec.Version)
		for _, w := range o.wbSent {
			fmt.Fprintf(&b, " %s=v%d", w.addr, w.rec.Version)
		}
	}
	if len(o.refused) > 0 {
		fmt.Fprintf(&b, "; refused by %s", strings.Join(o.refused, " "))
	}
	return b.String()
}

func (n *Node) clientPut(m Message) {
	if len(m.Rec.Value) > n.cfg.MaxValue {
		n.send(Message{Kind: KindClientResp, To: m.From, ID: m.ID, Err: "value too large"})
		return
	}
	rec := Record{Key: m.Rec.Key, Value: m.Rec.Value, Tomb: m.Rec.Tomb, Version: n.version(), Expire: m.Rec.Expire}
	if rec.Tomb {
		rec.Value, rec.Expire = nil, 0
	}
	w := n.cfg.W
	if m.W > 0 {
		w = min(m.W, n.cfg.N)
	}
	sets, reps := n.prefSets(n.ring.Position(rec.Key))
	o := &op{write: true, client: m.From, clientID: m.ID, rec: rec, replicas: reps, sets: sets, need: w, round: n.round}
	id := n.newOp(o)
	n.Stats.Writes++
	n.replicateOut(rec)
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
	if !o.replied && o.prop != nil && quorumIn(o.sets, o.need, o.answered.has) {
		o.replied = true
		n.committed(o.prop, o, "")
	}
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
		n.hintDelivered(*o.hint)
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

// onPutLeaving handles a replica's answer that it stored the write of op
// id but is leaving the ring (KindPutLeaving): in each of the op's
// preference lists that has it, the node after the list on this node's
// ring takes its place, is sent the write, and counts instead. Its copy
// is where the leaving node's range goes once it is gone, so a quorum
// met there is met in the ring without the leaving node; and since the
// list changes for this op alone, no acknowledgement is counted twice.
func (n *Node) onPutLeaving(id uint64, from string) {
	o := n.ops[id]
	if o == nil || !o.write || o.hint != nil {
		return
	}
	i := slices.Index(o.replicas, from)
	if i < 0 {
		return // answered before
	}
	o.replicas = slices.Delete(slices.Clone(o.replicas), i, i+1)
	cand := n.ring.Preference(n.ring.Position(o.rec.Key), n.cfg.N+len(o.replicas)+2)
	sets := make([][]string, len(o.sets))
	for k, set := range o.sets {
		sets[k] = set
		j := slices.Index(set, from)
		if j < 0 {
			continue
		}
		next := ""
		for _, c := range cand {
			if c != from && !slices.Contains(set, c) {
				next = c
				break
			}
		}
		if next == "" {
			continue // no node to take its place: it counts as silent
		}
		sets[k] = slices.Clone(set)
		sets[k][j] = next
		if slices.Contains(o.replicas, next) {
			continue
		}
		o.replicas = append(o.replicas, next)
		if next == n.self {
			// This node's own copy, durable once the round under way is.
			n.apply(o.rec)
			o.round = n.round
			o.answered.add(next)
		} else {
			n.send(Message{Kind: KindPut, To: next, ID: id, Rec: o.rec})
		}
	}
	o.sets = sets
	n.checkWrite(id, o)
}

// onPutRefused notes that replica from turned away, unstored, the write
// of op id (why: its disk is full). A write, or a read's write-back,
// that can no longer reach its quorum without the replicas that refused
// it fails at once, with why, instead of at its timeout. The op itself
// lives on until then: a replica may still take a resend, and at the
// timeout the coordinator keeps a hint for each replica that did not
// acknowledge.
func (n *Node) onPutRefused(id uint64, from, why string) {
	o := n.ops[id]
	if o == nil || o.hint != nil || o.answered.has(from) && o.write {
		return // a hint stays held until its replica takes it
	}
	o.refused.add(from)
	if o.replied {
		return
	}
	switch {
	case o.write:
		if quorumIn(o.sets, o.need, func(a string) bool { return !o.refused.has(a) }) {
			return
		}
		n.Stats.WriteFailures++
		if o.prop != nil {
			o.replied = true
			n.committed(o.prop, o, writeRefused(o, why))
			return
		}
		n.reply(o, Message{Err: writeRefused(o, why)})
	case o.writeback:
		i := slices.IndexFunc(o.wbSent, func(w wbSent) bool { return w.addr == from })
		if i < 0 {
			return
		}
		o.wbSent = slices.Delete(o.wbSent, i, i+1)
		// Who holds the version the read would answer, or may yet.
		may := func(a string) bool {
			r, _ := o.got.get(a)
			return r != nil && r.Version == o.wbRec.Version || !o.refused.has(a)
		}
		if quorumIn(o.sets, n.cfg.W, may) {
			// Others may still take it: ask the replicas spared so far,
			// to write it back to them once they answer.
			n.askSpares(id, o)
			n.checkRead(id, o)
			return
		}
		n.Stats.ReadFailures++
		n.reply(o, Message{Err: fmt.Sprintf("%s; refused by %s: the newest version of the key could not be written back to a write quorum, which a read needs before it answers it; read again once space returns", why, strings.Join(o.refused, ", "))})
	}
}

// writeRefused says why a write failed before its timeout: replicas
// turned it away (why, their disk is full), too many for a quorum. It
// starts with why, so that a client sees "disk full" first.
func writeRefused(o *op, why string) string {
	var b strings.Builder
	b.WriteString(why)
	fmt.Fprintf(&b, "; refused by %s, so the write cannot reach %d acknowledgements", strings.Join(o.refused, ", "), o.need)
	if len(o.answered) > 0 {
		fmt.Fprintf(&b, "; outcome unknown: stored on %s, and held for the others as a hint: the write may still take effect", strings.Join(o.answered, ", "))
	} else {
		b.WriteString("; outcome unknown: held for the replicas as a hint, the write may still take effect")
	}
	return b.String()
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
			if !best.Live(n.clock()) {
				// Deleted, or past its deadline: replicas agree on the
				// deadline, so every coordinator hides it from then on.
				n.reply(o, Message{Rec: Record{Key: o.rec.Key, Version: best.Version}})
			} else {
				n.reply(o, Message{Rec: *best, Found: true})
			}
		default:
			// Write the newest version back to the replicas that answered
			// with an older one; again if a newer one turns up meanwhile
			// (a write that raced the read), or the read could never see
			// a quorum hold what it would answer; and to replicas that
			// answer later (spares asked since), so that the read does not
			// wait on one that refused it.
			if !o.writeback || best.Newer(o.wbRec) {
				n.Stats.ReadRepairs++
			}
			o.writeback = true
			o.wbRec = *best
			if n.writeBack(id, o, best) {
				n.checkRead(id, o)
			}
			return
		}
	}
	if len(o.answered) >= len(o.replicas) && o.replied {
		n.readRepair(o)
		delete(n.ops, id)
	}
}

// writeBack sends best to each replica of read op id that answered with
// an older version, unless it has one on its way already or refused it,
// and applies it here if this node is one of them. It reports whether it
// applied it here, which changes what the read holds.
func (n *Node) writeBack(id uint64, o *op, best *Record) (applied bool) {
	for _, rep := range o.replicas {
		cur, ok := o.got.get(rep)
		if !ok || cur != nil && !best.Newer(*cur) || o.refused.has(rep) {
			continue
		}
		if rep == n.self {
			n.apply(*best)
			b := *best
			o.got.set(rep, &b)
			applied = true
			continue
		}
		if slices.ContainsFunc(o.wbSent, func(w wbSent) bool { return w.addr == rep && w.rec.Version == best.Version }) {
			continue
		}
		n.send(Message{Kind: KindPut, To: rep, ID: id, Rec: *best})
		o.wbSent = append(o.wbSent, wbSent{rep, *best})
	}
	return applied
}

// readRepair sends the newest version to every replica of the current
// view that answered with an older one or none. A replica only an older
// view of the transition window holds is left alone: it is handing the
// key off, and a repair would give it back a copy to hand off again, so
// that under a steady read load its hand-off passes would never come up
// empty and the transition never settle (see strayPassDone). Quorums in
// that view hold the key without it.
func (n *Node) readRepair(o *op) {
	best := newest(o.got)
	if best == nil {
		return
	}
	for _, rep := range o.replicas {
		if !o.answered.has(rep) || (len(o.sets) > 0 && !slices.Contains(o.sets[0], rep)) {
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

func (n *Node) expire(id uint64, o *op) {
	delete(n.ops, id)
	switch {
	case o.push != nil:
		n.strayOut -= o.push.size
		n.pushEnded(true)
	case o.hint != nil:
	case o.write:
		for _, rep := range o.replicas {
			if !o.answered.has(rep) {
				n.holdHint(Hint{Target: rep, Rec: o.rec}, true)
			}
		}
		if !o.replied {
			n.Stats.WriteFailures++
			if o.prop != nil {
				o.replied = true
				n.committed(o.prop, o, writeUnknown(o))
			} else {
				n.reply(o, Message{Err: writeUnknown(o)})
			}
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
	if len(o.sets) > 1 {
		// Ring views in transition: say which view's replicas fell short.
		for i, set := range o.sets {
			if !quorumIn([][]string{set}, o.need, o.answered.has) {
				fmt.Fprintf(&b, "; view %d of %d short among %s", i+1, len(o.sets), strings.Join(set, ", "))
			}
		}
	}
	b.WriteString(": the write may still take effect")
	return b.String()
}

// tickOps advances the client operations in flight, oldest first: it
// expires those past TimeoutTicks, asks spare replicas of reads slower than
// SpeculateTicks, gives up on an unanswering node after the preference
// list, and resends what replicas have not answered.
func (n *Node) tickOps() {
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
		if o.push != nil && n.now-o.lastSend >= n.cfg.ResendTicks<<min(o.resends, 4) {
			// A hand-off offer lost with a connection (a partition that
			// healed drops what was sent on the way): offered again to
			// the targets that have not answered it, rather than left
			// to time out. One that answered is waited for: what it
			// asked for may still be on its way.
			o.lastSend = n.now
			o.resends++
			n.offer(id, o.push)
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
}

// Hand-off: records this node holds but no longer replicates (the ring
// changed, or the node is draining) are offered to the nodes that do, sent
// what they lack, and dropped once every one holds them.

package kv

import (
	"math"
	"slices"
	"strings"
)

// strayPush is a batch of records this node holds but no longer replicates,
// on its way to the nodes that do.
type strayPush struct {
	recs    []Record
	targets []string
	size    int64   // bytes of recs, counted in strayOut until answered
	heard   addrSet // the targets that answered the offer
}

// strayPass is a hand-off pass under way. It reads the node's records in
// slices of about strayScanBytes a tick, from the position after next,
// so that no round reads a whole store: every client request waits for
// the round under way.
type strayPass struct {
	start  int    // the tick it began
	h      uint64 // strayHorizon as it began
	next   uint32 // once begun, the next slice reads the positions after this one
	begun  bool   // a slice has been read (the first starts at position 0)
	old    int    // strays found up to h (see strayPassDone)
	ringAt int    // ringChangedAt as it began: a change pauses it (see syncRound)
}

const (
	// strayScanBytes bounds the records one tick's slice of a hand-off
	// pass reads (a node of 1 GiB is read in about 40 s at 10 ms ticks).
	strayScanBytes = 512 << 10
	// strayOutBytes bounds the strays offered and not yet answered: a
	// pass waits for answers before it reads further.
	strayOutBytes = 64 << 20
)

// handOff begins a hand-off pass (see continueHandOff), replacing one
// under way, and reads its first slice.
func (n *Node) handOff() {
	n.strayLate = false
	n.strayPass = &strayPass{start: n.now, h: n.strayHorizon(), ringAt: n.ringChangedAt}
	n.continueHandOff()
}

// continueHandOff reads the next slice of the pass under way: records this
// node holds but does not replicate (the ring changed, or the node is
// draining) are offered to the nodes that replicate them, in batches, and
// forgotten once all of them acknowledge. Expired values and old
// tombstones it meets are collected on the way.
func (n *Node) continueHandOff() {
	p := n.strayPass
	if p == nil || n.strayOut >= strayOutBytes || p.ringAt != n.ringChangedAt {
		// Nothing under way, answers awaited, or the member table
		// changed: what the pass would find stray may not be once the
		// table settles, and a replica must not drop what it replicates.
		// syncRound begins a new pass once the table has been stable for
		// HandOffTicks.
		return
	}
	groups := map[string]*strayPush{}
	var order []string
	var size int64
	now := n.clock()
	// Only strays up to the transition's horizon keep it from settling
	// (see strayPassDone): a newer one was written after every member
	// ran with the current view, so a write quorum of the current view
	// holds it already, and under a steady load every pass finds some.
	// A slice ends only where the position changes, so that the next one
	// starts after a position with nothing left in it.
	// While a member still runs with an older view (every member has not
	// yet reported the current one), it may meet its quorums in that view
	// alone: what this node replicates under a view still in force stays
	// until then, or that member's reads would miss it. The pass that
	// settles the transition (strayCheckDue) comes after every member
	// runs with the current view, and hands it off. A leaving node hands
	// off everything at once: the members drop it only once it has.
	keepOld := !n.leaving && n.views.allAt < 0 && len(n.prev) > 0
	from, to := p.next, uint32(math.MaxUint32)
	if !p.begun {
		from, to = 0, 0 // the whole ring, from position 0
	}
	p.begun = true
	last, more := p.next, false
	n.scan(from, to, func(pos uint32, r Record) bool {
		if size >= strayScanBytes && pos != last {
			more = true
			return false
		}
		size += int64(len(r.Key) + len(r.Value) + 16)
		last = pos
		if !r.Tomb && r.Expired(now) {
			// Past its deadline: replace the value with a tombstone of
			// the same version (a tombstone wins a tie), collected a
			// TTL after the deadline as any other. Reads hide the value
			// already; this frees its bytes, and a replica still holding
			// an older version of the key learns of the deletion.
			if _, written := n.pending[string(r.Key)]; !written && !n.gone[string(r.Key)] {
				n.apply(Record{Key: r.Key, Version: r.Version, Tomb: true, Expire: r.Expire})
				n.Stats.Expired++
			}
			return true
		}
		if r.TombCollectable(now, n.cfg.TombstoneTTL) {
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
		if slices.Contains(pref, n.self) || len(pref) == 0 || keepOld && n.replicatesInOlder(pos) {
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
		if settled(r.Version, p.h) {
			p.old++
		}
		return true
	})
	p.next = last
	if !more {
		n.strayPass = nil
		n.strayPassDone(p.start, p.old)
		if n.strayLate && len(order) == 0 {
			// A write arrived behind the pass, and no batch will
			// begin the next one when answered (pushEnded).
			n.strayLate = false
			n.passSoon()
		}
	}
	for _, key := range order {
		g := groups[key]
		for len(g.recs) > 0 {
			k := min(len(g.recs), 256)
			batch := &strayPush{recs: g.recs[:k], targets: g.targets, size: recordsSize(g.recs[:k])}
			g.recs = g.recs[k:]
			id := n.newOp(&op{push: batch, replicas: batch.targets})
			n.strayOut += batch.size
			n.offer(id, batch)
			n.strayBusy = true
		}
	}
}

// replicatesInOlder reports whether this node replicates pos under an
// older view still in force.
func (n *Node) replicatesInOlder(pos uint32) bool {
	for _, p := range n.prev {
		if slices.Contains(p.preference(pos, n.cfg.N), n.self) {
			return true
		}
	}
	return false
}

// offer offers hand-off batch id to each of its targets that has not
// answered the offer yet. Each target is offered the versions first and
// sent only what it lacks: after a join, anti-entropy has usually brought
// the new replica most of them already, and the other targets held them
// all along.
func (n *Node) offer(id uint64, batch *strayPush) {
	vs := make([]KeyVersion, len(batch.recs))
	for i, r := range batch.recs {
		vs[i] = KeyVersion{Key: r.Key, Version: r.Version, Tomb: r.Tomb}
	}
	for _, t := range batch.targets {
		if !batch.heard.has(t) {
			n.send(Message{Kind: KindOffer, To: t, ID: id, Versions: vs})
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
	o.push.heard.add(m.From)
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
	n.strayOut -= o.push.size
	for _, r := range o.push.recs {
		if cur, ok := n.local(r.Key); ok && cur.Version == r.Version {
			n.forget(cur)
			n.Stats.HandedOff++
		}
	}
	n.pushEnded(false)
}

// pushEnded notes that a hand-off batch was answered by every target, or
// timed out (a target cut off or paused). Once none is under way, the
// next anti-entropy round begins another pass: one that finds nothing
// settles a transition (strayPassDone). After a timeout it does so only
// on a leaving node, whose leave waits until it holds nothing (it waited
// ten rounds, 50 s in the store, after every partition); a member keeps
// the usual ten rounds, so that a replica paused for long does not have
// it read its whole store over and over. A leaving node begins the pass
// at the next tick rather than the next round.
func (n *Node) pushEnded(timedOut bool) {
	busy := false
	for _, o := range n.ops {
		if o.push != nil {
			busy = true
		}
	}
	n.strayBusy = busy
	if !busy && n.strayPass == nil && (!timedOut || n.leaving) {
		n.passSoon()
	}
}

// passSoon has the next anti-entropy round begin a hand-off pass; on a
// leaving node, that round comes at the next tick.
func (n *Node) passSoon() {
	n.lastStray = n.now - 10*n.cfg.SyncTicks
	if n.leaving {
		n.lastSync = n.now - n.cfg.SyncTicks
	}
}

// strayArrived notes a write stored on a leaving node: a coordinator
// whose view still counts the node sent it, or a hint for it was
// delivered. The node's leave waits until it holds nothing, so a pass
// for it begins at the next tick, or once the pass or batches under way
// end, rather than ten rounds (50 s in the store) after the last.
func (n *Node) strayArrived() {
	switch {
	case n.strayPass != nil:
		n.strayLate = true
	case !n.strayBusy:
		n.passSoon()
	}
}

// Rebalance asks for a hand-off pass at the next anti-entropy round.
func (n *Node) Rebalance() {
	n.lastMembers = ""
	n.lastSync = n.now - n.cfg.SyncTicks
}

// Busy reports whether a hand-off pass or hand-offs are under way.
func (n *Node) Busy() bool { return n.strayBusy || n.strayPass != nil }

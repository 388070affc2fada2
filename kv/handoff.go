// Hand-off: records this node holds but no longer replicates (the ring
// changed, or the node is draining) are offered to the nodes that do, sent
// what they lack, and dropped once every one holds them.

package kv

import (
	"slices"
	"strings"
)

// strayPush is a batch of records this node holds but no longer replicates,
// on its way to the nodes that do.
type strayPush struct {
	recs    []Record
	targets []string
}

// handOff finds records this node holds but does not replicate (the ring
// changed, or the node is draining), sends each batch to the nodes that
// replicate it, and forgets the records once all of them acknowledge.
func (n *Node) handOff() {
	groups := map[string]*strayPush{}
	var order []string
	var size int64
	now := n.clock()
	// Only strays up to the transition's horizon keep it from settling
	// (see strayPassDone): a newer one was written after every member
	// ran with the current view, so a write quorum of the current view
	// holds it already, and under a steady load every pass finds some.
	h, old, cut := n.strayHorizon(), 0, false
	defer func(start int) {
		if cut {
			old++ // the pass ended early: what it did not reach may be old
		}
		n.strayPassDone(start, old)
	}(n.now)
	n.scan(0, 0, func(pos uint32, r Record) bool {
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
		if settled(r.Version, h) {
			old++
		}
		size += int64(len(r.Key) + len(r.Value))
		cut = size >= 64<<20
		return !cut
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

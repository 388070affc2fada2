// Regions: each region is a ring of its own, with its own N replicas of
// every key and its own quorums (Cassandra's LOCAL_QUORUM with
// NetworkTopologyStrategy). A write a node coordinates is acknowledged
// once W replicas of its own region hold it, and is replicated to every
// other region asynchronously: the coordinator keeps it in a durable
// outbox, one per region, persisted in the round that stores the write
// (so before the write is acknowledged), and sends it to a node of that
// region, which writes it with its version through its own region's
// quorum and answers once W of its replicas hold it. Only then is the
// outbox entry dropped. A restart reloads the outbox (RestoreOutbox) and
// sends again; versions decide (last writer wins), so a write that
// arrives twice changes nothing.
//
// Writes that arrive from another region are not sent on: the region a
// write was made in sends it to every other region itself.
//
// Watermarks: a node with an Origin (Config.Origin, one per incarnation)
// tells every node of each other region, every tick its watermark for
// that region moves and every markTicks anyway, how far that region has
// caught up with it (KindRegionMark): every client write this incarnation
// coordinated at a version at or below the mark is held by a write quorum
// there. The mark is just below the oldest version of any key it holds in
// the region's outbox (kept per key, as the outbox keeps only the newest
// write of a key: the older ones it replaced are not there either until
// the newest is acknowledged), or, with nothing held, the newest version
// this node minted or saw: every write it mints later is above it. A
// reader in that region that knows which incarnation coordinated a write
// (its origin) then needs no read to know that a read at its region's
// quorum returns it: the mark passing its version says so (Ready.Marks,
// antipode's tide shim). Marks compare versions of one incarnation only,
// so clocks that differ between nodes, or go back across a restart, do
// not matter: a restart is a new origin, and the old one's mark stops.

package kv

import (
	"container/heap"
	"slices"
)

// RegionMark is a replication watermark another region sent: every
// client write the node incarnation Origin coordinated at a version at or
// below Version is held by a write quorum of this region.
type RegionMark struct {
	Origin, Version uint64
}

// markTicks is how often a node sends its watermark unchanged, for the
// nodes of the other region that restarted since it last moved.
const markTicks = 100

// RegionStatus is what a node knows of one other region's replication.
type RegionStatus struct {
	Region string
	// Pending counts the writes this node coordinated that the region
	// has not acknowledged yet.
	Pending int
	// Oldest is the version of the oldest of them (0: none). Versions are
	// nanosecond timestamps in their high 56 bits (see VersionTime).
	Oldest uint64
	// LastLag is how long the last write the region acknowledged took,
	// from its version's time to the acknowledgement, in nanoseconds of
	// the node's clock.
	LastLag uint64
	// Sent counts writes sent to the region (resends included), Acked
	// those it acknowledged; Known says whether the node knows the
	// region's ring, without which nothing is sent.
	Sent, Acked int
	Known       bool
}

// VersionTime is the physical time, in nanoseconds, a version was minted
// at.
func VersionTime(v uint64) uint64 { return v &^ 0xff }

// regionQueue is the outbox of one other region.
type regionQueue struct {
	// held is the newest record of each key not yet acknowledged by the
	// region: what is persisted under the region in the outbox.
	held map[string]Record
	// queue lists writes to send, in version order (a node mints
	// versions in increasing order); an entry whose key holds a newer
	// version since is skipped.
	queue    []KeyVersion
	inflight int
	lastLag  uint64
	sent     int
	acked    int
	// oldest is, by key held, a version at or below the oldest write of
	// the key this node coordinated that the region has not acknowledged
	// (see the watermarks above); pending orders its entries, and an
	// entry that is no longer its key's oldest is dropped when it comes
	// to the top.
	oldest  map[string]uint64
	pending versionHeap
	// mark is the watermark last sent, at tick markAt.
	mark   uint64
	markAt int
}

// keyMark is an entry of versionHeap.
type keyMark struct {
	v   uint64
	key string
}

// versionHeap is a min-heap of keyMarks by version (container/heap).
type versionHeap []keyMark

func (h versionHeap) Len() int           { return len(h) }
func (h versionHeap) Less(i, j int) bool { return h[i].v < h[j].v }
func (h versionHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *versionHeap) Push(x any)        { *h = append(*h, x.(keyMark)) }
func (h *versionHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// since notes v as a lower bound of the oldest unacknowledged write of
// key.
func (q *regionQueue) since(key string, v uint64) {
	q.oldest[key] = v
	heap.Push(&q.pending, keyMark{v: v, key: key})
}

// watermark is the region's mark (see above); last is the newest version
// this node minted or saw.
func (q *regionQueue) watermark(last uint64) uint64 {
	for len(q.pending) > 0 {
		top := q.pending[0]
		if v, ok := q.oldest[top.key]; ok && v == top.v {
			return top.v - 1
		}
		heap.Pop(&q.pending)
	}
	return last
}

// regionSend is a write sent to a region and not acknowledged yet.
type regionSend struct {
	region  string
	key     string
	version uint64
	at      int // tick it was last sent at
	tries   int
}

// regionState is a node's cross-region replication.
type regionState struct {
	queues map[string]*regionQueue
	rings  map[string]Ring
	sends  map[uint64]*regionSend
	// lastResend is the tick resends were last looked for.
	lastResend int
}

func (n *Node) regionQueue(region string) *regionQueue {
	if n.regions.queues == nil {
		n.regions.queues = map[string]*regionQueue{}
		n.regions.sends = map[uint64]*regionSend{}
	}
	q := n.regions.queues[region]
	if q == nil {
		q = &regionQueue{held: map[string]Record{}, oldest: map[string]uint64{}}
		n.regions.queues[region] = q
	}
	return q
}

// SetRegionRing gives the node the ring of another region, to send that
// region its writes. A region in Config.Regions whose ring is not known
// yet keeps its writes in the outbox.
func (n *Node) SetRegionRing(region string, r Ring) {
	if n.regions.rings == nil {
		n.regions.rings = map[string]Ring{}
	}
	n.regions.rings[region] = r
	if q := n.regions.queues[region]; q != nil {
		q.markAt = n.now - markTicks // new members hear the mark at the next tick
	}
}

// RestoreOutbox reloads the writes persisted for other regions (Hint's
// Target is the region) after a restart.
func (n *Node) RestoreOutbox(hs []Hint) {
	slices.SortFunc(hs, func(a, b Hint) int {
		switch {
		case a.Rec.Version < b.Rec.Version:
			return -1
		case a.Rec.Version > b.Rec.Version:
			return 1
		}
		return 0
	})
	for _, h := range hs {
		if !slices.Contains(n.cfg.Regions, h.Target) {
			continue // a region no longer configured
		}
		n.observe(h.Rec.Version)
		n.hold(h.Target, h.Rec, false)
	}
}

// hold puts r in region's outbox; persist makes that durable in this
// round.
func (n *Node) hold(region string, r Record, persist bool) {
	q := n.regionQueue(region)
	if cur, ok := q.held[string(r.Key)]; ok && !r.Newer(cur) {
		return
	}
	if persist {
		// Held until the region acknowledges it: memory of its own, not
		// the request buffer the key and value came in.
		kv := make([]byte, len(r.Key)+len(r.Value))
		copy(kv[copy(kv, r.Key):], r.Value)
		r.Key = kv[:len(r.Key):len(r.Key)]
		if r.Value != nil {
			r.Value = kv[len(r.Key):]
		}
	}
	q.held[string(r.Key)] = r
	if _, ok := q.oldest[string(r.Key)]; !ok {
		// A key already there keeps its older bound: the write this one
		// replaces in the outbox is not in the region either.
		q.since(string(r.Key), r.Version)
	}
	q.queue = append(q.queue, KeyVersion{Key: r.Key, Version: r.Version, Tomb: r.Tomb})
	if persist {
		n.rd.Persist = append(n.rd.Persist, PersistOp{Outbox: &Hint{Target: region, Rec: r}})
	}
}

// replicateOut puts a write this node coordinated in the outbox of every
// other region.
func (n *Node) replicateOut(r Record) {
	for _, region := range n.cfg.Regions {
		n.hold(region, r, true)
	}
}

// regionPut writes a record that another region sent, with its version,
// through this region's quorum, and answers the sender once W replicas
// hold it (KindRegionAck). It is not sent on to other regions.
func (n *Node) regionPut(m Message) {
	rec := m.Rec
	if rec.Tomb {
		rec.Value = nil
	}
	n.observe(rec.Version)
	sets, reps := n.prefSets(n.ring.Position(rec.Key))
	if len(reps) == 0 {
		n.send(Message{Kind: KindRegionAck, To: m.From, ID: m.ID, Rec: Record{Key: rec.Key, Version: rec.Version}, Err: "this region knows no ring yet"})
		return
	}
	o := &op{write: true, region: true, client: m.From, clientID: m.ID, rec: rec, replicas: reps, sets: sets, need: n.cfg.W, round: n.round}
	id := n.newOp(o)
	n.Stats.RegionWrites++
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

// onRegionAck notes that a region holds a write at its quorum.
func (n *Node) onRegionAck(m Message) {
	s := n.regions.sends[m.ID]
	if s == nil || s.key != string(m.Rec.Key) || s.version != m.Rec.Version {
		return // an answer to a send from before a restart, or resent
	}
	q := n.regionQueue(s.region)
	if m.Err != "" {
		// Resent after its back-off (tickRegions).
		return
	}
	delete(n.regions.sends, m.ID)
	q.inflight--
	q.acked++
	if now := n.clock(); now > VersionTime(s.version) {
		q.lastLag = now - VersionTime(s.version)
	} else {
		q.lastLag = 0
	}
	cur, ok := q.held[s.key]
	if ok && s.version < cur.Version && s.version >= q.oldest[s.key] {
		// An older write of a key held anew: the region holds every
		// version up to this one.
		q.since(s.key, s.version+1)
	}
	if ok && cur.Version == s.version {
		delete(q.held, s.key)
		delete(q.oldest, s.key) // every older write of the key too
		n.rd.Persist = append(n.rd.Persist, PersistOp{DoneOutbox: &Hint{Target: s.region, Rec: Record{Key: cur.Key, Version: cur.Version}}})
	}
}

// regionWindow bounds the writes in flight to one region.
const regionWindow = 1024

// tickRegions sends other regions the writes that are due (older than
// Config.RegionDelay), and again those not acknowledged in time.
func (n *Node) tickRegions() {
	n.sendMarks()
	if len(n.regions.queues) == 0 {
		return
	}
	now := n.clock()
	if n.now-n.regions.lastResend >= max(1, n.cfg.ResendTicks/4) {
		n.regions.lastResend = n.now
		ids := make([]uint64, 0, len(n.regions.sends))
		for id := range n.regions.sends {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			s := n.regions.sends[id]
			if n.now-s.at < n.cfg.ResendTicks<<min(s.tries, 4) {
				continue
			}
			q := n.regionQueue(s.region)
			cur, ok := q.held[s.key]
			if !ok || cur.Version != s.version {
				// Acknowledged or replaced by a newer write, which is
				// queued.
				delete(n.regions.sends, id)
				q.inflight--
				continue
			}
			s.tries++
			s.at = n.now
			n.Stats.Resends++
			n.sendRegion(s, cur, id)
		}
	}
	for _, region := range n.cfg.Regions {
		q := n.regions.queues[region]
		if q == nil {
			continue
		}
		if r := n.regions.rings[region]; r == nil || len(r.Members()) == 0 {
			continue
		}
		for len(q.queue) > 0 && q.inflight < regionWindow {
			e := q.queue[0]
			cur, ok := q.held[string(e.Key)]
			if !ok || cur.Version != e.Version {
				q.queue = q.queue[1:] // acknowledged, or a newer write is queued
				continue
			}
			if n.cfg.RegionDelay > 0 && now < VersionTime(e.Version)+n.cfg.RegionDelay {
				break // later writes are younger still
			}
			q.queue = q.queue[1:]
			n.nextID++
			s := &regionSend{region: region, key: string(cur.Key), version: cur.Version, at: n.now}
			n.regions.sends[n.nextID] = s
			q.inflight++
			n.sendRegion(s, cur, n.nextID)
		}
		if len(q.queue) == 0 {
			q.queue = nil // let the backing array go
		}
	}
}

// sendMarks sends each other region's nodes this node's watermark for
// the region when it has moved, and every markTicks.
func (n *Node) sendMarks() {
	if n.cfg.Origin == 0 {
		return
	}
	for _, region := range n.cfg.Regions {
		r := n.regions.rings[region]
		if r == nil || len(r.Members()) == 0 {
			continue
		}
		q := n.regionQueue(region)
		m := q.watermark(n.last)
		if m == q.mark && n.now-q.markAt < markTicks {
			continue
		}
		q.mark, q.markAt = m, n.now
		for _, mem := range r.Members() {
			n.send(Message{Kind: KindRegionMark, To: mem.Addr, ID: n.cfg.Origin, Horizon: m})
		}
	}
}

// onRegionMark hands a watermark another region sent to the driver.
func (n *Node) onRegionMark(m Message) {
	if m.ID != 0 {
		n.rd.Marks = append(n.rd.Marks, RegionMark{Origin: m.ID, Version: m.Horizon})
	}
}

// sendRegion sends r to a node of s's region: the key's owner there, or
// on a resend the next replica of its preference list.
func (n *Node) sendRegion(s *regionSend, r Record, id uint64) {
	ring := n.regions.rings[s.region]
	if ring == nil {
		return
	}
	pref := ring.Preference(ring.Position(r.Key), n.cfg.N)
	if len(pref) == 0 {
		return
	}
	n.regionQueue(s.region).sent++
	n.send(Message{Kind: KindRegionPut, To: pref[s.tries%len(pref)], ID: id, Rec: r})
}

// RegionStatus reports the replication to each other region, in the
// order of Config.Regions.
func (n *Node) RegionStatus() []RegionStatus {
	out := make([]RegionStatus, 0, len(n.cfg.Regions))
	for _, region := range n.cfg.Regions {
		st := RegionStatus{Region: region}
		if r := n.regions.rings[region]; r != nil && len(r.Members()) > 0 {
			st.Known = true
		}
		if q := n.regions.queues[region]; q != nil {
			st.Pending, st.LastLag, st.Sent, st.Acked = len(q.held), q.lastLag, q.sent, q.acked
			for _, r := range q.held {
				if st.Oldest == 0 || r.Version < st.Oldest {
					st.Oldest = r.Version
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// Outbox returns the writes held for other regions, for tests.
func (n *Node) Outbox() []Hint {
	var out []Hint
	for _, region := range n.cfg.Regions {
		q := n.regions.queues[region]
		if q == nil {
			continue
		}
		for _, r := range q.held {
			out = append(out, Hint{Target: region, Rec: r})
		}
	}
	return out
}

// Retiring replaced ring views: a view replaced by a new one counts for
// every quorum until the transition to the new one is over, which every
// member must agree on, not until a timer runs out.
//
// A replaced view may retire only when no read or write can any longer
// depend on it:
//
//   - no node still coordinates with it alone: every member of the new
//     view runs with the new view (a node that learned of the change late
//     still meets quorums in the old view only; while it does, the others
//     must too, or their quorums and its quorums can miss each other);
//   - the data it placed has reached the new view's replicas: every
//     member has handed off what it no longer replicates (handOff finds
//     nothing up to its horizon), and every member's primary range agrees
//     with its replicas under the new view (a comparison with every one of
//     them finds every bucket equal), both checked in passes that began
//     late enough after every member ran with the new view that their
//     horizon covers every write made before that. A write made after it
//     has a quorum in the new view already; under a steady load every
//     hand-off pass finds some, written through an older view's replicas.
//
// Each node tells the members of its views its state (KindViewState)
// while it keeps an older view or another node asks for it; a node
// retires its older views once every member of its current view reports
// that view and settled on it, and TransitionTicks have passed. A member
// that does not answer (crashed, cut off) keeps the older views in force:
// that costs availability (quorums in more preference lists), never a
// write, until the ring drops it, which starts a new transition.

package kv

import (
	"hash/fnv"
	"slices"
)

// viewSync is a node's progress in the transition to its current view.
type viewSync struct {
	digest  uint64                // of the current view (ringDigest)
	reports map[string]viewReport // the latest state of each member
	// allAt is the tick this node first saw every member of its view
	// report the view; -1 until then.
	allAt int
	// stray: a hand-off pass that began at allAt or later found nothing
	// this node holds and does not replicate.
	stray bool
	// strayH is the horizon hand-off passes count strays up to: the
	// node's horizon when the first pass that may settle the transition
	// began (what it had seen or could mint by allAt); 0 until then.
	strayH uint64
	// synced: a comparison of the primary range with every replica that
	// began SettleTicks after allAt or later found every bucket equal.
	synced bool
	check  *syncCheck
	// done: this node and every member of its view have settled on it;
	// the older views retire (after TransitionTicks).
	done     bool
	lastSent int
	// wanted: another node is in transition; keep reporting until then.
	wanted int
	// retired lists the digests of the last views this node retired: a
	// member that has not yet retired one does not make it adopt it
	// again.
	retired []uint64
}

// viewReport is what a member last said of its view (KindViewState).
type viewReport struct {
	digest  uint64
	settled bool
}

// syncCheck is a comparison of the primary range (lo, hi] with every
// replica, begun at start: the replicas yet to answer, and whether every
// answer so far was equal.
type syncCheck struct {
	start   int
	lo, hi  uint32
	horizon uint64
	waiting []string
	equal   bool
}

// ringDigest names a view by its member table.
func ringDigest(r Ring) uint64 {
	h := fnv.New64a()
	h.Write([]byte(fmtMembers(r.Members())))
	return h.Sum64()
}

func (v *viewSync) reset(digest uint64) {
	reports := v.reports
	if reports == nil {
		reports = map[string]viewReport{}
	}
	*v = viewSync{digest: digest, reports: reports, allAt: -1, lastSent: -1 << 30, retired: v.retired}
}

// settled reports whether this node has settled on its view.
func (v *viewSync) settled() bool { return v.allAt >= 0 && v.stray && v.synced }

// viewPeers lists the members of the current view and of every older
// view still in force, without this node and those that announced their
// leave.
func (n *Node) viewPeers() []string {
	var out []string
	add := func(ms []Member) {
		for _, m := range ms {
			if m.Addr != n.self && !slices.Contains(out, m.Addr) && (hasAddr(n.ring.Members(), m.Addr) || !slices.Contains(n.left, m.Addr)) {
				out = append(out, m.Addr)
			}
		}
	}
	add(n.ring.Members())
	for _, p := range n.prev {
		add(p.ring.Members())
	}
	return out
}

// tickViews advances the transition: notes when every member runs with
// this node's view, decides whether the older views may retire, and
// reports this node's state to the members while anyone is in transition.
func (n *Node) tickViews() {
	v := &n.views
	n.advanceViews()
	n.Stats.Views = n.Views()
	n.Stats.Transition = 0
	if v.allAt >= 0 {
		n.Stats.Transition = 1
		if v.settled() {
			n.Stats.Transition = 2
			if v.done {
				n.Stats.Transition = 3
			}
		}
	}
	if len(n.prev) == 0 && n.now >= v.wanted {
		return
	}
	if n.now-v.lastSent < max(n.cfg.SyncTicks/2, 1) {
		return
	}
	v.lastSent = n.now
	waiting := 0
	if len(n.prev) > 0 {
		waiting = viewsWaiting
	}
	older := encodeViews(n.prev, n.left)
	for _, a := range n.viewPeers() {
		n.send(Message{Kind: KindViewState, To: a, ID: v.digest, Found: v.settled(), W: waiting, Versions: older})
	}
}

// retire notes that the older view p retired.
func (n *Node) retire(p prevView) {
	v := &n.views
	if !slices.Contains(v.retired, p.digest) {
		v.retired = append(v.retired, p.digest)
		if len(v.retired) > 2*maxViews {
			v.retired = slices.Delete(v.retired, 0, len(v.retired)-2*maxViews)
		}
	}
}

// maxViews bounds the older views a node adopts from others.
const maxViews = 16

// addView keeps r as an older view, unless it is the current one or kept
// already, or (adopted from another member) one this node retired.
func (n *Node) addView(r Ring, adopted, guess bool) {
	d := ringDigest(r)
	if d == n.views.digest || (adopted && (len(n.prev) >= maxViews || slices.Contains(n.views.retired, d))) || slices.ContainsFunc(n.prev, func(p prevView) bool { return p.digest == d }) {
		return
	}
	n.prev = append(n.prev, prevView{ring: r, digest: d, until: n.now + n.cfg.TransitionTicks, guess: guess})
}

// leftView marks, in encodeViews, the members that announced they left.
const leftView = 1<<32 - 1

// encodeViews lists the members of views for KindViewState, but for
// guesses: a member of view i as Key the address, Version i<<32 | token;
// then each member that announced it left as Version leftView<<32.
func encodeViews(views []prevView, left []string) []KeyVersion {
	var out []KeyVersion
	for i, p := range views {
		if p.guess {
			continue
		}
		for _, m := range p.ring.Members() {
			out = append(out, KeyVersion{Key: []byte(m.Addr), Version: uint64(i)<<32 | uint64(m.Token)})
		}
	}
	for _, a := range left {
		out = append(out, KeyVersion{Key: []byte(a), Version: leftView << 32})
	}
	return out
}

// adoptViews takes the members another node heard announce their leave
// and, with views, the older views a member in transition to this node's
// view still keeps: a node that started (or restarted) in the middle of a
// transition knows only the view it started with, while others may still
// coordinate with an older one.
func (n *Node) adoptViews(kvs []KeyVersion, views bool) {
	var ms []Member
	for i, kv := range kvs {
		if kv.Version>>32 == leftView {
			// It heard this member announce its leave: the views do not
			// wait for it here either, once it is out of the ring.
			if a := string(kv.Key); !hasAddr(n.ring.Members(), a) && !slices.Contains(n.left, a) {
				n.left = append(n.left, a)
			}
			continue
		}
		if !views {
			continue
		}
		ms = append(ms, Member{Addr: string(kv.Key), Token: uint32(kv.Version)})
		if i+1 == len(kvs) || kvs[i+1].Version>>32 != kv.Version>>32 {
			n.addView(NewStaticRing(n.ring.Position, ms), true, false)
			ms = nil
		}
	}
	n.pruneViews()
}

// everyMember reports whether the last report of every other member of
// the current view is of that view, and settled if settled is set.
func (n *Node) everyMember(settled bool) bool {
	v := &n.views
	for _, m := range n.ring.Members() {
		if m.Addr == n.self {
			continue
		}
		if r, ok := v.reports[m.Addr]; !ok || r.digest != v.digest || (settled && !r.settled) {
			return false
		}
	}
	return true
}

// advanceViews notes when every member first runs with this node's view
// (allAt), whether every member has settled on it (done), and retires the
// older views once the transition is over.
func (n *Node) advanceViews() {
	v := &n.views
	if v.allAt < 0 && n.everyMember(false) {
		v.allAt = n.now
	}
	v.done = v.settled() && n.everyMember(true)
	n.retireViews()
}

func (n *Node) onViewState(m Message) {
	v := &n.views
	v.reports[m.From] = viewReport{digest: m.ID, settled: m.Found}
	if m.W&viewsFull != 0 {
		n.heardViews(m.From)
	}
	if len(m.Versions) > 0 {
		// A node not yet informed takes every view a member coordinates
		// with, whichever view that member runs (informed.go).
		n.adoptViews(m.Versions, (m.ID == v.digest && !v.done) || !n.informed)
	}
	if m.W&viewsAsk != 0 {
		n.tellViews(m.From)
	}
	if m.W&viewsWaiting != 0 || m.ID != v.digest || !m.Found {
		// It is in transition: it needs this node's state until it is
		// done.
		v.wanted = n.now + 4*n.cfg.SyncTicks
	}
	n.advanceViews()
}

// strayCheckDue reports whether the transition waits for a hand-off pass
// that may begin now.
func (n *Node) strayCheckDue() bool {
	v := &n.views
	return v.allAt >= 0 && !v.stray && n.now >= v.allAt+n.cfg.SettleTicks
}

// strayHorizon is the newest version of the strays a hand-off pass
// beginning now counts toward settling the transition (any, 0, before
// such a pass may begin).
func (n *Node) strayHorizon() uint64 {
	v := &n.views
	if v.allAt < 0 || n.now < v.allAt+n.cfg.SettleTicks {
		return 0
	}
	if v.strayH == 0 {
		v.strayH = n.horizon()
	}
	return v.strayH
}

// strayPassDone records a hand-off pass begun at tick start that found
// found records to hand off up to the transition's horizon (strayHorizon:
// every write made before every member ran with the view).
func (n *Node) strayPassDone(start, found int) {
	v := &n.views
	if found == 0 && v.allAt >= 0 && start >= v.allAt+n.cfg.SettleTicks {
		v.stray = true
	}
}

// syncCheckDue reports whether the transition waits for a comparison of
// the primary range with every replica that may begin now.
func (n *Node) syncCheckDue() bool {
	v := &n.views
	if v.allAt < 0 || v.synced || n.now < v.allAt+n.cfg.SettleTicks {
		return false
	}
	return v.check == nil || n.now-v.check.start >= 4*n.cfg.SyncTicks
}

// startSyncCheck notes a comparison of (lo, hi] with peers begun now; no
// peers (or no primary range) settles it at once.
func (n *Node) startSyncCheck(lo, hi uint32, horizon uint64, peers []string) {
	v := &n.views
	if len(peers) == 0 {
		v.synced, v.check = true, nil
		return
	}
	v.check = &syncCheck{start: n.now, lo: lo, hi: hi, horizon: horizon, waiting: slices.Clone(peers), equal: true}
}

// syncCheckAnswer counts a replica's digest of (lo, hi] for the
// comparison in progress.
func (n *Node) syncCheckAnswer(from string, lo, hi uint32, horizon uint64, equal bool) {
	c := n.views.check
	if c == nil || c.lo != lo || c.hi != hi || c.horizon != horizon || !slices.Contains(c.waiting, from) {
		return
	}
	c.waiting = slices.DeleteFunc(c.waiting, func(a string) bool { return a == from })
	c.equal = c.equal && equal
	if len(c.waiting) == 0 {
		n.views.synced = c.equal
		n.views.check = nil
	}
}

// Views returns how many ring views the node's quorums must be met in:
// 1 once the last transition is over.
func (n *Node) Views() int { return 1 + len(n.prev) }

// Transition reports the node's progress towards retiring its older
// views: whether every member runs with its view, whether it has settled
// on it itself, and whether every member has.
func (n *Node) Transition() (allOnView, settled, done bool) {
	return n.views.allAt >= 0, n.views.settled(), n.views.done
}

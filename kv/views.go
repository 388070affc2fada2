// Ring views: the current ring and those replaced within the transition
// window, whose preference lists every quorum must be met in.

package kv

import (
	"encoding/binary"
	"slices"
	"strings"
)

// prevView is a ring view replaced and not yet retired (see Node.prev and
// viewsync.go).
type prevView struct {
	ring   Ring
	digest uint64 // ringDigest(ring)
	until  int
	// guess: the view is this node's guess of the ring before it joined
	// (see SetRing), not one a node was seen to run with; it is not passed
	// on to other members (see adoptViews).
	guess bool
	// gone lists the view's members that left the ring and announced it
	// (see Node.left). They handed their data off before they left, so
	// the view's quorums do not wait for them.
	gone []string
}

// preference is the view's preference list of pos without the members
// that have left.
func (p prevView) preference(pos uint32, n int) []string {
	s := p.ring.Preference(pos, n)
	if len(p.gone) == 0 || !slices.ContainsFunc(s, func(a string) bool { return slices.Contains(p.gone, a) }) {
		return s
	}
	out := make([]string, 0, len(s))
	for _, a := range s {
		if !slices.Contains(p.gone, a) {
			out = append(out, a)
		}
	}
	return out
}

// SetRing replaces the node's view of the ring (membership changed, or the
// node is draining and must count itself out).
//
// A view replaced by one that adds or loses a member stays in the
// transition window (see Node.prev). A member that left and said so
// (MemberLeft) is dropped from every view of the window at once, not only
// from the view replaced: a departing node hands its data off before it
// leaves, and a view that still waited for it would stall every request
// whose preference list named it until the view expired. A member that
// vanished without a word (a crash, a partition, a walk of the ring that
// missed it) is not: the replaced view keeps counting it, so a write that
// it and one other replica acknowledged is still found by every read
// until the new preference lists hold it too.
func (n *Node) SetRing(r Ring) {
	oldRing := n.ring
	old := fmtMembers(oldRing.Members())
	n.ring = r
	if m := fmtMembers(r.Members()); m != old {
		n.ringChangedAt = n.now
		n.views.reset(ringDigest(r))
		prev, guess := oldRing, false
		if len(oldRing.Members()) <= 1 {
			guess = true
			// It learns what the others run with (informed.go).
			n.uninform()
			// This node's first real view: the ring as it was before this
			// node joined is the view other coordinators may still use.
			var ms []Member
			for _, mb := range r.Members() {
				if mb.Addr != n.self {
					ms = append(ms, mb)
				}
			}
			prev = NewStaticRing(r.Position, ms)
		}
		if len(prev.Members()) > 0 {
			n.addView(prev, false, guess)
		}
		// A member back in the ring (a standby added again) is no longer
		// one that left.
		n.left = slices.DeleteFunc(n.left, func(a string) bool { return hasAddr(r.Members(), a) })
		n.pruneViews()
	}
	if fmtMembers(r.Members()) != n.lastMembers {
		n.lastSync = n.now - n.cfg.SyncTicks // compare at the next tick, hand off once the ring is stable
	}
}

// MemberLeft records that the member at addr announced it left the ring
// (or is leaving it) after handing its data off: once the ring drops it, no
// view of the transition window waits for it. Without the announcement a
// member that drops out of the ring is taken for crashed, and the views
// that had it keep counting it until they expire.
func (n *Node) MemberLeft(addr string) {
	if !slices.Contains(n.left, addr) {
		n.left = append(n.left, addr)
	}
	n.pruneViews()
}

// pruneViews marks, in every view of the transition window, the members
// that left (announced, and out of the current ring) as gone, and drops
// the views with no member left.
func (n *Node) pruneViews() {
	live := n.prev[:0]
	for _, p := range n.prev {
		p.gone = p.gone[:0]
		for _, mb := range p.ring.Members() {
			if !hasAddr(n.ring.Members(), mb.Addr) && slices.Contains(n.left, mb.Addr) && !slices.Contains(p.gone, mb.Addr) {
				p.gone = append(p.gone, mb.Addr)
			}
		}
		if len(p.gone) < len(distinctAddrs(p.ring.Members())) {
			live = append(live, p)
		}
	}
	clear(n.prev[len(live):])
	n.prev = live
	n.rerouteLeftHints()
}

func hasAddr(ms []Member, addr string) bool {
	return slices.ContainsFunc(ms, func(m Member) bool { return m.Addr == addr })
}

func distinctAddrs(ms []Member) []string {
	var out []string
	for _, m := range ms {
		if !slices.Contains(out, m.Addr) {
			out = append(out, m.Addr)
		}
	}
	return out
}

// retireViews drops the older views whose transition is over (see
// viewsync.go): every member has settled on the current view, and
// TransitionTicks have passed.
func (n *Node) retireViews() {
	live := n.prev[:0]
	for _, p := range n.prev {
		if n.now >= p.until && n.views.done {
			n.retire(p)
			continue
		}
		live = append(live, p)
	}
	clear(n.prev[len(live):])
	n.prev = live
}

// prefSets returns the preference lists of pos under the current view and
// every older view still in force, the current one first, and their union.
func (n *Node) prefSets(pos uint32) ([][]string, []string) {
	cur := n.ring.Preference(pos, n.cfg.N)
	sets := [][]string{cur}
	union := slices.Clip(cur) // copied below before anything is added
	for _, p := range n.prev {
		s := p.preference(pos, n.cfg.N)
		if len(s) == 0 || slices.Equal(s, cur) {
			continue
		}
		sets = append(sets, s)
		for _, a := range s {
			if !slices.Contains(union, a) {
				union = append(slices.Clip(union), a)
			}
		}
	}
	return sets, union
}

// quorumIn reports whether, in every set, at least min(q, len(set))
// members satisfy has.
func quorumIn(sets [][]string, q int, has func(string) bool) bool {
	for _, set := range sets {
		c := 0
		for _, a := range set {
			if has(a) {
				c++
			}
		}
		if c < min(q, len(set)) {
			return false
		}
	}
	return true
}

func fmtMembers(ms []Member) string {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString(m.Addr)
		binary.Write(&b, binary.BigEndian, m.Token)
	}
	return b.String()
}

// SetLeaving tells the node it is draining out of the ring (on), or that
// a leave failed and it stays (off). A leaving node acknowledges no
// replica write (see Node.leaving).
func (n *Node) SetLeaving(on bool) {
	n.leaving = on
	// Its own views stop counting it too: what it holds is being handed
	// off, and it acknowledges nothing.
	if on {
		n.MemberLeft(n.self)
	} else {
		n.left = slices.DeleteFunc(n.left, func(a string) bool { return a == n.self })
	}
}

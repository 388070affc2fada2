// Ring views: the current ring and those replaced within the transition
// window, whose preference lists every quorum must be met in.

package kv

import (
	"encoding/binary"
	"slices"
	"strings"
)

// prevView is a ring view replaced within the transition window (see
// Node.prev).
type prevView struct {
	ring  Ring
	until int
	// gone lists the view's members that are no longer in the ring. They
	// handed their data off before they left (or crashed, and cannot
	// answer), so the view's quorums do not wait for them.
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
// A view replaced by one that adds a member stays in the transition window
// (see Node.prev). A member that leaves is dropped from every view of the
// window at once, not only from the view replaced: a departing node hands
// its data off before it leaves, and a view that still waited for it would
// stall every request whose preference list named it until the view
// expired.
func (n *Node) SetRing(r Ring) {
	oldRing := n.ring
	old := fmtMembers(oldRing.Members())
	n.ring = r
	if m := fmtMembers(r.Members()); m != old {
		n.ringChangedAt = n.now
		prev := oldRing
		if len(oldRing.Members()) <= 1 {
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
		if joined(prev.Members(), r.Members()) && len(prev.Members()) > 0 {
			n.prev = append(n.prev, prevView{ring: prev, until: n.now + n.cfg.TransitionTicks})
		}
		live := n.prev[:0]
		for _, p := range n.prev {
			p.gone = p.gone[:0]
			for _, mb := range p.ring.Members() {
				if !hasAddr(r.Members(), mb.Addr) && !slices.Contains(p.gone, mb.Addr) {
					p.gone = append(p.gone, mb.Addr)
				}
			}
			if len(p.gone) < len(distinctAddrs(p.ring.Members())) {
				live = append(live, p)
			}
		}
		clear(n.prev[len(live):])
		n.prev = live
	}
	if fmtMembers(r.Members()) != n.lastMembers {
		n.lastSync = n.now - n.cfg.SyncTicks // compare at the next tick, hand off once the ring is stable
	}
}

// joined reports whether next has a member (by address) that prev lacks.
func joined(prev, next []Member) bool {
	for _, m := range next {
		if !hasAddr(prev, m.Addr) {
			return true
		}
	}
	return false
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

// prefSets returns the preference lists of pos under the current view and
// every view still in its transition window, the current one first, and
// their union.
func (n *Node) prefSets(pos uint32) ([][]string, []string) {
	cur := n.ring.Preference(pos, n.cfg.N)
	sets := [][]string{cur}
	union := slices.Clip(cur) // copied below before anything is added
	live := n.prev[:0]
	for _, p := range n.prev {
		if n.now >= p.until {
			continue
		}
		live = append(live, p)
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
	n.prev = live
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
func (n *Node) SetLeaving(on bool) { n.leaving = on }

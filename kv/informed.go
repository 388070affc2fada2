// Starting in the middle of a transition: a node that joins, or restarts,
// learns the ring's members from a walk, but not the views the other
// members still coordinate with. A member that learned of the last changes
// late may still meet its quorums in a view several changes old (its older
// views stay in force everywhere until it catches up: viewsync.go). A
// quorum the new node met in its own views alone could miss that member's
// entirely: a read through the new node would answer an older value than a
// write already acknowledged.
//
// So a node whose ring of itself alone is replaced by a ring of others (it
// started, or it was alone) is not informed until every other member of
// its current view has told it the views it runs with (KindViewState with
// viewsFull: its current view and the older ones it keeps), and it has
// taken them all as views of its own. Any two
// coordinators then share a view, so their quorums meet. Until then it
// coordinates nothing: it holds the client requests it receives (answering
// them once informed, or with an error after TimeoutTicks), and begins no
// hand-off (it cannot tell what it no longer replicates). It still serves
// as a replica.
//
// A member from which nothing at all has come for TimeoutTicks since the
// node began asking is taken for down, and not waited for: a crashed
// member coordinates nothing, and once back it learns the views itself
// before it does. Waiting for it would keep the node from coordinating
// until the ring drops the member (the simulator's rings never do). The
// risk left: a member cut off from this node alone, still reached by
// clients and by a quorum, running with a view that no other member
// reports (one it alone ran); its older views are also every other
// member's, which report them.

package kv

import "slices"

// Flags of KindViewState's W.
const (
	// viewsWaiting: the sender keeps older views and wants the others'
	// states until its transition is done.
	viewsWaiting = 1 << iota
	// viewsAsk: the sender is not informed; answer with viewsFull at once.
	viewsAsk
	// viewsFull: Versions lists the sender's current view too, after its
	// older ones.
	viewsFull
)

// heldReq is a client request held until the node is informed.
type heldReq struct {
	m  Message
	at int
}

// maxHeld bounds the requests held; more are refused at once.
const maxHeld = 1 << 14

// coordinates reports whether the node coordinates m's quorums.
func coordinates(m Message) bool {
	switch m.Kind {
	case KindClientPut, KindClientGet, KindClientCas, KindRegionPut:
		return true
	}
	return false
}

// holdUninformed keeps m, a request to coordinate, until the node is
// informed, and reports whether it did.
func (n *Node) holdUninformed(m Message) bool {
	if n.informed {
		return false
	}
	if slices.ContainsFunc(n.held, func(h heldReq) bool { return h.m.Kind == m.Kind && h.m.From == m.From && h.m.ID == m.ID }) {
		return true // a resend of one held already
	}
	if len(n.held) >= maxHeld {
		n.refuseHeld(m)
		return true
	}
	n.held = append(n.held, heldReq{m: m, at: n.now})
	n.Stats.Held = len(n.held)
	return true
}

// refuseHeld answers a held request that will not be coordinated here.
func (n *Node) refuseHeld(m Message) {
	const why = "node is starting: it has not yet heard from every member of the ring which views they run with; retry, or use another node"
	switch m.Kind {
	case KindRegionPut:
		n.send(Message{Kind: KindRegionAck, To: m.From, ID: m.ID, Rec: Record{Key: m.Rec.Key, Version: m.Rec.Version}, Err: why})
	case KindClientCas:
		if m.Found {
			return // forwarded: the forwarder turns to another replica
		}
		fallthrough
	default:
		n.send(Message{Kind: KindClientResp, To: m.From, ID: m.ID, Err: why})
	}
}

// heardViews notes that from told this node every view it runs with (the
// caller adopts them); told is nil once the node is informed.
func (n *Node) heardViews(from string) {
	if n.told != nil {
		n.told[from] = true
	}
}

// unheard lists the other members of the current view that have not told
// this node their views, but for those that announced their leave (they
// handed their data off, and may be gone) and, once the node has asked
// for TimeoutTicks, those it has received nothing from (taken for down).
func (n *Node) unheard() []string {
	var out []string
	silentDown := n.now-n.askSince >= n.cfg.TimeoutTicks
	for _, m := range n.ring.Members() {
		a := m.Addr
		if a == n.self || n.told[a] || slices.Contains(n.left, a) || slices.Contains(out, a) || silentDown && !n.alive[a] {
			continue
		}
		out = append(out, a)
	}
	return out
}

// uninform makes the node learn the views the members run with before it
// coordinates again.
func (n *Node) uninform() {
	n.informed, n.told, n.alive, n.askSince = false, map[string]bool{}, map[string]bool{}, n.now
}

// tickInformed asks the members not yet heard for their views, every
// ResendTicks, and once every one has answered releases the held requests;
// those held for TimeoutTicks are refused.
func (n *Node) tickInformed() {
	if n.informed {
		return
	}
	missing := n.unheard()
	if len(missing) == 0 {
		n.informed = true
		n.told, n.alive = nil, nil
		held := n.held
		n.held = nil
		n.Stats.Held = 0
		for _, h := range held {
			n.Step(h.m)
		}
		return
	}
	if n.now-n.informAsk >= n.cfg.ResendTicks {
		n.informAsk = n.now
		for _, a := range missing {
			n.send(Message{Kind: KindViewState, To: a, ID: n.views.digest, W: viewsAsk})
		}
	}
	live := n.held[:0]
	for _, h := range n.held {
		if n.now-h.at >= n.cfg.TimeoutTicks {
			n.refuseHeld(h.m)
			continue
		}
		live = append(live, h)
	}
	clear(n.held[len(live):])
	n.held = live
	n.Stats.Held = len(n.held)
}

// tellViews answers a node that asked for every view this node runs with
// (viewsAsk), unless this node knows no ring but itself yet.
func (n *Node) tellViews(to string) {
	if len(distinctAddrs(n.ring.Members())) <= 1 {
		return
	}
	views := encodeViews(append(slices.Clip(n.prev), prevView{ring: n.ring}), n.left)
	w := viewsFull
	if len(n.prev) > 0 {
		w |= viewsWaiting
	}
	n.send(Message{Kind: KindViewState, To: to, ID: n.views.digest, Found: n.views.settled(), W: w, Versions: views})
}

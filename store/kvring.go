package store

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"time"

	"tide/chord"
	"tide/kv"
	"tide/store/kvserver"
	"tide/store/status"
)

// member is one ring member as the KV layer sees it.
type member struct {
	ref   chord.Ref
	addrs map[string]string // http, peer, resp
}

// kvRing is a kv.Ring over a snapshot of the ring's members.
type kvRing struct {
	*kv.StaticRing
	members []member
}

// startKV starts the KV service on peerLn, and the loops that keep its
// ring tables: this region's (ringLoop) and every other region's
// (regionLoop).
func (n *Node) startKV(ctx context.Context, peerLn net.Listener) error {
	pos := n.pos
	self := n.ring.Self()
	initial := &kvRing{StaticRing: kv.NewStaticRing(pos, []kv.Member{{Addr: n.peerAddr, Token: uint32(self.ID)}}),
		members: []member{{ref: self, addrs: n.addrs()}}}
	if !n.ring.InRing() {
		// A standby owns nothing, and knows no ring before its first walk.
		initial = &kvRing{StaticRing: kv.NewStaticRing(pos, nil)}
	}
	n.kvRing.Store(initial)
	k, err := kvserver.Start(ctx, kvserver.Config{
		KV: n.cfg.KV, TLS: n.cfg.TLS, KVSync: n.cfg.KVSync, KVSyncPeriod: n.cfg.KVSyncPeriod, Self: n.peerAddr, Engine: n.eng, Log: n.log,
		KnowsRing:     func() bool { return n.ring.InRing() || len(n.following()) > 0 || n.leaving.Load() },
		RoundMessages: n.m.kvRound, SyncSeconds: n.m.kvSync, Latency: n.m.kvLatency,
	}, peerLn, initial)
	if err != nil {
		return err
	}
	n.kv = k
	n.wg.Add(2)
	go func() { defer n.wg.Done(); k.Wait() }()
	go func() { defer n.wg.Done(); n.ringLoop(ctx) }()
	if len(n.cfg.KV.Regions) > 0 {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.regionLoop(ctx) }()
	}
	return nil
}

// KVOwner returns the member that owns key.
func (n *Node) KVOwner(key []byte) (member, error) {
	r := n.kvRing.Load()
	pos := n.pos(key)
	ms := r.members
	if len(ms) == 0 {
		return member{}, status.Errorf(http.StatusServiceUnavailable, "%v", status.ErrNoRing)
	}
	i := sort.Search(len(ms), func(i int) bool { return uint32(ms[i].ref.ID) >= pos })
	return ms[i%len(ms)], nil
}

// Addrs returns this node's service addresses by name: "chord", "http",
// "peer", "resp" (if served) and "region" (if set).
func (n *Node) Addrs() map[string]string {
	a := n.addrs()
	a["chord"] = n.ring.Self().Addr()
	return a
}

// addrs are this node's service addresses.
func (n *Node) addrs() map[string]string {
	a := map[string]string{"http": n.HTTPAddr(), "peer": n.peerAddr}
	if n.cfg.Region != "" {
		a["region"] = n.cfg.Region
	}
	if n.respAddr != "" {
		a["resp"] = n.respAddr
	}
	return a
}

// ringLoop keeps the KV layer's member table: a walk of the ring whenever
// this node's neighbourhood changes, when asked (RefreshRing), and every
// 60 seconds regardless.
func (n *Node) ringLoop(ctx context.Context) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	var lastEpoch uint64
	var lastWalk time.Time
	announced := false
	followUps := 0
	shrinkSeen := "" // a smaller table seen once, waiting for a second walk
	var lastHello time.Time
	helloFor := "" // the table the members were last told of
	cache := addrCache{}
	installed := false // a table from a walk is in force
	started := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.ringKick:
			// Walk now and a few times more: pointers around a new
			// member take a few stabilization rounds to settle.
			followUps = 6
			lastWalk = time.Time{}
		}
		// Follow-up walks come quickly, so that the table catches up
		// with a change within a few stabilization rounds, not seconds.
		if followUps > 1 {
			t.Reset(200 * time.Millisecond)
		} else {
			t.Reset(time.Second)
		}
		// A member walks when its neighbourhood changed, a standby (whose
		// Chord node sees no changes) every few seconds; both at least
		// every minute, and whenever asked.
		period := time.Minute
		if !n.ring.InRing() {
			period = standbyWalk
		}
		if e := n.ring.Epoch(); e == lastEpoch && time.Since(lastWalk) < period && !lastWalk.IsZero() && followUps == 0 && installed {
			continue
		} else {
			lastEpoch = e
		}
		if followUps > 0 {
			followUps--
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ms, err := n.walk(wctx, cache)
		cancel()
		if err != nil {
			n.log.Debug("ring walk failed; will retry", "err", err)
			continue
		}
		lastWalk = time.Now()
		if n.kv.Draining() || !n.ring.InRing() {
			// A draining node counts itself out; a node out of the ring
			// (it left while this walk ran) is never in its own table.
			ms = slices.DeleteFunc(ms, func(m member) bool { return m.ref == n.ring.Self() })
		}
		if !installed && n.ring.InRing() {
			via := n.joinedVia.Load()
			var theirs []member
			if via != nil {
				// The ring as the member this node joined through sees it.
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				var err error
				if theirs, err = n.walkFrom(wctx, *via, cache); err != nil {
					n.log.Debug("walk from the member this node joined through failed", "via", via.String(), "err", err)
				}
				cancel()
			}
			if ok, wait := firstTable(ms, via, theirs, time.Since(started)); !ok {
				n.log.Debug("first ring walk lacks members the one this node joined through finds; walking again", "members", len(ms), "theirs", len(theirs), "via", via.String())
				continue
			} else if wait {
				n.log.Warn("no ring walk found every member the one this node joined through finds; using the walk's table", "members", len(ms), "waited", time.Since(started).Round(time.Second))
			}
		}
		// A walk while successor pointers settle can skip a member. A
		// table that loses members is installed only when the next walk,
		// a second later, agrees: a replica must not hand off and drop
		// records because of one short walk.
		if cur := n.kvRing.Load(); cur != nil && lostMembers(cur.members, ms) && !n.kv.Draining() {
			if f := fmtRing(ms); f != shrinkSeen {
				shrinkSeen = f
				followUps = max(followUps, 1)
				continue
			}
		}
		shrinkSeen = ""
		installed = true
		n.setMembers(ms)
		if standby := !n.ring.InRing(); standby && (time.Since(lastHello) >= standbyHello || fmtRing(ms) != helloFor) {
			// Tell the members this standby follows them, so that their
			// membership changes wait for it too.
			lastHello, helloFor = time.Now(), fmtRing(ms)
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			n.helloMembers(hctx, ms)
			cancel()
		}
		if !announced && len(ms) > 1 {
			// A node that joined tells every member at once, so that
			// distant nodes do not route by an old table until their next
			// periodic walk.
			announced = true
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			n.announceRingChange(actx)
			cancel()
		}
	}
}

// firstTableWait bounds how long a node that joined waits for a walk that
// finds the member it joined through (that member may have died since).
const firstTableWait = 30 * time.Second

// firstTable reports whether ms may be the first member table of a node
// that joined through via (nil if it created the ring), given theirs, the
// members a walk from via found (nil if that walk failed), after waiting
// waited; timedOut says it may only because the wait is over. The first
// table lets client requests through, so it must not be one a walk found
// too early: right after a restart, the other members' pointers can still
// lead to this node's own entry from before, and a walk then finds the node
// alone, or some members only. A key's preference list in such a table
// names nodes that are not its replicas, and a read would be answered by
// them and this node's own storage. So the table must hold via and every
// member via's walk finds (members are compared by address: a restarted
// node's entry from before has its address).
func firstTable(ms []member, via *chord.Ref, theirs []member, waited time.Duration) (ok, timedOut bool) {
	if via == nil {
		return true, false
	}
	have := make(map[string]bool, len(ms))
	for _, m := range ms {
		have[m.ref.Addr()] = true
	}
	ok = have[via.Addr()] && theirs != nil
	for _, m := range theirs {
		if !have[m.ref.Addr()] {
			ok = false
		}
	}
	if ok {
		return true, false
	}
	return waited >= firstTableWait, waited >= firstTableWait
}

// lostMembers reports whether next lacks a member of cur.
func lostMembers(cur, next []member) bool {
	have := map[chord.Ref]bool{}
	for _, m := range next {
		have[m.ref] = true
	}
	for _, m := range cur {
		if !have[m.ref] {
			return true
		}
	}
	return false
}

// setMembers installs a new member table in the KV layer.
func (n *Node) setMembers(ms []member) {
	var kms []kv.Member
	for _, m := range ms {
		kms = append(kms, kv.Member{Addr: m.addrs["peer"], Token: uint32(m.ref.ID)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ref.ID < ms[j].ref.ID })
	r := &kvRing{StaticRing: kv.NewStaticRing(n.pos, kms), members: ms}
	old := n.kvRing.Swap(r)
	if old == nil || fmtRing(old.members) != fmtRing(ms) {
		n.log.Info("kv ring changed", "members", len(ms))
	}
	n.kv.SetRing(r)
}

func fmtRing(ms []member) string {
	s := ""
	for _, m := range ms {
		s += m.ref.String() + ";"
	}
	return s
}

// standbyWalk is how often a standby walks the ring it follows.
const standbyWalk = 5 * time.Second

// walk follows successor pointers around the ring from this node, or for a
// standby from a member it follows.
func (n *Node) walk(ctx context.Context, cache addrCache) ([]member, error) {
	if !n.ring.InRing() && !n.leaving.Load() {
		return n.walkFollowed(ctx, cache)
	}
	self := n.ring.Self()
	out := []member{{ref: self, addrs: n.addrs()}}
	seen := map[chord.Ref]bool{self: true}
	cur := n.ring.Successor(0)
	for range 4096 {
		if seen[cur] || cur.IsZero() {
			break
		}
		seen[cur] = true
		a, err := n.addrsOf(ctx, cur, cache)
		if err != nil {
			return nil, err
		}
		if a["peer"] != "" {
			out = append(out, member{ref: cur, addrs: a})
		}
		next, err := n.rpc.CallRef(ctx, cur.Addr(), "get_successor", 0)
		if err != nil {
			return nil, fmt.Errorf("successor of %s: %w", cur.Addr(), err)
		}
		cur = next
	}
	return out, nil
}

// RefreshRing asks for an immediate walk of the ring.
func (n *Node) RefreshRing() {
	select {
	case n.ringKick <- struct{}{}:
	default:
	}
}

// Anti-entropy: a node compares its primary range with its replicas by
// bucket digests, then by key versions, and pushes or pulls what differs.

package kv

import (
	"encoding/binary"
	"hash/fnv"
	"slices"
)

// primaryRange returns the range this node is primary for: (predecessor's
// token, own token].
func (n *Node) primaryRange() (lo, hi uint32, ok bool) {
	ms := n.ring.Members()
	for i, m := range ms {
		if m.Addr == n.self {
			return ms[(i+len(ms)-1)%len(ms)].Token, m.Token, true
		}
	}
	return 0, 0, false
}

// syncRound compares this node's primary range with its replicas: one
// replica per round normally, every replica at once after the ring changed
// or while the last comparison found differences, so data moves to new
// replicas without waiting for the rotation. It also hands off keys this
// node no longer replicates when the ring has changed.
func (n *Node) syncRound() {
	for r, t := range n.pulling {
		if n.now-t >= 10*n.cfg.SyncTicks {
			delete(n.pulling, r)
		}
	}
	members := fmtMembers(n.ring.Members())
	changed := members != n.lastMembers
	// A node that does not yet know the views in force (informed.go)
	// cannot tell what it no longer replicates.
	stable := n.now-n.ringChangedAt >= n.cfg.HandOffTicks && n.informed
	if p := n.strayPass; p != nil {
		if p.ringAt != n.ringChangedAt && stable {
			// The table changed under the pass: what it read may hold
			// new strays.
			n.lastMembers = members
			n.lastStray = n.now
			n.handOff()
		}
	} else if (changed || n.now-n.lastStray >= 10*n.cfg.SyncTicks || n.strayCheckDue()) && !n.strayBusy && stable {
		n.lastMembers = members
		n.lastStray = n.now
		n.handOff()
	} else if changed && !stable {
		// Come back when the table has been stable long enough.
		n.lastSync = min(n.lastSync, n.ringChangedAt+n.cfg.HandOffTicks-n.cfg.SyncTicks)
	}
	lo, hi, ok := n.primaryRange()
	if !ok {
		if n.syncCheckDue() {
			n.startSyncCheck(0, 0, 0, nil) // no range of its own to compare
		}
		return
	}
	pref := n.ring.Preference(hi, n.cfg.N)
	var peers []string
	for _, p := range pref {
		if p != n.self {
			peers = append(peers, p)
		}
	}
	h := n.horizon()
	check := n.syncCheckDue()
	if check {
		// The transition to this view waits for a comparison with every
		// replica (viewsync.go).
		n.startSyncCheck(lo, hi, h, peers)
	}
	if len(peers) == 0 {
		return
	}
	if changed || n.diverged || check {
		n.diverged = false
		for _, p := range peers {
			n.send(Message{Kind: KindDigest, To: p, Lo: lo, Hi: hi, Buckets: n.cfg.Buckets, Horizon: h})
		}
		return
	}
	n.syncPeer = (n.syncPeer + 1) % len(peers)
	n.send(Message{Kind: KindDigest, To: peers[n.syncPeer], Lo: lo, Hi: hi, Buckets: n.cfg.Buckets, Horizon: h})
}

// bucketOf maps a position in (lo, hi] to one of b buckets.
func bucketOf(pos, lo, hi uint32, b int) int {
	width := uint64(hi - lo)
	if lo == hi {
		width = 1 << 32
	}
	off := uint64(pos - lo - 1)
	return int(off * uint64(b) / width)
}

// bucketRange returns the sub-range of bucket i of (lo, hi] split in b.
func bucketRange(i int, lo, hi uint32, b int) (uint32, uint32) {
	width := uint64(hi - lo)
	if lo == hi {
		width = 1 << 32
	}
	start := func(k int) uint32 {
		// smallest offset o with o*b/width >= k, minus one position
		o := (uint64(k)*width + uint64(b) - 1) / uint64(b)
		return lo + uint32(o)
	}
	return start(i), start(i + 1)
}

func recordHash(r Record) uint64 {
	h := fnv.New64a()
	h.Write(r.Key)
	var v [9]byte
	binary.BigEndian.PutUint64(v[:8], r.Version)
	if r.Tomb {
		v[8] = 1
	}
	h.Write(v[:])
	return h.Sum64()
}

// scan is st.Scan for the background work that reads whole ranges
// (digests, key versions, hand-off), counting the bytes it reads against
// the scan budget (Config.ScanBytesPerTick).
func (n *Node) scan(lo, hi uint32, fn func(uint32, Record) bool) {
	n.st.Scan(lo, hi, func(pos uint32, r Record) bool {
		n.scanDebt += int64(len(r.Key) + len(r.Value) + 16)
		return fn(pos, r)
	})
}

// scanVersions is scan for work that needs no values: through the
// storage's VersionScanner when it has one, which copies no values out
// (the records fn sees are valid only during the call).
func (n *Node) scanVersions(lo, hi uint32, fn func(uint32, Record) bool) {
	scanVersionsOf(n.st, lo, hi, func(pos uint32, r Record) bool {
		// Through a VersionScanner, the values are read but not copied
		// (r.Value is nil).
		n.scanDebt += int64(len(r.Key) + len(r.Value) + 16)
		return fn(pos, r)
	})
}

// scanVersionsOf scans (lo, hi] of st through its VersionScanner when it
// has one, and in full otherwise.
func scanVersionsOf(st Storage, lo, hi uint32, fn func(uint32, Record) bool) {
	if vs, ok := st.(VersionScanner); ok {
		vs.ScanVersions(lo, hi, fn)
		return
	}
	st.Scan(lo, hi, fn)
}

// horizon is the newest version a comparison starting now covers: what
// this node had seen or could mint SettleTicks ago (the oldest mark it
// has, right after it starts).
func (n *Node) horizon() uint64 {
	if len(n.marks) == 0 {
		return max(n.last, n.clock())
	}
	if n.now < len(n.marks)-1 {
		return n.marks[1] // the first tick's
	}
	return n.marks[(n.now+1)%len(n.marks)]
}

// settled reports whether a record of version v is covered by a
// comparison up to horizon h (0: everything).
func settled(v, h uint64) bool { return h == 0 || v <= h }

// digest hashes the records of (lo, hi] up to version h into b buckets.
func (n *Node) digest(lo, hi uint32, b int, h uint64) []uint64 {
	return digestOf(func(fn func(uint32, Record) bool) { n.scanVersions(lo, hi, fn) }, lo, hi, b, h)
}

// Digest is the digest a node answers a KindDigest with: the records of
// (lo, hi] in st up to version h, hashed into b buckets. It only reads
// st, so a driver may compute it outside the node's rounds (see
// StepDigestResp), from storage as it stands: a digest read in a round
// sees storage as the round began, without the round's own writes.
func Digest(st Storage, lo, hi uint32, b int, h uint64) []uint64 {
	return digestOf(func(fn func(uint32, Record) bool) { scanVersionsOf(st, lo, hi, fn) }, lo, hi, b, h)
}

// DigestReply is the answer to a KindDigest message m from a node at
// self, given its digest (Digest).
func DigestReply(self string, m Message, hashes []uint64) Message {
	return Message{Kind: KindDigestResp, From: self, To: m.From, Lo: m.Lo, Hi: m.Hi, Buckets: m.Buckets, Horizon: m.Horizon, Hashes: hashes}
}

func digestOf(scan func(func(uint32, Record) bool), lo, hi uint32, b int, h uint64) []uint64 {
	if b <= 0 || b > 4096 {
		return nil
	}
	out := make([]uint64, b)
	var recent []bool // buckets with records newer than h
	scan(func(pos uint32, r Record) bool {
		i := bucketOf(pos, lo, hi, b)
		if !settled(r.Version, h) {
			if recent == nil {
				recent = make([]bool, b)
			}
			recent[i] = true
			return true
		}
		out[i] ^= recordHash(r)
		return true
	})
	// 0 says the bucket is empty, and has it sent whole (onDigestResp):
	// one that holds only newer records is not.
	for i, r := range recent {
		if r && out[i] == 0 {
			out[i] = 1
		}
	}
	return out
}

func (n *Node) versions(lo, hi uint32) []KeyVersion {
	var out []KeyVersion
	n.scan(lo, hi, func(_ uint32, r Record) bool {
		out = append(out, KeyVersion{Key: r.Key, Version: r.Version, Tomb: r.Tomb})
		return len(out) < 100000
	})
	return out
}

func (n *Node) onDigestResp(m Message) {
	n.compareDigest(m, n.digest(m.Lo, m.Hi, m.Buckets, m.Horizon))
}

// StepDigestResp steps a KindDigestResp m with this node's own digest of
// the same range and horizon (Digest), read by the driver outside the
// round: a digest reads a whole range, and every request waits for the
// round under way.
func (n *Node) StepDigestResp(m Message, mine []uint64) {
	n.heard(m.From)
	n.compareDigest(m, mine)
}

// compareDigest compares a peer's digest m with this node's, mine, and
// moves what differs.
func (n *Node) compareDigest(m Message, mine []uint64) {
	n.syncCheckAnswer(m.From, m.Lo, m.Hi, m.Horizon, slices.Equal(mine, m.Hashes))
	if len(mine) != len(m.Hashes) {
		return
	}
	moved := false
	for i := range mine {
		if mine[i] != m.Hashes[i] {
			lo, hi := bucketRange(i, m.Lo, m.Hi, m.Buckets)
			switch {
			case m.Hashes[i] == 0:
				// The peer holds nothing here (it just joined): send it
				// the whole bucket, without comparing keys.
				n.queueRange(m.From, lo, hi)
				moved = true
			case mine[i] == 0:
				// Ask one replica for the bucket, not every one that
				// answers; ask again if it has not come after a while.
				if n.pulling == nil {
					n.pulling = map[[2]uint32]int{}
				}
				if t, ok := n.pulling[[2]uint32{lo, hi}]; !ok || n.now-t >= 10*n.cfg.SyncTicks {
					n.pulling[[2]uint32{lo, hi}] = n.now
					n.send(Message{Kind: KindPullRange, To: m.From, Lo: lo, Hi: hi})
				}
				moved = true
			default:
				// Compared key by key (onKeysResp), which decides
				// whether anything needs to move.
				n.send(Message{Kind: KindKeys, To: m.From, Lo: lo, Hi: hi, Horizon: m.Horizon})
			}
		}
	}
	n.pumpRanges() // what the comparison queued
	if moved {
		n.compareSoon()
	}
}

// compareSoon makes the next comparison come soon, with every replica:
// one found differences, and runs until the ranges agree.
func (n *Node) compareSoon() {
	n.diverged = true
	n.lastSync = min(n.lastSync, n.now-n.cfg.SyncTicks+max(n.cfg.SyncTicks/20, 1))
}

// onKeysResp compares a bucket key by key: pushes what the peer lacks,
// pulls what the peer has newer.
func (n *Node) onKeysResp(m Message) {
	theirs := map[string]KeyVersion{}
	for _, kv := range m.Versions {
		theirs[string(kv.Key)] = kv
	}
	var push []Record
	var pull [][]byte
	seen := map[string]bool{}
	n.scan(m.Lo, m.Hi, func(_ uint32, r Record) bool {
		seen[string(r.Key)] = true
		t, ok := theirs[string(r.Key)]
		if !settled(r.Version, m.Horizon) || (ok && !settled(t.Version, m.Horizon)) {
			return true // written since the comparison's horizon: left to the next one
		}
		other := Record{Key: t.Key, Version: t.Version, Tomb: t.Tomb}
		switch {
		case !ok || (r.Version > t.Version) || (r.Version == t.Version && r.Tomb && !t.Tomb):
			push = append(push, r)
		case t.Version > r.Version || (t.Tomb && !r.Tomb && other.Version == r.Version):
			pull = append(pull, r.Key)
		}
		return true
	})
	for _, kv := range m.Versions {
		if !seen[string(kv.Key)] && settled(kv.Version, m.Horizon) {
			pull = append(pull, kv.Key)
		}
	}
	if len(push) > 0 || len(pull) > 0 {
		n.compareSoon()
	}
	for len(push) > 0 {
		k := min(len(push), 256)
		n.Stats.Pushed += k
		n.Stats.PushedBytes += recordsSize(push[:k])
		n.migrate(Message{Kind: KindPush, To: m.From, Records: push[:k]})
		push = push[k:]
	}
	if len(pull) > 0 {
		n.Stats.Pulled += len(pull)
		n.send(Message{Kind: KindPull, To: m.From, Keys: pull})
	}
}

// tickSync starts the next comparison (syncRound) when one is due, no data
// is streaming in or out, and the scan budget allows.
func (n *Node) tickSync() {
	// Compare again only once data has stopped flowing in and out: a
	// comparison in the middle of a stream finds it half done and asks for
	// the rest twice.
	n.expireRanges()
	for k, at := range n.streams.inbound {
		if n.now-at >= 10*n.cfg.SyncTicks {
			delete(n.streams.inbound, k) // the sender gave up, or is gone
		}
	}
	quiet := len(n.streams.sends) == 0 && len(n.streams.inbound) == 0 && len(n.migrations) == 0 && n.now-n.lastPushIn >= 20
	// A comparison reads whole ranges: the next waits until what the last
	// ones read is paid off at ScanBytesPerTick, unless the ring changed.
	n.scanDebt = max(0, n.scanDebt-n.cfg.ScanBytesPerTick)
	if n.now-n.lastSync >= n.cfg.SyncTicks && quiet && (n.scanDebt == 0 || fmtMembers(n.ring.Members()) != n.lastMembers) {
		n.lastSync = n.now
		n.syncRound()
	}
}

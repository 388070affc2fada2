// Range streams: a range a peer lacks entirely is sent as a stream of
// acknowledged chunks, within a window per peer.

package kv

import "slices"

// rangeStreams are the range streams a node sends and receives.
type rangeStreams struct {
	// sends are the range streams owed to peers, oldest first; a
	// stream stays until its last chunk is acknowledged. While any is
	// there, this node does not compare ranges again: the receiver is
	// still storing what the last comparison found missing, and a
	// comparison now would find it missing again and resend it.
	sends  []*rangeSend
	chunks map[uint64]*rangeSend // the stream of each chunk out
	window map[string]int64      // bytes of chunks out, by peer
	// inbound are the range streams coming in, with the tick of their
	// latest chunk. While any is, this node does not compare ranges: a
	// comparison would find the rest of the stream missing, and fetch
	// it a second time.
	inbound map[inboundStream]int
}

// chunkIn notes a chunk of a stream coming in (a KindPush with a range)
// at tick now; the last chunk ends the stream.
func (s *rangeStreams) chunkIn(m Message, now int) {
	k := inboundStream{m.From, m.Lo}
	if m.Found {
		delete(s.inbound, k)
		return
	}
	if s.inbound == nil {
		s.inbound = map[inboundStream]int{}
	}
	s.inbound[k] = now
}

// rangeSend is a whole range of records owed to a peer that holds none of
// it (a node that just joined, or an empty replica). It is read and sent
// as a stream of chunks of about rangeChunk bytes, each acknowledged once
// the peer has stored it. At most rangeWindow bytes per peer are out at a
// time: a sender reads no faster than its peer stores, and a stream holds
// a few MiB in memory, not its whole range.
type rangeSend struct {
	to     string
	lo, hi uint32
	next   uint32               // the next chunk starts after this position
	done   bool                 // the last chunk has been read
	out    map[uint64]chunkSent // chunks sent and not yet acknowledged, by ID
}

// inboundStream names a range stream coming in: its sender and the start
// of its range (the end grows when the sender adds the next bucket).
type inboundStream struct {
	from string
	lo   uint32
}

type chunkSent struct {
	at   int // the tick it left
	size int64
}

const (
	// rangeChunk is the size of one chunk (KindPush) of a range send.
	rangeChunk = 1 << 20
	// rangeWindow bounds the bytes of range chunks unacknowledged by one
	// peer. It spans a few of the receiver's rounds (which take up to
	// 8 MiB of pushes each), so that the receiver never waits for data.
	rangeWindow = 16 << 20
)

// queueRange queues the range (lo, hi] for to; pumpRanges sends it.
func (n *Node) queueRange(to string, lo, hi uint32) {
	if lo == hi {
		// The whole ring, as two halves: a stream resumes after the last
		// position it sent, which needs a range with a start.
		n.queueRange(to, lo, lo+1<<31)
		n.queueRange(to, lo+1<<31, lo)
		return
	}
	for _, rs := range n.streams.sends {
		if rs.to != to || rs.done {
			continue
		}
		if rs.lo == lo && rs.hi == hi && rs.next == lo {
			return // queued and not started: it will send everything
		}
		if rs.hi == lo && hi != rs.lo {
			// The range right after one still being read (the next
			// bucket of a comparison): one stream reads both, in
			// chunks of full size.
			rs.hi = hi
			return
		}
	}
	n.streams.sends = append(n.streams.sends, &rangeSend{to: to, lo: lo, hi: hi, next: lo})
}

// pumpRanges sends the next chunks of the range streams, oldest stream
// first, while their peers' windows and the migration budget allow, and
// drops the streams that are complete.
func (n *Node) pumpRanges() {
	for _, rs := range n.streams.sends {
		for !rs.done && n.streams.window[rs.to] < rangeWindow && n.migBudget > 0 {
			n.migBudget -= n.sendChunk(rs)
		}
	}
	n.streams.sends = slices.DeleteFunc(n.streams.sends, func(rs *rangeSend) bool { return rs.done && len(rs.out) == 0 })
}

// sendChunk reads and sends the next chunk of rs, and returns its bytes.
// A chunk ends only where the position changes, so the next one starts
// after a position with nothing left in it.
func (n *Node) sendChunk(rs *rangeSend) int64 {
	var chunk []Record
	var size int64
	last, more := rs.next, false
	n.st.Scan(rs.next, rs.hi, func(pos uint32, r Record) bool {
		if size >= rangeChunk && pos != last {
			more = true
			return false
		}
		chunk = append(chunk, r)
		size += int64(len(r.Key) + len(r.Value) + 16)
		last = pos
		return true
	})
	rs.next, rs.done = last, !more
	if len(chunk) == 0 {
		return 0
	}
	n.Stats.Pushed += len(chunk)
	n.Stats.PushedBytes += size
	n.nextID++
	id := n.nextID
	if rs.out == nil {
		rs.out = map[uint64]chunkSent{}
	}
	if n.streams.chunks == nil {
		n.streams.chunks, n.streams.window = map[uint64]*rangeSend{}, map[string]int64{}
	}
	rs.out[id] = chunkSent{at: n.now, size: size}
	n.streams.chunks[id] = rs
	n.streams.window[rs.to] += size
	// The chunk names its stream (Lo, Hi) and whether it is the last
	// (Found), so that the receiver holds off comparing ranges until the
	// stream is in.
	n.send(Message{Kind: KindPush, To: rs.to, ID: id, Records: chunk, Lo: rs.lo, Hi: rs.hi, Found: rs.done})
	return size
}

// onChunkAck takes the acknowledgement of a range chunk, if id is one,
// and sends what the window then allows.
func (n *Node) onChunkAck(id uint64) bool {
	rs, ok := n.streams.chunks[id]
	if !ok {
		return false
	}
	delete(n.streams.chunks, id)
	n.streams.window[rs.to] -= rs.out[id].size
	delete(rs.out, id)
	n.pumpRanges()
	return true
}

// expireRanges gives up the streams with a chunk unacknowledged for
// 10 × SyncTicks (the peer is gone, or the chunk was lost): the next
// comparison finds what is missing.
func (n *Node) expireRanges() {
	n.streams.sends = slices.DeleteFunc(n.streams.sends, func(rs *rangeSend) bool {
		for _, c := range rs.out {
			if n.now-c.at >= 10*n.cfg.SyncTicks {
				for id, c := range rs.out {
					delete(n.streams.chunks, id)
					n.streams.window[rs.to] -= c.size
				}
				n.Stats.RangesAbandoned++
				return true
			}
		}
		return false
	})
}

package kv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// streamPair is a sender and a receiver of range streams, each with its
// own storage, and the pushes between them.
type streamPair struct {
	a, b     *Node
	src, dst *MemStorage
	out      map[uint64]int64 // chunks a sent and b has not acknowledged
	maxOut   int64
	chunks   int
	// sawInbound: the receiver knew a stream was coming in
	sawInbound bool
}

func newStreamPair(t *testing.T, keys int) *streamPair {
	return newStreamPairOn(t, keys, "md5-low32", 1<<31)
}

func newStreamPairOn(t *testing.T, keys int, partitioner string, token uint32) *streamPair {
	pos := Partitioners[partitioner]
	ring := NewStaticRing(pos, []Member{{Addr: "a", Token: 1}, {Addr: "b", Token: token}})
	p := &streamPair{src: NewMemStorage(pos), dst: NewMemStorage(pos), out: map[uint64]int64{}}
	rng := rand.New(rand.NewPCG(1, 2))
	var ops []PersistOp
	for i := range keys {
		v := make([]byte, 1000+rng.IntN(8000))
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		rec := Record{Key: fmt.Appendf(nil, "k%06d", i), Value: v, Version: uint64(i + 1)}
		ops = append(ops, PersistOp{Put: &rec})
	}
	p.src.Apply(ops)
	clock := func() uint64 { return 1 << 40 }
	cfg := Config{N: 2, W: 1, R: 1}
	p.a = NewNode(cfg, "a", ring, p.src, clock, nil)
	p.b = NewNode(cfg, "b", ring, p.dst, clock, nil)
	p.a.Tick() // fills the migration budget
	return p
}

// run moves messages until the stream is quiet. drop, if set, decides
// which acknowledgements are lost.
func (p *streamPair) run(t *testing.T, drop func(id uint64) bool) {
	t.Helper()
	for range 100000 {
		rd := p.a.Ready()
		p.src.Apply(rd.Persist)
		var pushes []Message
		for _, m := range rd.Messages {
			if m.Kind == KindPush && m.To == "b" {
				p.out[m.ID] = recordsSize(m.Records)
				p.chunks++
				pushes = append(pushes, m)
			}
		}
		var sum int64
		for _, s := range p.out {
			sum += s
		}
		p.maxOut = max(p.maxOut, sum)
		if len(pushes) == 0 {
			return
		}
		for _, m := range pushes {
			p.b.Step(m)
		}
		if len(p.b.streams.inbound) > 0 {
			p.sawInbound = true
		}
		rdb := p.b.Ready()
		p.dst.Apply(rdb.Persist)
		for _, m := range rdb.Messages {
			if m.Kind != KindPushAck {
				continue
			}
			if drop != nil && drop(m.ID) {
				continue
			}
			delete(p.out, m.ID)
			p.a.Step(m)
		}
	}
	t.Fatal("the stream did not end")
}

// check verifies that b holds exactly a's records in the ranges sent.
func (p *streamPair) check(t *testing.T, in func(pos uint32) bool) {
	t.Helper()
	want := 0
	p.src.Scan(0, 0, func(pos uint32, r Record) bool {
		got, ok, _ := p.dst.Get(r.Key)
		switch {
		case in(pos) && !ok:
			t.Fatalf("%s (position %d) did not arrive", r.Key, pos)
		case in(pos) && !bytes.Equal(got.Value, r.Value):
			t.Fatalf("%s arrived with another value", r.Key)
		case !in(pos) && ok:
			t.Fatalf("%s (position %d) arrived but is outside the ranges sent", r.Key, pos)
		}
		if in(pos) {
			want++
		}
		return true
	})
	if p.dst.Len() != want {
		t.Fatalf("the receiver holds %d records, want %d", p.dst.Len(), want)
	}
	if p.dst.Miscounts != 0 {
		t.Fatalf("%d miscounted writes", p.dst.Miscounts)
	}
}

// TestRangeStreams sends ranges (the whole ring, a range that wraps, and
// 64 adjacent buckets) as streams, and checks that every record of them
// and no other arrives intact, that no more than the window is ever
// unacknowledged, and that adjacent buckets travel in full chunks.
func TestRangeStreams(t *testing.T) {
	const keys = 12000 // about 60 MB
	limit := int64(rangeWindow + rangeChunk + 10000)
	t.Run("whole ring", func(t *testing.T) {
		p := newStreamPair(t, keys)
		p.a.queueRange("b", 12345, 12345)
		p.a.pumpRanges()
		p.run(t, nil)
		p.check(t, func(uint32) bool { return true })
		if p.maxOut > limit {
			t.Fatalf("%d bytes were unacknowledged at once; the window is %d", p.maxOut, rangeWindow)
		}
		if len(p.a.streams.sends) != 0 || len(p.a.streams.chunks) != 0 {
			t.Fatalf("%d streams and %d chunks left after the end", len(p.a.streams.sends), len(p.a.streams.chunks))
		}
		// The receiver held off comparing while the streams came in, and
		// knows they ended.
		if !p.sawInbound || len(p.b.streams.inbound) != 0 {
			t.Fatalf("receiver's inbound streams: seen %v, %d left at the end", p.sawInbound, len(p.b.streams.inbound))
		}
	})
	t.Run("shared positions", func(t *testing.T) {
		// 12,000 keys on 10,000 positions: chunks end between keys of
		// one position only if a resumed stream skips or repeats them.
		p := newStreamPairOn(t, keys, "md5-mod10000", 5000)
		p.a.queueRange("b", 7000, 6999)
		p.a.pumpRanges()
		p.run(t, nil)
		p.check(t, func(pos uint32) bool { return inHalfOpen(pos, 7000, 6999) })
	})
	t.Run("wraps", func(t *testing.T) {
		p := newStreamPair(t, keys)
		lo, hi := uint32(3<<30), uint32(1<<30)
		p.a.queueRange("b", lo, hi)
		p.a.pumpRanges()
		p.run(t, nil)
		p.check(t, func(pos uint32) bool { return inHalfOpen(pos, lo, hi) })
	})
	t.Run("adjacent buckets", func(t *testing.T) {
		p := newStreamPair(t, keys)
		lo, hi := uint32(1<<30), uint32(3<<30)
		for i := range 64 {
			blo, bhi := bucketRange(i, lo, hi, 64)
			p.a.queueRange("b", blo, bhi)
		}
		p.a.pumpRanges()
		p.run(t, nil)
		p.check(t, func(pos uint32) bool { return inHalfOpen(pos, lo, hi) })
		var size int64
		p.src.Scan(lo, hi, func(_ uint32, r Record) bool { size += recordsSize([]Record{r}); return true })
		if full := int(size/rangeChunk) + 1; p.chunks > full+1 {
			t.Fatalf("%d bytes went in %d chunks; %d would carry them", size, p.chunks, full)
		}
	})
	t.Run("lost acknowledgement", func(t *testing.T) {
		p := newStreamPair(t, keys)
		p.a.queueRange("b", 12345, 12345)
		p.a.pumpRanges()
		var lost uint64
		p.run(t, func(id uint64) bool {
			if lost == 0 {
				lost = id
			}
			return id == lost
		})
		// The window stays open by the chunk that was not acknowledged,
		// and the stream goes on until the rest is acknowledged.
		if len(p.a.streams.sends) == 0 {
			t.Fatal("the stream ended with a chunk unacknowledged")
		}
		for range 10 * p.a.cfg.SyncTicks {
			p.a.Tick()
		}
		if len(p.a.streams.sends) != 0 || len(p.a.streams.chunks) != 0 || p.a.streams.window["b"] != 0 {
			t.Fatalf("after the time-out: %d streams, %d chunks, %d bytes out", len(p.a.streams.sends), len(p.a.streams.chunks), p.a.streams.window["b"])
		}
		if p.a.Stats.RangesAbandoned != 1 {
			t.Fatalf("%d streams abandoned, want 1", p.a.Stats.RangesAbandoned)
		}
		// The records all arrived: only the acknowledgement was lost.
		p.check(t, func(uint32) bool { return true })
	})
}

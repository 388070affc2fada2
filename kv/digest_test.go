package kv

import (
	"fmt"
	"slices"
	"testing"
)

// TestDigestOutsideRound checks that the digest a driver reads outside a
// node's round (Digest, StepDigestResp) is the node's own, and that a
// node stepping a peer's answer with it sends what stepping the answer
// alone would.
func TestDigestOutsideRound(t *testing.T) {
	pos := Partitioners["md5-low32"]
	ring := NewStaticRing(pos, []Member{{Addr: "a", Token: 1 << 30}, {Addr: "b", Token: 2 << 30}, {Addr: "c", Token: 3 << 30}})
	clock := func() uint64 { return 1 << 40 }
	mine, theirs := NewMemStorage(pos), NewMemStorage(pos)
	var ops, other []PersistOp
	for i := range 500 {
		r := Record{Key: fmt.Appendf(nil, "k%04d", i), Value: []byte("v"), Version: uint64(1000 + i)}
		ops = append(ops, PersistOp{Put: &r})
		if i%7 != 0 { // the peer lacks some, and holds others older
			o := r
			if i%5 == 0 {
				o.Version--
			}
			other = append(other, PersistOp{Put: &o})
		}
	}
	mine.Apply(ops)
	theirs.Apply(other)
	const lo, hi, b, h = 1 << 30, 2 << 30, 64, 1 << 20
	for _, horizon := range []uint64{h, 1300} {
		n := NewNode(Config{N: 3, W: 2, R: 2}, "a", ring, mine, clock, nil)
		if got, want := Digest(mine, lo, hi, b, horizon), n.digest(lo, hi, b, horizon); !slices.Equal(got, want) {
			t.Fatalf("horizon %d: Digest %v, the node's digest %v", horizon, got, want)
		}
		resp := DigestReply("b", Message{Kind: KindDigest, From: "a", Lo: lo, Hi: hi, Buckets: b, Horizon: horizon}, Digest(theirs, lo, hi, b, horizon))
		if resp.To != "a" || resp.From != "b" || resp.Kind != KindDigestResp {
			t.Fatalf("reply %+v", resp)
		}
		n1 := NewNode(Config{N: 3, W: 2, R: 2}, "a", ring, mine, clock, nil)
		n1.Step(resp)
		n2 := NewNode(Config{N: 3, W: 2, R: 2}, "a", ring, mine, clock, nil)
		n2.StepDigestResp(resp, Digest(mine, lo, hi, b, horizon))
		r1, r2 := n1.Ready(), n2.Ready()
		if len(r1.Messages) == 0 {
			t.Fatalf("horizon %d: the digests differ, and the node sent nothing", horizon)
		}
		if fmt.Sprint(r1.Messages) != fmt.Sprint(r2.Messages) {
			t.Fatalf("horizon %d: stepped alone the node sent %v; with its digest read outside the round, %v", horizon, r1.Messages, r2.Messages)
		}
	}
}

package kv

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestVersionCache replays the same random writes, deletes and hand-off
// drops on a node with no version cache and on nodes with small ones, so
// that eviction runs all the time. Every round must persist the same ops,
// with the same counts of what each key held, and storage must end up the
// same.
func TestVersionCache(t *testing.T) {
	pos := Partitioners["md5-low32"]
	ring := NewStaticRing(pos, []Member{{Addr: "a", Token: 1}})
	clock := func() uint64 { return 1 << 40 }
	sizes := []int{-1, 1, 7, 64, 0}
	nodes := make([]*Node, len(sizes))
	st := make([]*MemStorage, len(sizes))
	for i, size := range sizes {
		st[i] = NewMemStorage(pos)
		nodes[i] = NewNode(Config{N: 1, W: 1, R: 1, VersionCache: size}, "a", ring, st[i], clock, nil)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 400 {
		var msgs []Message
		var drops []Record
		for range rng.IntN(20) {
			k := fmt.Appendf(nil, "k%d", rng.IntN(40))
			r := Record{Key: k, Version: uint64(rng.IntN(60)) << 8}
			switch rng.IntN(6) {
			case 0:
				r.Tomb = true
			case 1:
				drops = append(drops, r) // dropped below if held in this version
			default:
				r.Value = fmt.Appendf(nil, "v%d-%d", round, rng.IntN(1000))
			}
			msgs = append(msgs, Message{Kind: KindPut, From: "b", Rec: r})
		}
		var want []PersistOp
		for i, n := range nodes {
			for _, m := range msgs {
				n.Step(m)
			}
			for _, d := range drops {
				if cur, ok := n.local(d.Key); ok {
					n.forget(cur)
				}
			}
			rd := n.Ready()
			st[i].Apply(rd.Persist)
			if i == 0 {
				want = clonePersist(rd.Persist)
				continue
			}
			if got := clonePersist(rd.Persist); !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d: cache of %d persisted\n%+v\nwithout cache\n%+v", round, sizes[i], got, want)
			}
			if c := n.vcache.len(); sizes[i] > 0 && c > sizes[i] {
				t.Fatalf("round %d: cache of %d holds %d versions", round, sizes[i], c)
			}
		}
	}
	for i := 1; i < len(nodes); i++ {
		if !reflect.DeepEqual(st[i].recs, st[0].recs) {
			t.Fatalf("storage with a cache of %d differs from storage without one", sizes[i])
		}
	}
	if nodes[4].vcache.len() == 0 {
		t.Fatal("the default cache holds nothing")
	}
	if h := nodes[0].Stats.VersionHits; h != 0 {
		t.Fatalf("the node without a cache counts %d cache hits", h)
	}
	if st := nodes[4].Stats; st.VersionHits == 0 || st.VersionMisses == 0 {
		t.Fatalf("the default cache counts %d hits, %d misses; want both", st.VersionHits, st.VersionMisses)
	}
	nodes[4].ForgetVersions()
	if nodes[4].vcache.len() != 0 {
		t.Fatal("ForgetVersions left versions")
	}
}

// clonePersist copies what a round persisted into comparable values.
func clonePersist(ops []PersistOp) []PersistOp {
	out := make([]PersistOp, len(ops))
	for i, op := range ops {
		out[i] = op
		if op.Put != nil {
			r := *op.Put
			out[i].Put = &r
		}
	}
	return out
}

// TestSettleHorizon: anti-entropy leaves alone records written after its
// horizon, as writes still on their way to a replica are, and sends
// those written before it that a replica lacks. Once the newer records
// are older than the horizon, a comparison brings them over too.
func TestSettleHorizon(t *testing.T) {
	pos := Partitioners["md5-low32"]
	ring := NewStaticRing(pos, []Member{{Addr: "a", Token: 1 << 30}, {Addr: "b", Token: 3 << 30}})
	now := uint64(1 << 40)
	clock := func() uint64 { return now }
	st := map[string]*MemStorage{"a": NewMemStorage(pos), "b": NewMemStorage(pos)}
	nodes := map[string]*Node{}
	for a, s := range st {
		nodes[a] = NewNode(Config{N: 2, W: 1, R: 1}, a, ring, s, clock, nil)
	}
	var old, recent, both []PersistOp
	for i := range 200 {
		r := Record{Key: fmt.Appendf(nil, "k%03d", i), Value: []byte("old"), Version: now - 1<<30}
		old = append(old, PersistOp{Put: &r})
		if i >= 5 {
			both = append(both, PersistOp{Put: &r}) // b lacks the first five
		}
		if i >= 100 && i < 130 {
			n := Record{Key: r.Key, Value: []byte("new"), Version: now + 1<<30} // in flight to b
			recent = append(recent, PersistOp{Put: &n})
		}
	}
	st["a"].Apply(old)
	st["a"].Apply(recent)
	st["b"].Apply(both)
	run := func() (pushed int) {
		for range 300 {
			for _, name := range []string{"a", "b"} {
				n := nodes[name]
				n.Tick()
				rd := n.Ready()
				st[name].Apply(rd.Persist)
				for _, m := range rd.Messages {
					if m.Kind == KindPush {
						pushed += len(m.Records)
					}
					nodes[m.To].Step(m)
				}
			}
		}
		return pushed
	}
	if pushed := run(); pushed != 5 {
		t.Fatalf("before the horizon passed them, %d records were pushed, want the 5 settled ones b lacked", pushed)
	}
	if got, _, _ := st["b"].Get([]byte("k000")); string(got.Value) != "old" {
		t.Fatalf("b holds k000 = %q, want the settled record", got.Value)
	}
	if got, _, _ := st["b"].Get([]byte("k100")); string(got.Value) != "old" {
		t.Fatalf("b holds k100 = %q: a record newer than the horizon moved", got.Value)
	}
	now += 1 << 31 // the writes are long done
	if pushed := run(); pushed < 30 {
		t.Fatalf("after the horizon passed them, %d records were pushed, want at least the 30 newer ones", pushed)
	}
	for _, op := range recent {
		if got, _, _ := st["b"].Get(op.Put.Key); got.Version != op.Put.Version {
			t.Fatalf("b holds %s at version %d, want %d", op.Put.Key, got.Version, op.Put.Version)
		}
	}
}

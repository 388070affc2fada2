package kv

import (
	"fmt"
	"testing"
)

// TestHandOffOffers hands off a draining node's records to three targets:
// one holds them all, one none, one all of them but half in older versions. Each
// target must be sent exactly the records it lacks, end up with every
// record, and the drained node must drop its copies.
func TestHandOffOffers(t *testing.T) {
	pos := Partitioners["md5-low32"]
	ring := NewStaticRing(pos, []Member{{Addr: "b", Token: 1 << 30}, {Addr: "c", Token: 2 << 30}, {Addr: "d", Token: 3 << 30}})
	st := map[string]*MemStorage{}
	nodes := map[string]*Node{}
	clock := func() uint64 { return 1 << 40 }
	for _, a := range []string{"a", "b", "c", "d"} {
		st[a] = NewMemStorage(pos)
		nodes[a] = NewNode(Config{N: 3, W: 2, R: 2}, a, ring, st[a], clock, nil)
	}
	const keys = 1000
	var all, older []PersistOp
	for i := range keys {
		r := Record{Key: fmt.Appendf(nil, "k%04d", i), Value: fmt.Appendf(nil, "value %d", i), Version: uint64(1000 + i)}
		all = append(all, PersistOp{Put: &r})
		if i%2 == 0 {
			o := Record{Key: r.Key, Value: []byte("old"), Version: uint64(i + 1)}
			older = append(older, PersistOp{Put: &o})
		} else {
			older = append(older, PersistOp{Put: &r})
		}
	}
	st["a"].Apply(all)
	st["b"].Apply(all)
	st["d"].Apply(older)
	nodes["a"].handOff()
	pushed := map[string]int{}
	for range 1000 {
		moved := false
		for _, name := range []string{"a", "b", "c", "d"} {
			n := nodes[name]
			n.Tick() // lets hand-off pushes leave (Node.migrate)
			rd := n.Ready()
			st[name].Apply(rd.Persist)
			for _, m := range rd.Messages {
				to := nodes[m.To]
				if to == nil {
					continue
				}
				if m.Kind == KindPush && name == "a" {
					pushed[m.To] += len(m.Records)
				}
				if m.Kind == KindDigest || m.Kind == KindDigestResp || m.Kind == KindKeys || m.Kind == KindKeysResp || m.Kind == KindPull || m.Kind == KindPullRange {
					continue // anti-entropy is not under test
				}
				to.Step(m)
				moved = true
			}
		}
		if !moved && st["a"].Len() == 0 {
			break
		}
	}
	if want := map[string]int{"b": 0, "c": keys, "d": keys / 2}; pushed["b"] != want["b"] || pushed["c"] != want["c"] || pushed["d"] != want["d"] {
		t.Fatalf("records pushed per target: %v, want %v", pushed, want)
	}
	if st["a"].Len() != 0 {
		t.Fatalf("the drained node still holds %d records", st["a"].Len())
	}
	for _, target := range []string{"b", "c", "d"} {
		for _, op := range all {
			r, ok, _ := st[target].Get(op.Put.Key)
			if !ok || r.Version != op.Put.Version || string(r.Value) != string(op.Put.Value) {
				t.Fatalf("%s holds %s as %+v, want version %d", target, op.Put.Key, r, op.Put.Version)
			}
		}
	}
}

package kv

import (
	"testing"
)

// TestWriteBackRace checks a read that writes back a version, then hears
// of a newer one from a replica that answers late (a write raced it):
// it writes the newer one back too and answers it, instead of waiting
// for a quorum that cannot form and failing. An acknowledgement of the
// first write-back must not count as holding the newer version. The ring
// just grew from two nodes to three, so the quorum must hold in both
// views: in the old one, a and b must both hold what the read answers.
func TestWriteBackRace(t *testing.T) {
	pos := Partitioners["md5-low32"]
	two := NewStaticRing(pos, []Member{{Addr: "a", Token: 1 << 30}, {Addr: "b", Token: 2 << 30}})
	three := abcRing()
	tr := newTrio(three)
	a := tr.nodes["a"]
	a.SetRing(two)
	a.SetRing(three)
	key := []byte("k")
	tr.store(Record{Key: key, Value: []byte("v1"), Version: 100}, "a")
	v3 := Record{Key: key, Value: []byte("v3"), Version: 300}
	tr.store(v3, "c")

	// b does not hold the key, so the read asks c too, and writes v1
	// back to b. b's acknowledgements are held until c has answered v3.
	var held []Message
	holdB := func(m Message) bool {
		if m.From == "b" && m.Kind == KindPutAck {
			held = append(held, m)
			return false
		}
		return true
	}
	a.Step(Message{Kind: KindClientGet, From: "client", ID: 1, Rec: Record{Key: key}})
	if answers := tr.deliver(holdB); len(answers) != 0 || len(held) == 0 {
		t.Fatalf("answered %+v with b's acknowledgements held (%d)", answers, len(held))
	}
	for _, m := range held {
		a.Step(m)
	}
	answers := tr.deliver(nil)
	if len(answers) != 1 || answers[0].Err != "" || string(answers[0].Rec.Value) != "v3" {
		t.Fatalf("the read answered %+v, want v3", answers)
	}
	for _, x := range trioNames {
		if r, ok, _ := tr.st[x].Get(key); !ok || r.Version != v3.Version {
			t.Errorf("%s holds %+v after the read, want v3", x, r)
		}
	}
	if len(a.ops) != 0 {
		t.Errorf("%d ops left", len(a.ops))
	}
}

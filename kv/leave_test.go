package kv

import (
	"fmt"
	"testing"
)

// TestLeavingNodeIsNoQuorum is the leave window of issue 22: b drains out
// of the ring (it counts itself out, SetLeaving) while a still routes to
// it, and d is down. A write a acknowledges must then be held by W nodes
// other than b, which may exit any moment after it answers, before it
// hands off what it stored last. A write whose only other holders are b
// and the down d must fail (outcome unknown), not be acknowledged with a
// single lasting copy.
func TestLeavingNodeIsNoQuorum(t *testing.T) {
	pos := Partitioners["md5-low32"]
	all := []Member{{"a", 1 << 30}, {"b", 2 << 30}, {"c", 3 << 30}, {"d", 4<<30 - 1}}
	full := NewStaticRing(pos, all)
	withoutB := NewStaticRing(pos, []Member{all[0], all[2], all[3]})
	clock := func() uint64 { return 1 << 40 }
	nodes := map[string]*Node{}
	st := map[string]*MemStorage{}
	for _, m := range all {
		st[m.Addr] = NewMemStorage(pos)
		nodes[m.Addr] = NewNode(Config{N: 3, W: 2, R: 2}, m.Addr, full, st[m.Addr], clock, nil)
	}
	nodes["b"].SetLeaving(true)
	nodes["b"].SetRing(withoutB)
	down := map[string]bool{"d": true}
	var answers []Message
	deliver := func() {
		for moved := true; moved; {
			moved = false
			for _, x := range []string{"a", "b", "c", "d"} {
				if down[x] {
					continue
				}
				rd := nodes[x].Ready()
				st[x].Apply(rd.Persist)
				for _, m := range rd.Messages {
					switch {
					case m.To == "client":
						answers = append(answers, m)
					case down[m.To]:
					default:
						nodes[m.To].Step(m)
						moved = true
					}
				}
			}
		}
	}
	acked, risky := 0, 0
	for i := range 64 {
		key := fmt.Sprintf("key-%d", i)
		pref := full.Preference(pos([]byte(key)), 3)
		if contains(pref, "b") && contains(pref, "d") {
			risky++
		}
		answers = answers[:0]
		nodes["a"].Step(Message{Kind: KindClientPut, From: "client", ID: uint64(i + 1), Rec: Record{Key: []byte(key), Value: []byte("v")}})
		deliver()
		for range 250 { // past TimeoutTicks: every write is answered
			if len(answers) > 0 {
				break
			}
			for _, x := range []string{"a", "b", "c"} {
				nodes[x].Tick()
			}
			deliver()
		}
		if len(answers) != 1 {
			t.Fatalf("put %s: %d answers", key, len(answers))
		}
		if answers[0].Err != "" {
			continue
		}
		acked++
		copies := 0
		for _, x := range []string{"a", "c", "d"} {
			if _, ok, _ := st[x].Get([]byte(key)); ok {
				copies++
			}
		}
		if copies < 2 {
			t.Errorf("put %s (replicas %v) acknowledged with %d copies outside the leaving b: W=2 needs 2", key, pref, copies)
		}
	}
	if risky == 0 || acked == 0 {
		t.Fatalf("%d writes acknowledged, %d with b and d both replicas: the test exercised nothing", acked, risky)
	}
}

func contains(s []string, a string) bool {
	for _, x := range s {
		if x == a {
			return true
		}
	}
	return false
}

package kv

import (
	"fmt"
	"slices"
	"testing"
)

// TestJoinerLearnsEveryMembersViews: f joins a ring whose member e still
// runs with the view of two changes before (it missed d's join and f's).
// Until e has told f its view, f coordinates nothing: a read through f
// could meet quorums in f's own views only, which e's writes need not
// reach. Once e answers, f keeps e's view among its own and answers.
func TestJoinerLearnsEveryMembersViews(t *testing.T) {
	vn, oldRing, _ := joinLaggingF()
	cut := vn.nodes["e"]
	delete(vn.nodes, "e") // e is cut off for a while: nothing reaches it
	var answers []Message
	vn.client = func(m Message) { answers = append(answers, m) }
	vn.nodes["f"].Step(Message{Kind: KindClientGet, From: "client", ID: 1, Rec: Record{Key: []byte("k")}})
	vn.tick(50)
	if len(answers) != 0 {
		t.Fatalf("f answered %+v before e told it the view e runs with", answers[0])
	}
	if vn.nodes["f"].Stats.Held != 1 {
		t.Errorf("f holds %d requests, want 1", vn.nodes["f"].Stats.Held)
	}
	vn.nodes["e"] = cut
	vn.tick(50)
	if len(answers) != 1 || answers[0].Err != "" {
		t.Fatalf("once e could answer, f answered %+v; want a read", answers)
	}
	if !vn.keeps("f", oldRing) {
		t.Errorf("f does not keep the view e runs with")
	}
}

// TestJoinerTakesSilentMemberForDown: a member from which nothing comes
// (crashed) does not keep a joining node from coordinating for longer than
// TimeoutTicks.
func TestJoinerTakesSilentMemberForDown(t *testing.T) {
	vn, _, _ := joinLaggingF()
	delete(vn.nodes, "e")
	var answers []Message
	vn.client = func(m Message) { answers = append(answers, m) }
	vn.nodes["f"].Step(Message{Kind: KindClientGet, From: "client", ID: 1, Rec: Record{Key: []byte("k")}})
	timeout := Config{N: 3, W: 2, R: 2}.withDefaults().TimeoutTicks
	vn.tick(timeout - 10)
	if len(answers) != 0 {
		t.Fatalf("f answered %+v before e had been silent for TimeoutTicks", answers[0])
	}
	vn.tick(20)
	if len(answers) != 1 || answers[0].Err != "" {
		t.Fatalf("with e silent for TimeoutTicks, f answered %+v; want a read", answers)
	}
}

// joinLaggingF is joinLaggingE, then f joins: a, b, c and d learn of it,
// and f starts with the newest ring; e still runs with the oldest.
func joinLaggingF() (vn *viewNet, oldRing, newRing *StaticRing) {
	vn, oldRing, midRing := joinLaggingE()
	newRing = NewStaticRing(vn.pos, append(slices.Clone(midRing.Members()), Member{"f", 3<<30 + 5}))
	for _, x := range []string{"a", "b", "c", "d"} {
		vn.nodes[x].SetRing(newRing)
	}
	vn.restart("f", 3<<30+5, newRing)
	return vn, oldRing, newRing
}

// TestHandOffKeepsOlderViewsRecords: b holds a record that it replicates
// under the old view but not under the new one, while e still runs with
// the old view alone. b must keep it until e runs with the new view: e's
// reads meet their quorum among the old view's replicas only. Then b hands
// it off and drops it.
func TestHandOffKeepsOlderViewsRecords(t *testing.T) {
	vn, oldRing, newRing := joinLaggingE()
	var key []byte
	for i := 0; key == nil; i++ {
		k := []byte(fmt.Sprintf("k%d", i))
		pos := vn.pos(k)
		if slices.Contains(oldRing.Preference(pos, 3), "b") && !slices.Contains(newRing.Preference(pos, 3), "b") {
			key = k
		}
	}
	vn.nodes["e"].Step(Message{Kind: KindClientPut, From: "client", ID: 1, Rec: Record{Key: key, Value: []byte("v")}})
	for i := range 300 { // ten times HandOffTicks
		vn.tick(10)
		if _, ok, _ := vn.st["b"].Get(key); !ok {
			t.Fatalf("b dropped %q at tick %d; it replicates it under the view e still runs with", key, 10*i+10)
		}
	}
	vn.nodes["e"].SetRing(newRing)
	for range 100 {
		vn.tick(100)
		if _, ok, _ := vn.st["b"].Get(key); !ok {
			break
		}
	}
	if _, ok, _ := vn.st["b"].Get(key); ok {
		t.Errorf("b still holds %q 10,000 ticks after every member ran with the new view", key)
	}
	for _, a := range newRing.Preference(vn.pos(key), 3) {
		if _, ok, _ := vn.st[a].Get(key); !ok {
			t.Errorf("replica %s lacks %q", a, key)
		}
	}
}

package kv

import (
	"slices"
	"testing"
)

// viewNet runs nodes on a lossless network that delivers every message at
// once, ticking all of them together.
type viewNet struct {
	pos   func([]byte) uint32
	nodes map[string]*Node
	st    map[string]*MemStorage
	names []string
	// client, if set, receives the messages to addresses that are not
	// nodes.
	client func(Message)
	// drop, if set, keeps the messages it returns true for (sent by from)
	// from their destination.
	drop func(from string, m Message) bool
}

func newViewNet(ms []Member) *viewNet {
	vn := &viewNet{pos: Partitioners["md5-low32"], nodes: map[string]*Node{}, st: map[string]*MemStorage{}}
	ring := NewStaticRing(vn.pos, ms)
	for _, m := range ms {
		vn.names = append(vn.names, m.Addr)
		vn.st[m.Addr] = NewMemStorage(vn.pos)
		vn.nodes[m.Addr] = NewNode(Config{N: 3, W: 2, R: 2}, m.Addr, ring, vn.st[m.Addr], func() uint64 { return 1 << 40 }, nil)
	}
	return vn
}

// restart starts a over its storage as the store does: alone, then with
// ring.
func (vn *viewNet) restart(a string, token uint32, ring Ring) {
	if vn.st[a] == nil {
		vn.names = append(vn.names, a)
		vn.st[a] = NewMemStorage(vn.pos)
	}
	n := NewNode(Config{N: 3, W: 2, R: 2}, a, NewStaticRing(vn.pos, []Member{{a, token}}), vn.st[a], func() uint64 { return 1 << 40 }, nil)
	n.SetRing(ring)
	vn.nodes[a] = n
}

func (vn *viewNet) tick(k int) {
	for range k {
		for _, x := range vn.names {
			if n := vn.nodes[x]; n != nil {
				n.Tick()
			}
		}
		vn.deliver()
	}
}

// deliver runs rounds of every node, persisting what each asks and
// stepping what it sends into the destination (but what drop keeps),
// until nothing is left to deliver.
func (vn *viewNet) deliver() {
	for moved := true; moved; {
		moved = false
		for _, x := range vn.names {
			if vn.nodes[x] == nil {
				continue
			}
			rd := vn.nodes[x].Ready()
			vn.st[x].Apply(rd.Persist)
			for _, m := range rd.Messages {
				if vn.drop != nil && vn.drop(x, m) {
					continue
				}
				if n := vn.nodes[m.To]; n != nil {
					n.Step(m)
					moved = true
				} else if vn.client != nil && vn.st[m.To] == nil {
					vn.client(m)
				}
			}
		}
	}
}

func (vn *viewNet) keeps(a string, r Ring) bool {
	d := ringDigest(r)
	return slices.ContainsFunc(vn.nodes[a].prev, func(p prevView) bool { return p.digest == d })
}

// fourMembers is the ring a, b, c, e of the view tests.
func fourMembers() []Member {
	return []Member{{"a", 1 << 30}, {"b", 2 << 30}, {"c", 3 << 30}, {"e", 4<<30 - 1}}
}

// joinLaggingE runs a, b, c, e; d joins, and a, b, c learn of it while e
// still runs with the old ring.
func joinLaggingE() (vn *viewNet, oldRing, newRing *StaticRing) {
	old := fourMembers()
	vn = newViewNet(old)
	oldRing = NewStaticRing(vn.pos, old)
	newRing = NewStaticRing(vn.pos, append(slices.Clone(old), Member{"d", 1<<29 + 7}))
	vn.restart("d", 1<<29+7, newRing)
	for _, x := range []string{"a", "b", "c"} {
		vn.nodes[x].SetRing(newRing)
	}
	return vn, oldRing, newRing
}

// TestViewsWaitForEveryMember: while one member still runs with the old
// view (it has not learned of the join), the others keep the old view in
// force however long that takes; once it has the new one, every node
// retires the old one.
func TestViewsWaitForEveryMember(t *testing.T) {
	vn, oldRing, newRing := joinLaggingE()
	vn.tick(5000) // five times TransitionTicks
	for _, x := range []string{"a", "b", "c", "d"} {
		if !vn.keeps(x, oldRing) {
			all, settled, done := vn.nodes[x].Transition()
			t.Errorf("%s retired the old view while e still runs with it alone (all on the view %v, settled %v, done %v)", x, all, settled, done)
		}
	}
	vn.nodes["e"].SetRing(newRing)
	for i := 0; i < 100; i++ {
		vn.tick(100)
		retired := true
		for _, x := range vn.names {
			retired = retired && vn.nodes[x].Views() == 1
		}
		if retired {
			return
		}
	}
	for _, x := range vn.names {
		all, settled, done := vn.nodes[x].Transition()
		t.Errorf("%s: %d views 10,000 ticks after every member had the new one (all on the view %v, settled %v, done %v)", x, vn.nodes[x].Views(), all, settled, done)
	}
}

// TestRestartAdoptsOlderViews: a node that restarts in the middle of a
// transition knows only the ring it learns; it takes the older view the
// others still keep from their states, so its quorums meet theirs.
func TestRestartAdoptsOlderViews(t *testing.T) {
	vn, oldRing, newRing := joinLaggingE()
	vn.tick(10)
	vn.restart("b", 2<<30, newRing)
	if vn.keeps("b", oldRing) {
		t.Fatal("b kept the old view before hearing of it")
	}
	vn.tick(200)
	if !vn.keeps("b", oldRing) {
		t.Errorf("restarted b did not adopt the old view the others keep (%d views)", vn.nodes["b"].Views())
	}
}

// TestLeftSpreads: a node that restarts after a member announced its
// leave learns of the leave from the others' states, so the older views it
// adopts (or had) do not wait for the member that is gone.
func TestLeftSpreads(t *testing.T) {
	old := fourMembers()
	vn := newViewNet(old)
	oldRing := NewStaticRing(vn.pos, old)
	newRing := NewStaticRing(vn.pos, old[:3])
	for _, x := range []string{"a", "b", "c"} {
		vn.nodes[x].MemberLeft("e")
		vn.nodes[x].SetRing(newRing)
	}
	delete(vn.nodes, "e")
	vn.names = slices.DeleteFunc(vn.names, func(a string) bool { return a == "e" })
	vn.tick(10)
	vn.restart("b", 2<<30, newRing)
	vn.tick(200)
	if !vn.keeps("b", oldRing) {
		t.Fatalf("restarted b did not adopt the old view")
	}
	for _, p := range vn.nodes["b"].prev {
		if p.digest == ringDigest(oldRing) && !slices.Contains(p.gone, "e") {
			t.Errorf("restarted b's old view waits for e, which announced its leave (gone %v)", p.gone)
		}
	}
}

// TestViewsRetireUnderLoad: writes that never stop, through the older
// view's replicas too, do not keep a transition open. Each hand-off pass
// finds records written through the old view's replicas that the new view
// does not give the node, but those written after every member ran with
// the new view have a quorum in it already.
func TestViewsRetireUnderLoad(t *testing.T) {
	old := fourMembers()
	vn := newViewNet(old)
	newRing := NewStaticRing(vn.pos, append(slices.Clone(old), Member{"d", 1<<29 + 7}))
	vn.restart("d", 1<<29+7, newRing)
	for _, x := range []string{"a", "b", "c", "e"} {
		vn.nodes[x].SetRing(newRing)
	}
	id := uint64(0)
	for i := 0; i < 300; i++ {
		for k := range 64 {
			id++
			vn.nodes[vn.names[k%len(vn.names)]].Step(Message{Kind: KindClientPut, From: "client", ID: id,
				Rec: Record{Key: []byte{byte(k), 'k'}, Value: []byte{byte(i)}}})
		}
		vn.tick(100)
		retired := true
		for _, x := range vn.names {
			retired = retired && vn.nodes[x].Views() == 1
		}
		if retired {
			return
		}
	}
	for _, x := range vn.names {
		all, settled, done := vn.nodes[x].Transition()
		t.Errorf("%s: %d views after 30,000 ticks of writes (all on the view %v, settled %v, done %v; stray %v synced %v)", x, vn.nodes[x].Views(), all, settled, done, vn.nodes[x].views.stray, vn.nodes[x].views.synced)
	}
}

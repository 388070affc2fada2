package kv

// trio is three nodes, a, b and c, with memory storage, for tests that
// deliver their messages by hand.
type trio struct {
	nodes map[string]*Node
	st    map[string]*MemStorage
}

var trioNames = []string{"a", "b", "c"}

// abcRing is the ring of a, b and c, a quarter of the space apart.
func abcRing() *StaticRing {
	return NewStaticRing(Partitioners["md5-low32"], []Member{{Addr: "a", Token: 1 << 30}, {Addr: "b", Token: 2 << 30}, {Addr: "c", Token: 3 << 30}})
}

// newTrio starts a, b and c on ring with N=3, W=2, R=2 and a clock that
// stands still.
func newTrio(ring Ring) *trio {
	tr := &trio{nodes: map[string]*Node{}, st: map[string]*MemStorage{}}
	clock := func() uint64 { return 1 << 40 }
	for _, x := range trioNames {
		tr.st[x] = NewMemStorage(Partitioners["md5-low32"])
		tr.nodes[x] = NewNode(Config{N: 3, W: 2, R: 2}, x, ring, tr.st[x], clock, nil)
	}
	return tr
}

// store puts r in the storage of each node named.
func (tr *trio) store(r Record, names ...string) {
	for _, x := range names {
		tr.st[x].Apply([]PersistOp{{Put: &r}})
	}
}

// deliver runs rounds of a, b and c, persisting what each asks and
// stepping what it sends into the destination, until nothing is left to
// deliver. It returns the answers to "client". route, if not nil, sees
// every other message first and keeps it from its destination by
// returning false (the caller may step it later).
func (tr *trio) deliver(route func(Message) bool) (answers []Message) {
	for moved := true; moved; {
		moved = false
		for _, x := range trioNames {
			rd := tr.nodes[x].Ready()
			tr.st[x].Apply(rd.Persist)
			for _, m := range rd.Messages {
				switch {
				case m.To == "client":
					answers = append(answers, m)
				case route == nil || route(m):
					tr.nodes[m.To].Step(m)
					moved = true
				}
			}
		}
	}
	return answers
}

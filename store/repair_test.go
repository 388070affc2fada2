package store

import (
	"fmt"
	"io"
	"testing"

	"tide/chord"
)

// TestRepairDropsStrayCopies plants a copy of every file on a node outside
// its replica set, spread over every range of the ring, and checks that
// repair hands each off and drops it: a regression test for reusing one
// owner's replica set across a range this node owns.
func TestRepairDropsStrayCopies(t *testing.T) {
	nodes := startCluster(t, 4, 2)
	c := NewClient()
	defer c.Close()
	var names []string
	for i := range 60 {
		name := fmt.Sprintf("s-%d", i)
		names = append(names, name)
		upload(t, c, nodes[i%4], name, content(name, 64))
	}
	waitFor(t, "2 copies", func() bool {
		for _, name := range names {
			if copies(nodes, name) != 2 {
				return false
			}
		}
		return true
	})
	// Plant strays: give every node every file it does not hold.
	for _, n := range nodes {
		for _, name := range names {
			if _, ok, _ := n.eng.Get(name); ok {
				continue
			}
			var src *Node
			for _, o := range nodes {
				if _, ok, _ := o.eng.Get(name); ok {
					src = o
				}
			}
			// Straight into the engine, as a repair pass that copied it
			// there and had not dropped it yet would leave it.
			m, f, err := src.eng.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			w, err := n.eng.Create()
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(w, f)
			f.Close()
			if err != nil {
				w.Abort()
				t.Fatal(err)
			}
			if _, _, err := w.Commit(name, m.Version); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, "strays dropped", func() bool {
		for _, name := range names {
			if copies(nodes, name) != 2 {
				return false
			}
		}
		return true
	})
	refs := []chord.Ref{}
	for _, n := range nodes {
		refs = append(refs, n.ring.Self())
	}
	for _, name := range names {
		owner := chord.SuccessorAmong(refs, chord.KeyOf(name))
		for _, n := range nodes {
			if n.ring.Self() == owner {
				if _, ok, _ := n.eng.Get(name); !ok {
					t.Errorf("owner of %s lacks it", name)
				}
			}
		}
	}
}

func TestHalve(t *testing.T) {
	cases := []struct {
		tokens []uint32
		space  uint64
		want   uint32
	}{
		{[]uint32{3000, 8000}, 10000, 5500}, // gap 8000->3000 wraps: 5000; 3000->8000: 5000; first wins
		{[]uint32{1000, 2000}, 10000, 6500}, // the wrapping gap 2000->1000 (9000) is largest
		{[]uint32{0}, 1 << 32, 1 << 31},     // one node: the opposite point
		{[]uint32{100, 200, 9000}, 10000, 4600},
	}
	for _, c := range cases {
		if got := halve(c.tokens, c.space); got != c.want {
			t.Errorf("halve(%v, %d) = %d, want %d", c.tokens, c.space, got, c.want)
		}
	}
}

// Package sim is tide's deterministic simulation harness: seeded in-memory
// networks that lose messages, partition and crash nodes, driving the same
// protocol cores that run in production.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"tide/chord"
)

// ErrUnreachable is what a call to a crashed, partitioned or unlucky node
// returns: the simulated equivalent of a timeout.
var ErrUnreachable = errors.New("sim: node unreachable")

// ChordNet is a deterministic in-memory network of Chord nodes. Calls are
// synchronous and run on the caller's goroutine, so a run is a pure function
// of its seed.
type ChordNet struct {
	Rand *rand.Rand
	// DropRate is the probability that any single call is lost.
	DropRate float64
	// Successors is r for every node the network creates.
	Successors int

	nodes map[string]*chord.Node
	down  map[string]bool
	cut   map[[2]string]bool
	// Calls counts delivered calls by method.
	Calls map[string]int
}

// NewChordNet returns an empty network seeded with seed.
func NewChordNet(seed uint64) *ChordNet {
	return &ChordNet{
		Rand:  rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		nodes: map[string]*chord.Node{},
		down:  map[string]bool{},
		cut:   map[[2]string]bool{},
		Calls: map[string]int{},
	}
}

// Add creates a node with identifier id (a random one if id is 0). It is
// alone in its ring until it joins.
func (c *ChordNet) Add(id chord.ID) *chord.Node {
	for id == 0 || c.idTaken(id) {
		id = chord.ID(c.Rand.Uint32())
	}
	ref := chord.Ref{IP: fmt.Sprintf("10.0.%d.%d", id>>8&0xff, id&0xff), Port: int(id>>16) + 1, ID: id}
	n, err := chord.NewNode(chord.Config{Self: ref, Successors: c.Successors}, link{c, ref.Addr()})
	if err != nil {
		panic(err)
	}
	c.nodes[ref.Addr()] = n
	delete(c.down, ref.Addr())
	return n
}

func (c *ChordNet) idTaken(id chord.ID) bool {
	for _, n := range c.nodes {
		if n.Self().ID == id {
			return true
		}
	}
	return false
}

// Crash stops a node: it answers nothing and does no periodic work.
func (c *ChordNet) Crash(n *chord.Node) { c.down[n.Self().Addr()] = true }

// Restart brings a crashed node back with empty state, as after losing its
// disk, and rejoins it through via.
func (c *ChordNet) Restart(ctx context.Context, n *chord.Node, via *chord.Node) (*chord.Node, error) {
	fresh, err := chord.NewNode(n.Config(), link{c, n.Self().Addr()})
	if err != nil {
		return nil, err
	}
	c.nodes[n.Self().Addr()] = fresh
	delete(c.down, n.Self().Addr())
	return fresh, fresh.Join(ctx, via.Self())
}

// Remove takes a node out of the network altogether.
func (c *ChordNet) Remove(n *chord.Node) { delete(c.nodes, n.Self().Addr()) }

// Partition cuts the link between a and b in both directions; Heal restores
// every link.
func (c *ChordNet) Partition(a, b *chord.Node) {
	c.cut[[2]string{a.Self().Addr(), b.Self().Addr()}] = true
	c.cut[[2]string{b.Self().Addr(), a.Self().Addr()}] = true
}

// Heal restores every cut link.
func (c *ChordNet) Heal() { clear(c.cut) }

// Live returns the nodes that are up, sorted by identifier.
func (c *ChordNet) Live() []*chord.Node {
	var out []*chord.Node
	for addr, n := range c.nodes {
		if !c.down[addr] {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b *chord.Node) int { return cmpID(a.Self().ID, b.Self().ID) })
	return out
}

func cmpID(a, b chord.ID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Round ticks every live node once, in a random order.
func (c *ChordNet) Round(ctx context.Context) {
	live := c.Live()
	c.Rand.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	for _, n := range live {
		if !c.down[n.Self().Addr()] {
			n.Tick(ctx)
		}
	}
}

// TrueSuccessor is the brute-force answer to find_successor(id) over the
// live nodes.
func (c *ChordNet) TrueSuccessor(id chord.ID) chord.Ref {
	var refs []chord.Ref
	for _, n := range c.Live() {
		refs = append(refs, n.Self())
	}
	return chord.SuccessorAmong(refs, id)
}

// Converged reports whether every live node's successor and predecessor are
// the true ones, and explains the first discrepancy if not.
func (c *ChordNet) Converged() (bool, string) {
	live := c.Live()
	for i, n := range live {
		want := live[(i+1)%len(live)].Self()
		if got := n.Successor(0); got != want {
			return false, fmt.Sprintf("%s: successor %s, want %s", n.Self(), got, want)
		}
		if len(live) == 1 {
			continue
		}
		wantPred := live[(i+len(live)-1)%len(live)].Self()
		if got := n.Predecessor(); got != wantPred {
			return false, fmt.Sprintf("%s: predecessor %s, want %s", n.Self(), got, wantPred)
		}
	}
	return true, ""
}

// Stabilize runs rounds until the ring converges, up to max rounds.
func (c *ChordNet) Stabilize(ctx context.Context, max int) error {
	var why string
	for range max {
		var ok bool
		if ok, why = c.Converged(); ok {
			return nil
		}
		c.Round(ctx)
	}
	if ok, why2 := c.Converged(); ok {
		return nil
	} else {
		why = why2
	}
	return fmt.Errorf("ring did not converge in %d rounds: %s", max, why)
}

func (c *ChordNet) deliver(from, to, method string) (*chord.Node, error) {
	n, ok := c.nodes[to]
	if !ok || c.down[to] || c.down[from] || c.cut[[2]string{from, to}] {
		return nil, ErrUnreachable
	}
	if c.DropRate > 0 && c.Rand.Float64() < c.DropRate {
		return nil, ErrUnreachable
	}
	c.Calls[method]++
	return n, nil
}

// link is one node's view of the network: calls carry its address so that
// partitions and crashes apply to the sender too.
type link struct {
	c    *ChordNet
	from string
}

func (l link) FindSuccessor(ctx context.Context, to chord.Ref, id chord.ID) (chord.Ref, error) {
	n, err := l.c.deliver(l.from, to.Addr(), "find_successor")
	if err != nil {
		return chord.Ref{}, err
	}
	return n.FindSuccessor(ctx, id)
}

func (l link) State(ctx context.Context, to, from chord.Ref) (chord.Ref, []chord.Ref, error) {
	n, err := l.c.deliver(l.from, to.Addr(), "get_state")
	if err != nil {
		return chord.Ref{}, nil, err
	}
	p, s := n.State(from)
	return p, s, nil
}

func (l link) Notify(ctx context.Context, to, self chord.Ref) error {
	n, err := l.c.deliver(l.from, to.Addr(), "notify")
	if err != nil {
		return err
	}
	n.Notify(self)
	return nil
}

func (l link) Ping(ctx context.Context, to chord.Ref) error {
	_, err := l.c.deliver(l.from, to.Addr(), "ping")
	return err
}

func (l link) Leave(ctx context.Context, to, leaver, pred chord.Ref, succs []chord.Ref) error {
	n, err := l.c.deliver(l.from, to.Addr(), "leave")
	if err != nil {
		return err
	}
	n.HandleLeave(leaver, pred, succs)
	return nil
}

func (l link) Claim(ctx context.Context, to, self chord.Ref) (chord.Ref, error) {
	n, err := l.c.deliver(l.from, to.Addr(), "claim")
	if err != nil {
		return chord.Ref{}, err
	}
	return n.Claim(self), nil
}

package chord

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// freezing is the direct network as one node sees it: calls to frozen
// nodes get no answer (a stopped process, a cut link under an open
// connection) until the caller gives up, and calls to slow nodes answer
// lookups only after a while, though they answer pings at once.
type freezing struct {
	direct
	frozen map[string]bool
	slow   map[string]time.Duration
	calls  atomic.Int32 // lookups asked of frozen or slow nodes
}

func (f *freezing) FindSuccessor(ctx context.Context, to Ref, id ID) (Ref, error) {
	if f.frozen[to.Addr()] {
		f.calls.Add(1)
		<-ctx.Done()
		return Ref{}, ctx.Err()
	}
	if d := f.slow[to.Addr()]; d > 0 {
		f.calls.Add(1)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return Ref{}, ctx.Err()
		}
	}
	return f.direct.FindSuccessor(ctx, to, id)
}

func (f *freezing) Ping(ctx context.Context, to Ref) error {
	if f.frozen[to.Addr()] {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// hopRing builds the ring 1000, 2000, 3000 on the direct network, the
// first node calling through a freezing view of it with SilentHop set.
func hopRing(t *testing.T, silentHop time.Duration) (*Node, *freezing, Ref, Ref) {
	t.Helper()
	ctx := context.Background()
	net := direct{}
	view := &freezing{direct: net, frozen: map[string]bool{}, slow: map[string]time.Duration{}}
	a, err := NewNode(Config{Self: Ref{IP: "10.0.0.1", Port: 1, ID: 1000}, SilentHop: silentHop}, view)
	if err != nil {
		t.Fatal(err)
	}
	net[a.Self().Addr()] = a
	b := net.add(t, 2, 2000, false)
	c := net.add(t, 3, 3000, false)
	a.Create()
	for _, n := range []*Node{b, c} {
		if err := n.Join(ctx, a.Self()); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		for _, n := range []*Node{a, b, c} {
			n.Tick(ctx)
		}
	}
	if a.Successor(0) != b.Self() || b.Successor(0) != c.Self() || c.Successor(0) != a.Self() {
		t.Fatalf("ring did not form: successors %v %v %v", a.Successor(0), b.Successor(0), c.Successor(0))
	}
	return a, view, b.Self(), c.Self()
}

// TestLookupPassesOverSilentHop freezes the hop a lookup goes through: the
// lookup must move on to the next hop and answer, long before its
// caller's deadline, instead of waiting the deadline out.
func TestLookupPassesOverSilentHop(t *testing.T) {
	a, view, b, c := hopRing(t, 20*time.Millisecond)
	view.frozen[b.Addr()] = true
	// 2500 is c's; a's closest preceding node for it is b.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := a.FindSuccessor(ctx, 2500)
	if err != nil {
		t.Fatalf("lookup with its hop frozen: %v (deadline passed: %v)", err, ctx.Err() != nil)
	}
	if got != c {
		t.Fatalf("lookup of 2500 = %v, want %v", got, c)
	}
	if view.calls.Load() == 0 {
		t.Fatal("the lookup never asked the frozen hop: the test does not test the silence")
	}
}

// TestLookupWaitsForSlowHop: a hop that answers pings is waited for, not
// passed over, even when its lookup takes several SilentHop periods.
func TestLookupWaitsForSlowHop(t *testing.T) {
	a, view, b, c := hopRing(t, 10*time.Millisecond)
	view.slow[b.Addr()] = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := a.FindSuccessor(ctx, 2500)
	if err != nil || got != c {
		t.Fatalf("lookup through a slow hop = %v, %v; want %v", got, err, c)
	}
	if view.calls.Load() != 1 {
		t.Fatalf("the slow hop was asked %d times, want once", view.calls.Load())
	}
	a.mu.Lock()
	failures := a.failures[b]
	a.mu.Unlock()
	if failures != 0 {
		t.Fatalf("the slow hop was counted as failed %d times", failures)
	}
}

// refusing answers every ping with an error at once, as a host whose
// port is closed does.
type refusing struct{ freezing }

func (r *refusing) Ping(ctx context.Context, to Ref) error { return errors.New("connection refused") }

// TestGuardGivesUpNoSooner: a node whose ping fails at once is still
// given until giveUpAfter to answer the call. Files rely on it: a
// stand-in versions an upload only after the owner can no longer take it
// (store/files lateAfter), and a node that answers just before the floor
// is not passed over.
func TestGuardGivesUpNoSooner(t *testing.T) {
	a, _, b, _ := hopRing(t, 0)
	a.tr = &refusing{}
	const pingAfter, giveUpAfter = 5 * time.Millisecond, 150 * time.Millisecond
	start := time.Now()
	gctx, _, stop := a.GuardSilence(context.Background(), b, pingAfter, giveUpAfter)
	defer stop()
	<-gctx.Done()
	if waited := time.Since(start); waited < giveUpAfter {
		t.Fatalf("gave up on a node whose ping was refused after %v, before the floor of %v", waited, giveUpAfter)
	}
	if !errors.Is(context.Cause(gctx), ErrSilent) {
		t.Fatalf("cause %v, want ErrSilent", context.Cause(gctx))
	}
	// Answered before the floor: never cancelled as silent.
	gctx, answered, stop2 := a.GuardSilence(context.Background(), b, pingAfter, giveUpAfter)
	defer stop2()
	time.Sleep(2 * pingAfter)
	answered()
	time.Sleep(giveUpAfter)
	if gctx.Err() != nil {
		t.Fatalf("a call answered after the failed ping but before the floor was cancelled: %v", context.Cause(gctx))
	}
}

func (f *freezing) State(ctx context.Context, to, from Ref) (Ref, []Ref, error) {
	if f.frozen[to.Addr()] {
		<-ctx.Done()
		return Ref{}, nil, ctx.Err()
	}
	return f.direct.State(ctx, to, from)
}

func (f *freezing) Notify(ctx context.Context, to, self Ref) error {
	if f.frozen[to.Addr()] {
		<-ctx.Done()
		return ctx.Err()
	}
	return f.direct.Notify(ctx, to, self)
}

// TestStabilizeForgetsFrozenNeighbour freezes one node of a ring of
// three, for every other node, and ticks the others as the store does
// (each tick under its own deadline, which a frozen node's call would
// run out). They must forget it and close the ring around it: before
// the calls of periodic work were guarded, a call cut short by the
// tick's deadline counted as no failure, and a frozen successor was
// kept for as long as it stayed frozen.
func TestStabilizeForgetsFrozenNeighbour(t *testing.T) {
	net := direct{}
	view := &freezing{direct: net, frozen: map[string]bool{}, slow: map[string]time.Duration{}}
	var nodes []*Node
	for i, id := range []ID{1000, 2000, 3000} {
		n, err := NewNode(Config{Self: Ref{IP: "10.0.0.1", Port: i + 1, ID: id}, SilentHop: 30 * time.Millisecond}, view)
		if err != nil {
			t.Fatal(err)
		}
		net[n.Self().Addr()] = n
		nodes = append(nodes, n)
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	a.Create()
	for _, n := range []*Node{b, c} {
		if err := n.Join(ctx, a.Self()); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		for _, n := range nodes {
			n.Tick(ctx)
		}
	}
	if a.Successor(0) != b.Self() || c.Predecessor() != b.Self() {
		t.Fatalf("ring did not form: a's successor %v, c's predecessor %v", a.Successor(0), c.Predecessor())
	}
	view.frozen[b.Self().Addr()] = true
	for tick := range 20 {
		for _, n := range []*Node{a, c} {
			tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			n.Tick(tctx)
			cancel()
		}
		if a.Successor(0) == c.Self() && c.Predecessor() == a.Self() {
			t.Logf("ring closed around the frozen node after %d ticks", tick+1)
			return
		}
	}
	t.Fatalf("after 20 ticks with b frozen: a's successors %v, c's predecessor %v; want c, and a", a.Successors(), c.Predecessor())
}

package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"tide/chord"
	"tide/chord/rpc"
	"tide/kv"
)

// TestPickTokenClaims has two nodes pick a token to join a ring of one at
// the same moment, before either has joined: both see the same ring and
// pick the same token, its owner grants the first claim, and the second
// pick fails with an error that retryJoin retries (not chord.ErrIDTaken,
// which it gives up on), naming the node that claimed it.
func TestPickTokenClaims(t *testing.T) {
	ctx := context.Background()
	seed := startTestNode(t, "", 3, nil)
	joiner := func() *Node {
		cl := rpc.NewClient()
		t.Cleanup(cl.Close)
		return &Node{rpc: cl, pos: kv.Partitioners["md5-low32"], cfg: Config{Join: seed.ring.Self().Addr()}}
	}
	a, b := joiner(), joiner()
	want := chord.ID(halve([]uint32{uint32(seed.ring.Self().ID)}, 1<<32))

	ta, err := a.pickToken(ctx, a.cfg, "127.0.0.1:1001", "127.0.0.1:2001")
	if err != nil || ta != want {
		t.Fatalf("first pick: %d, %v; want %d", ta, err, want)
	}
	_, err = b.pickToken(ctx, b.cfg, "127.0.0.1:1002", "127.0.0.1:2002")
	if !errors.Is(err, errTokenClaimed) || errors.Is(err, chord.ErrIDTaken) {
		t.Fatalf("second pick of the same token: %v, want errTokenClaimed", err)
	}
	t.Log(err)
	// The first node may pick (and claim) again, as a retry does.
	if ta2, err := a.pickToken(ctx, a.cfg, "127.0.0.1:1001", "127.0.0.1:2001"); err != nil || ta2 != ta {
		t.Fatalf("first node's pick again: %d, %v; want %d", ta2, err, ta)
	}
	// The second node's retry, while the first's claim still holds (or
	// the holder is a member the owner lost, and may hold it for good),
	// moves away from the refused token, within the same range.
	tb, err := b.pickToken(ctx, b.cfg, "127.0.0.1:1002", "127.0.0.1:2002")
	if err != nil || tb == ta {
		t.Fatalf("second node's pick after its refusal: %d, %v; want another token than %d, granted", tb, err, ta)
	}
	if d := uint32(tb - ta); d > 1<<30 && d < 1<<32-1<<30 {
		t.Fatalf("second node's pick %d is %d from the middle %d of the largest range, more than a quarter of it", tb, d, ta)
	}
}

// TestInsecureRefusedBeforeClaim starts a node that joins a ring with its
// HTTP port on every interface, without TLS or --insecure: the start is
// refused, and before the node claimed a token, so that another node
// joining at once picks and claims that same token (a claim left behind
// would hold it for 15 s).
func TestInsecureRefusedBeforeClaim(t *testing.T) {
	ctx := context.Background()
	seed := startTestNode(t, "", 3, nil)
	_, err := Start(ctx, Config{ChordAddr: "127.0.0.1:0", HTTPAddr: "0.0.0.0:0", Advertise: "127.0.0.1", DataDir: t.TempDir(),
		Join: seed.ring.Self().Addr(), Replicas: 3, TickInterval: 50 * time.Millisecond, Log: testLog()})
	if !errors.Is(err, ErrInsecure) {
		t.Fatalf("start on 0.0.0.0 without TLS or --insecure: %v, want ErrInsecure", err)
	}
	cl := rpc.NewClient()
	t.Cleanup(cl.Close)
	b := &Node{rpc: cl, pos: kv.Partitioners["md5-low32"], cfg: Config{Join: seed.ring.Self().Addr()}}
	want := chord.ID(halve([]uint32{uint32(seed.ring.Self().ID)}, 1<<32))
	if got, err := b.pickToken(ctx, b.cfg, "127.0.0.1:1002", "127.0.0.1:2002"); err != nil || got != want {
		t.Fatalf("a node joining after the refused one: token %d, %v; want %d, claimed (no claim left behind)", got, err, want)
	}
}

package store

import (
	"context"
	"errors"
	"testing"

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
}

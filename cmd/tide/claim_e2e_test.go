package main

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"tide/chord"
	"tide/cluster"
	"tide/store"
)

// TestJoinThroughLoneNodeTakesAFreeToken: a node that lost touch with
// the rest of its ring (its only peer crashed here; a partition does the
// same) sees only itself, so a node joining through it picks the middle
// of its whole range: the token the lost peer took when it joined the
// one-node ring. The lone node must refuse that claim (it lost the peer,
// it did not see it leave), and the joiner must pick another token. Once
// the peer is back the ring must hold three members with three distinct
// tokens. Without the refusal the joiner took the peer's token, and the
// two each owned the other's keys and files (stale reads in the chaos
// suite's autoscale scenario).
func TestJoinThroughLoneNodeTakesAFreeToken(t *testing.T) {
	ctx := context.Background()
	local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
	defer local.StopAll(5 * time.Second)
	// Both tokens given (the joiner's pick is then known), at a short
	// Chord period: the peer's own claim of its token as it joined, held
	// for ClaimTicks (60 periods), lapses in 6 s, after which only the
	// lost peer can make the lone node refuse it.
	const loneToken = 1 << 30
	const tick = 100 * time.Millisecond
	var procs []*cluster.Proc
	for i, token := range []uint32{loneToken, loneToken + 1<<31} {
		spec := cluster.NodeSpec{Name: fmt.Sprintf("node%d", i+1), ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Replicas: 2,
			Extra: []string{"--token", fmt.Sprint(token), "--tick", tick.String()}}
		if i > 0 {
			spec.Join = procs[0].Spec.ChordAddr
		}
		p, err := local.Launch(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	waitKVMembers(t, procs, 2)
	rc := store.NewClient()
	defer rc.Close()
	refOf := func(p *cluster.Proc) chord.Ref {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		r, err := rc.RPC.CallRef(cctx, p.Spec.ChordAddr, "get_info")
		if err != nil {
			t.Fatalf("get_info of %s: %v", p.Name, err)
		}
		return r
	}
	lone, peer := refOf(procs[0]), refOf(procs[1])
	claimLapses := time.Now().Add(3 * 60 * tick) // with room for late periods
	procs[1].Kill()
	<-procs[1].Done()
	waitFor(t, "the lone node to drop its peer", time.Minute, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		pred, succs, err := rc.RPC.State(cctx, lone, chord.Ref{})
		if err != nil {
			return err
		}
		if pred.ID == peer.ID || slices.ContainsFunc(succs, func(r chord.Ref) bool { return r.ID == peer.ID }) {
			return fmt.Errorf("its pointers still name the peer: predecessor %v, successors %v", pred, succs)
		}
		return nil
	})
	time.Sleep(time.Until(claimLapses))
	joiner, err := local.Launch(ctx, cluster.NodeSpec{Name: "joiner", ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Replicas: 2, Join: lone.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	j := refOf(joiner)
	t.Logf("lone node %d, lost peer %d, joiner %d", lone.ID, peer.ID, j.ID)
	if j.ID == peer.ID {
		t.Fatalf("the joiner took the lost peer's token %d", peer.ID)
	}
	back, err := local.Launch(ctx, procs[1].Spec)
	if err != nil {
		t.Fatal(err)
	}
	all := []*cluster.Proc{procs[0], back, joiner}
	waitKVMembers(t, all, 3)
	ids := map[chord.ID]string{}
	for _, p := range all {
		id := refOf(p).ID
		if other, dup := ids[id]; dup {
			t.Fatalf("%s and %s both hold token %d", other, p.Name, id)
		}
		ids[id] = p.Name
	}
}

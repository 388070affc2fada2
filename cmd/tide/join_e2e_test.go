package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"tide/bench"
	"tide/cluster"
	"tide/store"
)

// TestConcurrentJoins starts two nodes at the same moment, both joining a
// ring of one without --token, as containers or pods do, a few times over.
// Each time they end with tokens of their own, the ring has 3 members by
// every account (Chord, /hash_ring, tide ring), and both restart cleanly
// with their tokens.
func TestConcurrentJoins(t *testing.T) {
	ctx := context.Background()
	c := store.NewClient()
	defer c.Close()
	for round := range 3 {
		local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
		extra := []string{"--tick", "200ms"}
		seed, err := local.Launch(ctx, cluster.NodeSpec{Name: "seed", ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Replicas: 3, Extra: extra})
		if err != nil {
			local.StopAll(5 * time.Second)
			t.Fatal(err)
		}
		joiners := make([]*cluster.Proc, 2)
		errs := make(chan error, 2)
		start := make(chan struct{})
		for i := range joiners {
			go func() {
				<-start
				var err error
				joiners[i], err = local.Launch(ctx, cluster.NodeSpec{Name: fmt.Sprintf("joiner%d", i+1), ChordAddr: "127.0.0.1:0",
					HTTPAddr: "127.0.0.1:0", Replicas: 3, Join: seed.Spec.ChordAddr, Extra: extra})
				errs <- err
			}()
		}
		close(start)
		for range joiners {
			if err := <-errs; err != nil {
				local.StopAll(5 * time.Second)
				t.Fatalf("round %d: %v", round, err)
			}
		}
		procs := []*cluster.Proc{seed, joiners[0], joiners[1]}
		tokens := checkThreeMembers(t, ctx, c, procs)
		t.Logf("round %d: tokens %v", round, tokens)

		// Both joiners restart with the tokens they took.
		for i, p := range joiners {
			p.Stop(10 * time.Second)
			if joiners[i], err = local.Launch(ctx, p.Spec); err != nil {
				local.StopAll(5 * time.Second)
				t.Fatalf("round %d: restart %s: %v", round, p.Name, err)
			}
		}
		procs = []*cluster.Proc{seed, joiners[0], joiners[1]}
		if again := checkThreeMembers(t, ctx, c, procs); !slices.Equal(again, tokens) {
			t.Errorf("round %d: tokens after restart %v, want %v", round, again, tokens)
		}
		local.StopAll(5 * time.Second)
	}
}

// checkThreeMembers waits until the ring of procs has converged, with
// every node listing all three at distinct tokens in /hash_ring and tide
// ring, and returns their tokens in procs' order.
func checkThreeMembers(t *testing.T, ctx context.Context, c *store.Client, procs []*cluster.Proc) []uint32 {
	t.Helper()
	var addrs []string
	for _, p := range procs {
		addrs = append(addrs, p.Spec.ChordAddr)
	}
	tokens := make([]uint32, len(procs))
	for i, a := range addrs {
		r, err := c.RPC.CallRef(ctx, a, "get_info")
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = uint32(r.ID)
	}
	if sorted := slices.Compact(slices.Sorted(slices.Values(tokens))); len(sorted) != len(procs) {
		t.Fatalf("tokens %v are not distinct", tokens)
	}
	if err := bench.WaitConverged(ctx, c.RPC, addrs, time.Minute); err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(slices.Values(tokens))
	waitFor(t, "every node's /hash_ring and tide ring to list the 3 members", time.Minute, func() error {
		for _, p := range procs {
			var ring struct {
				Keys []uint32 `json:"_sorted_keys"`
			}
			if err := getJSON(ctx, "http://"+p.Spec.HTTPAddr+"/hash_ring", &ring); err != nil {
				return err
			}
			if !slices.Equal(ring.Keys, want) {
				return fmt.Errorf("%s: /hash_ring tokens %v, want %v", p.Name, ring.Keys, want)
			}
		}
		out, err := execTide("ring", "--json", addrs[0])
		if err != nil {
			return fmt.Errorf("tide ring: %v\n%s", err, out)
		}
		var infos []store.Info
		if err := json.Unmarshal([]byte(out), &infos); err != nil {
			return err
		}
		var got []uint32
		for _, in := range infos {
			got = append(got, in.ID)
		}
		if slices.Sort(got); !slices.Equal(got, want) {
			return fmt.Errorf("tide ring lists tokens %v, want %v", got, want)
		}
		return nil
	})
	return tokens
}

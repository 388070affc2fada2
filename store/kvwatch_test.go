package store

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestKVGetWaitsForVersion: a read that asks for a version waits until a
// write of it lands (through another node), then answers with it; one
// whose version never comes answers with what it found once its wait is
// over; bad parameters are a 400.
func TestKVGetWaitsForVersion(t *testing.T) {
	nodes := kvCluster(t, 3, nil)
	ctx := context.Background()
	v1, err := nodes[0].kv.Put(ctx, []byte("k"), []byte("one"), 0)
	if err != nil {
		t.Fatal(err)
	}
	get := func(node *Node, q string) (int, string, uint64) {
		resp, err := http.Get("http://" + node.HTTPAddr() + "/kv/k" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		v, _ := strconv.ParseUint(resp.Header.Get("X-Tide-Version"), 10, 64)
		return resp.StatusCode, string(b), v
	}
	type answer struct {
		code int
		body string
		v    uint64
	}
	got := make(chan answer, 1)
	// A version above v1: the next write's, whatever it will be.
	go func() {
		code, body, v := get(nodes[1], fmt.Sprintf("?version=%d&wait=1m", v1+1))
		got <- answer{code, body, v}
	}()
	select {
	case a := <-got:
		t.Fatalf("answered before the write: %+v", a)
	case <-time.After(300 * time.Millisecond):
	}
	v2, err := nodes[2].kv.Put(ctx, []byte("k"), []byte("two"), 0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if a.code != 200 || a.body != "two" || a.v != v2 {
			t.Fatalf("answered %+v, want two at version %d", a, v2)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting read did not answer after the write")
	}
	// A version that never comes: the current one once the wait is over.
	if code, body, v := get(nodes[0], fmt.Sprintf("?version=%d&wait=200ms", v2+1<<40)); code != 200 || body != "two" || v != v2 {
		t.Fatalf("unsatisfied wait answered %d %q %d", code, body, v)
	}
	for _, q := range []string{"?version=x&wait=1s", "?version=5", "?wait=1s", "?version=5&wait=-1s", "?version=5&wait=2h"} {
		if code, body, _ := get(nodes[0], q); code != http.StatusBadRequest {
			t.Errorf("GET /kv/k%s: %d %q, want 400", q, code, body)
		}
	}
	if n := nodes[1].kv.Watches(); n != 0 {
		t.Errorf("%d watches left registered", n)
	}
}

// TestKVWaitOnReplicaBacksOff: a read waiting on one of the key's
// replicas for a version that does not come reads again once a second
// (a write of the key would wake it), not every 20 ms: over 1.5 s, a
// handful of quorum reads rather than 75.
func TestKVWaitOnReplicaBacksOff(t *testing.T) {
	nodes := kvCluster(t, 3, nil) // N = 3: every node holds every key
	ctx := context.Background()
	v, err := nodes[0].kv.Put(ctx, []byte("k"), []byte("one"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if r := nodes[1].kvRing.Load(); !slices.Contains(r.Preference(r.Position([]byte("k")), 3), nodes[1].peerAddr) {
		t.Fatal("node 1 is not a replica of k in a ring of 3 with N = 3")
	}
	before := nodes[1].kv.Stats().Reads
	rec, _, err := nodes[1].kv.GetAtLeast(ctx, []byte("k"), 0, v+1<<40, 1500*time.Millisecond)
	if err != nil || rec.Version != v {
		t.Fatalf("read %d, %v; want version %d", rec.Version, err, v)
	}
	// The stats are published once a round; the last read's round is over
	// once it answered, but give the loop a moment to publish it.
	var reads int
	deadline := time.Now().Add(10 * time.Second)
	for {
		reads = nodes[1].kv.Stats().Reads - before
		if reads >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // any straggler's stats
	reads = nodes[1].kv.Stats().Reads - before
	// The node holds an older version, so no read at first; at 1 s and
	// at 1.5 s: 2 reads. Allow for stray reads of the cluster's own, not
	// for a read every 20 ms.
	if reads < 1 || reads > 15 {
		t.Fatalf("%d quorum reads in a 1.5 s wait on a replica; want a few (backoff)", reads)
	}
}

package store

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestExpiryAcrossReplicas: a key written with a 1 s TTL is gone through
// every node after it, every replica replaces it with a tombstone in the
// background, and a replica that was down while it expired, restarted
// with the value still in its storage, does not bring it back.
func TestExpiryAcrossReplicas(t *testing.T) {
	nodes := kvCluster(t, 3, func(c *Config) { c.KV.SyncTicks = 10 })
	ctx := context.Background()
	req, _ := http.NewRequest(http.MethodPut, "http://"+nodes[0].HTTPAddr()+"/kv/session?ttl=1s", strings.NewReader("token"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("PUT ?ttl=1s: %v %v", resp, err)
	}
	resp.Body.Close()
	waitFor(t, "every replica to hold the key with its deadline", func() bool {
		for _, n := range nodes {
			r, ok, _ := n.eng.KV().Get([]byte("session"))
			if !ok || r.Expire == 0 || r.Tomb {
				return false
			}
		}
		return true
	})
	down := nodes[2]
	cfg := restartConfig(down)
	down.Close()
	get := func(n *Node) int {
		resp, err := http.Get("http://" + n.HTTPAddr() + "/kv/session")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, "the key to expire through the live nodes", func() bool { return get(nodes[0]) == 404 && get(nodes[1]) == 404 })
	waitFor(t, "the live replicas to collect the expired value", func() bool {
		for _, n := range nodes[:2] {
			if r, ok, _ := n.eng.KV().Get([]byte("session")); ok && !r.Tomb {
				return false
			}
		}
		return true
	})
	// The restarted replica still holds the value it had: reads through
	// any node, itself included, do not answer it.
	cfg.Join = ""
	back, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Close() })
	if r, ok, _ := back.eng.KV().Get([]byte("session")); !ok || r.Tomb {
		t.Logf("the restarted replica already holds %+v (ok %v)", r, ok)
	}
	all := []*Node{nodes[0], nodes[1], back}
	waitFor(t, "restarted node back in the ring", func() bool { return ringConverged(all) })
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for i, n := range all {
			if c := get(n); c != 404 {
				t.Fatalf("GET of the expired key through node %d: %d, want 404", i, c)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, "every replica, the restarted one too, to hold a tombstone", func() bool {
		for _, n := range all {
			if r, ok, _ := n.eng.KV().Get([]byte("session")); ok && !r.Tomb {
				return false
			}
		}
		return true
	})
}

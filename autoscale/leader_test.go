package autoscale

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"tide/paxos/node"
)

// startLog runs a real tide log deployment in this process, each role on
// sockets of its own bound before the deployment names them.
func startLog(t *testing.T) *node.Client {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, stop, err := node.RunInProcess(context.Background(), node.DefaultShape, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	c, err := node.NewClient(d, "127.0.0.1", 2)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); stop() })
	return c
}

// Leases in the tide log: one holder at a time; a holder that stops
// renewing is replaced once its lease expires; the change in flight is
// kept in the log for the next leader.
func TestLogLease(t *testing.T) {
	c := startLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now()
	clock := func() time.Time { return now }
	a := &LogLease{KV: c, Holder: "a", TTL: 5 * time.Second, Now: clock}
	b := &LogLease{KV: c, Holder: "b", TTL: 5 * time.Second, Now: clock}
	if ok, err := a.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("a: %v %v", ok, err)
	}
	if ok, err := b.TryAcquire(ctx); ok || err != nil {
		t.Fatalf("b took a live lease: %v %v", ok, err)
	}
	now = now.Add(3 * time.Second)
	if ok, _ := a.TryAcquire(ctx); !ok {
		t.Fatal("a could not renew its own lease")
	}
	now = now.Add(4 * time.Second) // 4s after a's renewal: still live
	if ok, _ := b.TryAcquire(ctx); ok {
		t.Fatal("b took a lease renewed 4s ago with a 5s TTL")
	}
	now = now.Add(2 * time.Second) // a crashed and stopped renewing
	if ok, err := b.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("b could not take an expired lease: %v %v", ok, err)
	}
	if ok, _ := a.TryAcquire(ctx); ok {
		t.Fatal("a came back and took b's live lease")
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.TryAcquire(ctx); !ok {
		t.Fatal("a could not take a released lease")
	}

	st := LogState{KV: c}
	if p, err := st.Load(ctx); p != nil || err != nil {
		t.Fatalf("empty state: %+v %v", p, err)
	}
	want := &Pending{System: "store", Action: ActScaleIn, Instance: "node4", Phase: "drain", Reason: "test", Started: now.UTC()}
	if err := st.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := st.Load(ctx)
	if err != nil || got == nil || *got != *want {
		t.Fatalf("state round trip: %+v %v, want %+v", got, err, want)
	}
	st.Save(ctx, nil)
	if p, _ := st.Load(ctx); p != nil {
		t.Fatalf("cleared state reads %+v", p)
	}
}

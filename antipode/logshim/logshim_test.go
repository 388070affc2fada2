package logshim_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tide/antipode"
	"tide/antipode/logshim"
	"tide/antipode/regions"
	"tide/paxos/node"
)

func TestTopicInOrderWithLineage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := regions.StartLog(ctx, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	newClient := func() *node.Client {
		c, err := node.NewClient(l.Deployment, "127.0.0.1", 8)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	// Two publishers on their own clients race for slots.
	pubs := []*logshim.Topic{
		{Client: newClient(), Name: "notes", Store: "notes"},
		{Client: newClient(), Name: "notes", Store: "notes"},
	}
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	slots := make(chan uint64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx := antipode.Write(ctx, antipode.WriteID{Store: "posts", Key: fmt.Sprint("post-", i), Version: uint64(100 + i)})
			id, err := pubs[i%2].Publish(pctx, []byte(fmt.Sprint(i)))
			if err != nil {
				errs <- err
				return
			}
			slots <- id.Version
		}()
	}
	wg.Wait()
	close(errs)
	close(slots)
	for err := range errs {
		t.Fatal(err)
	}
	var got []uint64
	for s := range slots {
		got = append(got, s)
	}
	slices.Sort(got)
	for i, s := range got {
		if s != uint64(i+1) {
			t.Fatalf("slots taken %v: not 1..%d each once", got, n)
		}
	}
	// A subscriber reads every message once, in slot order, each with the
	// lineage of its publisher.
	sub := (&logshim.Topic{Client: newClient(), Name: "notes"}).Subscribe(1, antipode.Backoff{})
	seen := map[string]bool{}
	for want := uint64(1); want <= n; want++ {
		mctx, slot, data, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ws := antipode.FromContext(mctx).Writes()
		if slot != want || len(ws) != 1 || ws[0].Key != "post-"+string(data) || seen[string(data)] {
			t.Fatalf("slot %d (want %d): data %q, lineage %v", slot, want, data, ws)
		}
		seen[string(data)] = true
	}
	// The next one is not there yet: Next waits, and ends at the deadline.
	dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer dcancel()
	if _, _, _, err := sub.Next(dctx); err == nil {
		t.Fatal("Next returned a message beyond the last")
	}
	// A published message is visible at once: the log is linearizable.
	w := &logshim.Waiter{Client: newClient()}
	id, err := pubs[0].Publish(ctx, []byte("last"))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer wcancel()
	if err := w.Wait(wctx, antipode.WriteID{Store: "notes", Key: "notes", Version: 1000}); err == nil {
		t.Fatal("wait for an unwritten slot returned")
	}
}

func TestLogUnreachable(t *testing.T) {
	// Nothing listens on these: each was bound and closed.
	n := regions.LogShape.Count()
	var addrs []string
	for range 2 * n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		l.Close()
	}
	d, err := node.LayoutDeployment(regions.LogShape, addrs[:n], addrs[n:])
	if err != nil {
		t.Fatal(err)
	}
	c, err := node.NewClient(d, "127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg := antipode.NewRegistry()
	reg.Register("notes", &logshim.Waiter{Client: c})
	ctx, cancel := context.WithTimeout(antipode.Write(context.Background(), antipode.WriteID{Store: "notes", Key: "notes", Version: 1}), 300*time.Millisecond)
	defer cancel()
	err = reg.Barrier(ctx)
	// The log client resends until the deadline and has no error of its
	// own to report, so shimtest.Unreachable's "last error" is not asked.
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "notes/notes@1") {
		t.Fatalf("barrier on a log that is not running: %v", err)
	}
	t.Log(err)
}

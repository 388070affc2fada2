package logshim

import (
	"bytes"
	"context"
	"testing"
	"time"

	"tide/antipode"
	"tide/antipode/regions"
	"tide/paxos"
	"tide/paxos/node"
)

// A publisher that claimed slot 1 and gave up leaves a gap: the subscriber
// fences it and reads on, and a later publisher skips the fenced slot.
func TestSubscriberFencesAbandonedSlot(t *testing.T) {
	old := GapTimeout
	GapTimeout = 200 * time.Millisecond
	defer func() { GapTimeout = old }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := regions.StartLog(ctx, t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := node.NewClient(l.Deployment, "127.0.0.1", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pub := &Topic{Client: c, Name: "gap", Store: "notes"}
	if s := pub.reserve(0); s != 1 {
		t.Fatalf("first reservation %d", s)
	}
	// Slot 1 is abandoned; the next publish lands in slot 2.
	id, err := pub.Publish(ctx, []byte("second"))
	if err != nil || id.Version != 2 {
		t.Fatalf("publish: %v %v", id, err)
	}
	sub := (&Topic{Client: c, Name: "gap"}).Subscribe(1, antipode.Backoff{})
	_, slot, data, err := sub.Next(ctx)
	if err != nil || slot != 2 || string(data) != "second" {
		t.Fatalf("next = slot %d %q %v, want slot 2", slot, data, err)
	}
	if v, found, err := c.Get(ctx, "gap/1", paxos.ReadQuorum); err != nil || !found || !bytes.Equal(v, tombstone) {
		t.Fatalf("slot 1 = %v %v %v, want the tombstone", v, found, err)
	}
	// Another process's publisher starts at slot 1: it loses 1 and 2 and
	// lands in 3, which the subscriber reads next.
	other := &Topic{Client: c, Name: "gap", Store: "notes"}
	id, err = other.Publish(ctx, []byte("third"))
	if err != nil || id.Version != 3 {
		t.Fatalf("other publish: %v %v", id, err)
	}
	_, slot, data, err = sub.Next(ctx)
	if err != nil || slot != 3 || string(data) != "third" {
		t.Fatalf("next = slot %d %q %v, want slot 3", slot, data, err)
	}
}

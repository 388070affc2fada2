package natsshim_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tide/antipode"
	"tide/antipode/internal/shimtest"
	"tide/antipode/natsshim"
	"tide/antipode/regions"
)

func startNATS(t *testing.T) *nats.Conn {
	srv, err := regions.StartNATS(context.Background(), t.TempDir())
	if errors.Is(err, regions.ErrNotInstalled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// A notification carries its lineage to the subscriber.
func TestNotificationCarriesLineage(t *testing.T) {
	nc := startNATS(t)
	got := make(chan *nats.Msg, 1)
	sub, err := nc.ChanSubscribe("notes", got)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	nc.Flush()
	post := antipode.WriteID{Store: "posts", Key: "post-1", Version: 981}
	ctx := antipode.Write(context.Background(), post)
	if err := natsshim.Publish(ctx, nc, "notes", []byte("post-1")); err != nil {
		t.Fatal(err)
	}
	var m *nats.Msg
	select {
	case m = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
	rctx, err := natsshim.Context(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if w := antipode.FromContext(rctx).Writes(); !slices.Equal(w, []antipode.WriteID{post}) {
		t.Fatalf("received lineage %v", w)
	}
	m.Header.Set(antipode.Header, "Aw") // format 3
	if _, err := natsshim.Context(context.Background(), m); !errors.Is(err, antipode.ErrFormatVersion) {
		t.Fatalf("newer-format lineage: %v", err)
	}
}

// A JetStream wait blocks until the sequence is stored.
func TestJetStreamWait(t *testing.T) {
	nc := startNATS(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NOTES", Subjects: []string{"notes.>"}}); err != nil {
		t.Fatal(err)
	}
	w := &natsshim.Writer{JS: js, Store: "notes"}
	first, err := w.Publish(ctx, "notes.a", []byte("one"))
	if err != nil || first.Key != "NOTES" || first.Version != 1 {
		t.Fatalf("first publish: %v %v", first, err)
	}
	waiter := natsshim.NewWaiter(js, "NOTES", antipode.Backoff{})
	sub, err := waiter.WakeOn(nc, "notes.>")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	nc.Flush()
	reg := antipode.NewRegistry()
	reg.Register("notes", waiter)

	// Sequence 3 does not exist yet: the barrier waits.
	future := antipode.WriteID{Store: "notes", Key: "NOTES", Version: 3}
	done := make(chan error, 1)
	go func() { done <- reg.Barrier(antipode.Write(ctx, future)) }()
	if _, err := w.Publish(ctx, "notes.b", []byte("two")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("barrier for sequence 3 returned with 2 messages stored: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	third, err := w.Publish(ctx, "notes.c", []byte("three"))
	if err != nil || third.Version != 3 {
		t.Fatalf("third publish: %v %v", third, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestJetStreamUnreachable(t *testing.T) {
	nc := startNATS(t)
	js, _ := jetstream.New(nc)
	// The stream does not exist in this "region".
	shimtest.Unreachable(t, "notes", natsshim.NewWaiter(js, "MISSING", antipode.Backoff{}))
}

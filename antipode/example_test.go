package antipode_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"tide/antipode"
)

// A writer records the write it made in the request's lineage and sends the
// lineage with its notification; the reader extracts it and waits at the
// barrier before reading its own replica.
func Example() {
	// The reader's local replica of "posts", which catches up later.
	var applied atomic.Uint64
	replica := &antipode.Tracker{Position: func(context.Context) (uint64, error) { return applied.Load(), nil }}
	reader := antipode.NewRegistry()
	reader.Register("posts", antipode.WaiterFunc(func(ctx context.Context, w antipode.WriteID) error {
		return replica.Wait(ctx, w.Version)
	}))

	// Writer: the post store acknowledged a write at position 17.
	ctx := antipode.Write(context.Background(), antipode.WriteID{Store: "posts", Key: "post-1", Version: 17})
	notification := http.Header{}
	antipode.Inject(ctx, notification)

	// Replication delivers the post a little later.
	go func() { time.Sleep(20 * time.Millisecond); applied.Store(17) }()

	// Reader: the notification arrives first.
	rctx, err := antipode.Extract(context.Background(), notification)
	if err != nil {
		panic(err)
	}
	rctx, cancel := context.WithTimeout(rctx, 5*time.Second)
	defer cancel()
	if err := reader.Barrier(rctx); err != nil {
		panic(err)
	}
	fmt.Println("post-1 visible at position", applied.Load())
	// Output: post-1 visible at position 17
}

// The text form is what travels in a header: a few bytes per write.
func ExampleEncode() {
	ctx := antipode.Write(context.Background(), antipode.WriteID{Store: "posts", Key: "post-1", Version: 17})
	s, _ := antipode.Encode(ctx)
	fmt.Println(antipode.Header+":", s)
	l, _ := antipode.Decode(s)
	fmt.Println(l)
	// Output:
	// Antipode-Lineage: AQEFcG9zdHMBAAZwb3N0LTER
	// [posts/post-1@17]
}

// Transfer carries a lineage from the request that received it to a new
// one, such as a background job the request starts.
func ExampleTransfer() {
	received := antipode.Write(context.Background(), antipode.WriteID{Store: "posts", Key: "post-1", Version: 17})
	job := antipode.Write(context.Background(), antipode.WriteID{Store: "users", Key: "alice", Version: 4})
	job = antipode.Transfer(job, received)
	fmt.Println(antipode.FromContext(job))
	// Output: [posts/post-1@17 users/alice@4]
}

// A barrier that cannot finish by its deadline says which writes it was
// still waiting for.
func ExampleRegistry_Barrier_deadline() {
	stuck := &antipode.Tracker{Position: func(context.Context) (uint64, error) { return 3, nil }}
	reg := antipode.NewRegistry()
	reg.Register("posts", antipode.WaiterFunc(func(ctx context.Context, w antipode.WriteID) error {
		return stuck.Wait(ctx, w.Version)
	}))
	ctx := antipode.Write(context.Background(), antipode.WriteID{Store: "posts", Key: "post-9", Version: 8})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	err := reg.Barrier(ctx)
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	fmt.Println(err)
	// Output:
	// true
	// antipode barrier: 1 of 1 writes not visible in the local replica: posts/post-9@8 (context deadline exceeded (replica at position 3, waiting for 8))
}

// BarrierFunc waits without a goroutine: a service that receives
// thousands of notifications during a replication lag holds a callback
// for each, not a blocked goroutine and its stack.
func ExampleRegistry_BarrierFunc() {
	var pos atomic.Uint64
	replica := &antipode.Tracker{Position: func(context.Context) (uint64, error) { return pos.Load(), nil }}
	reg := antipode.NewRegistry()
	reg.Register("posts", trackerWaiter{replica}) // an AsyncWaiter, as the Redis, PostgreSQL and NATS shims' are
	ctx := antipode.Write(context.Background(), antipode.WriteID{Store: "posts", Key: "post-3", Version: 12})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	visible := make(chan error, 1)
	reg.BarrierFunc(ctx, func(err error) { visible <- err }) // returns at once
	pos.Store(12)                                            // the replica catches up
	fmt.Println(<-visible)
	// Output: <nil>
}

// trackerWaiter is a Tracker as an antipode.AsyncWaiter.
type trackerWaiter struct{ t *antipode.Tracker }

func (w trackerWaiter) Wait(ctx context.Context, id antipode.WriteID) error {
	return w.t.Wait(ctx, id.Version)
}

func (w trackerWaiter) WaitFunc(ctx context.Context, id antipode.WriteID, done func(error)) {
	w.t.WaitFunc(ctx, id.Version, done)
}

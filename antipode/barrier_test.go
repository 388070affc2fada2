package antipode

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// replica is an in-memory replica whose position the test moves.
type replica struct {
	mu    sync.Mutex
	pos   uint64
	reads atomic.Int64
	fail  error
}

func (r *replica) position(context.Context) (uint64, error) {
	r.reads.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pos, r.fail
}

func (r *replica) set(p uint64) {
	r.mu.Lock()
	r.pos = p
	r.mu.Unlock()
}

func trackerWaiter(t *Tracker) Waiter {
	return WaiterFunc(func(ctx context.Context, w WriteID) error { return t.Wait(ctx, w.Version) })
}

func TestBarrierWaitsForEveryStore(t *testing.T) {
	posts, users := &replica{}, &replica{}
	reg := NewRegistry()
	reg.Register("posts", trackerWaiter(&Tracker{Position: posts.position}))
	reg.Register("users", trackerWaiter(&Tracker{Position: users.position}))
	ctx := Write(context.Background(), WriteID{Store: "posts", Key: "p", Version: 10})
	ctx = Write(ctx, WriteID{Store: "users", Key: "u", Version: 3})

	done := make(chan error, 1)
	go func() { done <- reg.Barrier(ctx) }()
	posts.set(10)
	select {
	case err := <-done:
		t.Fatalf("barrier returned (%v) with users still behind", err)
	case <-time.After(50 * time.Millisecond):
	}
	users.set(5)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("barrier did not return once both replicas caught up")
	}
}

func TestBarrierDeadlineNamesPendingWrites(t *testing.T) {
	posts := &replica{pos: 4, fail: nil}
	reg := NewRegistry()
	reg.Register("posts", trackerWaiter(&Tracker{Position: posts.position}))
	ctx := Write(context.Background(), WriteID{Store: "posts", Key: "seen", Version: 4})
	ctx = Write(ctx, WriteID{Store: "posts", Key: "late", Version: 9})
	ctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	err := reg.Barrier(ctx)
	var be *BarrierError
	if !errors.As(err, &be) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a *BarrierError wrapping DeadlineExceeded", err)
	}
	if len(be.Pending) != 1 || be.Pending[0].Write != (WriteID{Store: "posts", Key: "late", Version: 9}) || be.Total != 2 {
		t.Fatalf("pending = %+v of %d", be.Pending, be.Total)
	}
	if msg := err.Error(); !strings.Contains(msg, "posts/late@9") || strings.Contains(msg, "posts/seen") || !strings.Contains(msg, "1 of 2") {
		t.Fatalf("message %q", msg)
	}
}

// A replica that cannot be reached: the barrier ends at the deadline with
// the store's error in the message, and the tracker stops polling.
func TestBarrierUnreachableStore(t *testing.T) {
	r := &replica{fail: errors.New("dial tcp 127.0.0.1:1: connection refused")}
	tr := &Tracker{Position: r.position}
	reg := NewRegistry()
	reg.Register("posts", trackerWaiter(tr))
	ctx, cancel := context.WithTimeout(Write(context.Background(), WriteID{Store: "posts", Key: "p", Version: 1}), 50*time.Millisecond)
	defer cancel()
	err := reg.Barrier(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		tr.mu.Lock()
		running := tr.running
		tr.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("tracker still polling with no one waiting")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBarrierWithoutWaiterFails(t *testing.T) {
	reg := NewRegistry()
	err := reg.Barrier(Write(context.Background(), WriteID{Store: "unknown", Key: "k", Version: 1}))
	if !errors.Is(err, ErrNoWaiter) || !strings.Contains(err.Error(), `"unknown"`) {
		t.Fatalf("err = %v", err)
	}
	if err := reg.Barrier(context.Background()); err != nil {
		t.Fatalf("barrier without lineage: %v", err)
	}
}

// One poll loop serves every waiter, and it backs off while the position
// stands still: 200 waiters over ~100ms cost a few dozen reads, not
// thousands.
func TestTrackerSharesOnePollLoop(t *testing.T) {
	r := &replica{}
	tr := &Tracker{Position: r.position, Backoff: Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tr.Wait(ctx, uint64(1+i%3)); err != nil {
				errs <- fmt.Errorf("waiter %d: %w", i, err)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	r.set(3)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// 100ms at one read per 5ms at most is ~20 reads, plus the few of the
	// backoff's start: far fewer than one per waiter.
	if n := r.reads.Load(); n > 100 {
		t.Fatalf("%d position reads for 200 waiters over ~100ms", n)
	}
}

func TestPollRetriesErrorsAndWakes(t *testing.T) {
	wake := make(chan struct{}, 1)
	var calls atomic.Int64
	ready := atomic.Bool{}
	go func() {
		time.Sleep(20 * time.Millisecond)
		ready.Store(true)
		wake <- struct{}{}
	}()
	// Backoff of an hour: only the wake can bring the second check.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	err := Poll(wctx, Backoff{Min: time.Hour, Max: time.Hour}, wake, func(context.Context) (bool, error) {
		calls.Add(1)
		if !ready.Load() {
			return false, errors.New("not yet")
		}
		return true, nil
	})
	if err != nil || calls.Load() != 2 {
		t.Fatalf("err = %v after %d checks, want nil after 2", err, calls.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err = Poll(ctx, Backoff{}, nil, func(context.Context) (bool, error) { return false, errors.New("refused") })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v", err)
	}
}

// Wake reads the position at once, whatever the backoff.
func TestTrackerWake(t *testing.T) {
	r := &replica{}
	tr := &Tracker{Position: r.position, Backoff: Backoff{Min: time.Hour, Max: time.Hour}}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done <- tr.Wait(ctx, 5)
	}()
	for r.reads.Load() == 0 { // the loop's first read
		time.Sleep(time.Millisecond)
	}
	r.set(5)
	tr.Wake()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestTrackerReleasesInOrder: of 300 waiters at positions 1..300, a third
// give up early; as the replica moves, each of the others returns once
// the position reaches its own and not before, and none is left behind.
func TestTrackerReleasesInOrder(t *testing.T) {
	r := &replica{}
	tr := &Tracker{Position: r.position, Backoff: Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}}
	const n = 300
	released := make([]atomic.Bool, n+1)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for v := uint64(1); v <= n; v++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if v%3 == 0 {
				ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
			}
			defer cancel()
			err := tr.Wait(ctx, v)
			switch {
			case v%3 == 0:
				return // gave up, or released if the replica got there first
			case err != nil:
				errs <- fmt.Errorf("wait %d: %v", v, err)
			case tr.Last() < v:
				errs <- fmt.Errorf("wait %d released at position %d", v, tr.Last())
			}
			released[v].Store(true)
		}()
	}
	time.Sleep(20 * time.Millisecond)
	for p := uint64(0); p <= n; p += 50 {
		r.set(p)
		deadline := time.Now().Add(30 * time.Second)
		for v := uint64(1); v <= p; v++ {
			for v%3 != 0 && !released[v].Load() {
				if time.Now().After(deadline) {
					t.Fatalf("wait %d not released at position %d", v, p)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tr.mu.Lock()
	left := len(tr.waiters)
	tr.mu.Unlock()
	if left != 0 {
		t.Errorf("%d waiters left", left)
	}
}

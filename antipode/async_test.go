package antipode

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// trackerAsync is a Tracker as an AsyncWaiter, as the shims make it.
type trackerAsync struct{ t *Tracker }

func (a trackerAsync) Wait(ctx context.Context, w WriteID) error { return a.t.Wait(ctx, w.Version) }
func (a trackerAsync) WaitFunc(ctx context.Context, w WriteID, done func(error)) {
	a.t.WaitFunc(ctx, w.Version, done)
}

// TestTrackerWaitFunc: 300 callback waits at positions 1..300, a third
// with a deadline that passes first. Each callback runs exactly once: nil
// only once the position reached its own, the deadline's error only while
// it had not. The waits hold no goroutine while they wait.
func TestTrackerWaitFunc(t *testing.T) {
	r := &replica{}
	tr := &Tracker{Position: r.position, Backoff: Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}}
	const n = 300
	calls := make([]atomic.Int32, n+1)
	released := make([]atomic.Bool, n+1)
	errs := make(chan error, 2*n)
	var cancels []context.CancelFunc
	before := runtime.NumGoroutine()
	for v := uint64(1); v <= n; v++ {
		timeout := time.Minute
		if v%3 == 0 {
			timeout = 20 * time.Millisecond
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		cancels = append(cancels, cancel)
		tr.WaitFunc(ctx, v, func(err error) {
			if calls[v].Add(1) > 1 {
				errs <- fmt.Errorf("wait %d called back twice", v)
			}
			switch {
			case err == nil && tr.Last() < v:
				errs <- fmt.Errorf("wait %d released at position %d", v, tr.Last())
			case err != nil && v%3 != 0:
				errs <- fmt.Errorf("wait %d: %v", v, err)
			case err != nil && (!errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), fmt.Sprintf("waiting for %d", v))):
				errs <- fmt.Errorf("wait %d ended with %v", v, err)
			}
			released[v].Store(true)
		})
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	// The poll loop, and no goroutine per wait. A deadline that passes
	// runs its wait's withdrawal on a goroutine of its own for a moment
	// (context.AfterFunc): on a slow machine the first deadlines pass
	// while later waits are still being added. So the count must fall
	// back, while the 200 waits without a deadline are still pending.
	deadline := time.Now().Add(30 * time.Second)
	for g := runtime.NumGoroutine(); g > before+20; g = runtime.NumGoroutine() {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines with %d waits pending, %d before", g, n-n/3, before)
		}
		time.Sleep(time.Millisecond)
	}
	for v := uint64(3); v <= n; v += 3 {
		for !released[v].Load() {
			if time.Now().After(deadline) {
				t.Fatalf("wait %d not ended by its deadline", v)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for p := uint64(0); p <= n; p += 50 {
		r.set(p)
		for v := uint64(1); v <= p; v++ {
			for !released[v].Load() {
				if time.Now().After(deadline) {
					t.Fatalf("wait %d not released at position %d", v, p)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	// Contexts that end after their wait was released call nothing back.
	for _, c := range cancels {
		c()
	}
	time.Sleep(50 * time.Millisecond)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for v := 1; v <= n; v++ {
		if c := calls[v].Load(); c != 1 {
			t.Errorf("wait %d called back %d times", v, c)
		}
	}
	// A wait already satisfied calls back before WaitFunc returns.
	var now bool
	tr.WaitFunc(context.Background(), 1, func(err error) { now = err == nil })
	if !now {
		t.Fatal("a wait for a position already reached did not call back at once")
	}
}

// BarrierFunc waits for a lineage across an AsyncWaiter and a plain
// Waiter, calls back once, and names what a deadline left pending.
func TestBarrierFunc(t *testing.T) {
	posts, users := &replica{}, &replica{}
	reg := NewRegistry()
	reg.Register("posts", trackerAsync{&Tracker{Position: posts.position}})
	reg.Register("users", trackerWaiter(&Tracker{Position: users.position}))
	ctx := Write(context.Background(), WriteID{Store: "posts", Key: "p", Version: 10})
	ctx = Write(ctx, WriteID{Store: "users", Key: "u", Version: 3})

	var mu sync.Mutex
	var got []error
	done := make(chan struct{}, 2)
	reg.BarrierFunc(ctx, func(err error) {
		mu.Lock()
		got = append(got, err)
		mu.Unlock()
		done <- struct{}{}
	})
	posts.set(10)
	select {
	case <-done:
		t.Fatalf("barrier ended (%v) with users still behind", got)
	case <-time.After(50 * time.Millisecond):
	}
	users.set(5)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("barrier did not end once both replicas caught up")
	}
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	if len(got) != 1 || got[0] != nil {
		t.Fatalf("called back with %v, want one nil", got)
	}
	mu.Unlock()

	// A deadline: the error names the write not visible, not the other.
	late := Write(context.Background(), WriteID{Store: "posts", Key: "late", Version: 99})
	late = Write(late, WriteID{Store: "users", Key: "u", Version: 3})
	late, cancel := context.WithTimeout(late, 30*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	reg.BarrierFunc(late, func(err error) { errc <- err })
	var err error
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("barrier did not end at its deadline")
	}
	var be *BarrierError
	if !errors.As(err, &be) || !errors.Is(err, context.DeadlineExceeded) || len(be.Pending) != 1 || be.Pending[0].Write.Key != "late" || be.Total != 2 {
		t.Fatalf("err = %v", err)
	}

	// No lineage: at once. No waiter: at once, with ErrNoWaiter.
	var now error = errors.New("not called")
	reg.BarrierFunc(context.Background(), func(err error) { now = err })
	if now != nil {
		t.Fatalf("barrier without lineage: %v", now)
	}
	reg.BarrierFunc(Write(context.Background(), WriteID{Store: "unknown", Key: "k", Version: 1}), func(err error) { now = err })
	if !errors.Is(now, ErrNoWaiter) {
		t.Fatalf("barrier on an unknown store: %v", now)
	}
}

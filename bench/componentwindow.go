package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// window bounds the work a synthetic upstream has handed a role and not
// yet seen come out downstream, so that the role's queue stays full but
// bounded: the role, not the generator, is the bottleneck, and nothing is
// dropped for want of room (a role's inbox and a transport queue drop
// what overflows them).
type window struct {
	size       int64
	sent, done atomic.Int64
	wake       chan struct{}
	// stall is how long take waits for progress before it reports the
	// role stuck.
	stall time.Duration
}

func newWindow(size int64) *window {
	return &window{size: size, wake: make(chan struct{}, 1), stall: 10 * time.Second}
}

// take waits until the window has room and takes up to want units of it
// (at least one, at most want). One goroutine calls it.
func (w *window) take(ctx context.Context, want int64) (int64, error) {
	timer := time.NewTimer(w.stall)
	defer timer.Stop()
	for {
		if free := w.size - (w.sent.Load() - w.done.Load()); free > 0 {
			n := min(free, want)
			w.sent.Add(n)
			return n, nil
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-timer.C:
			return 0, fmt.Errorf("role stalled: %d in flight, none completed for %s", w.inFlight(), w.stall)
		}
	}
}

// takeAll is take for exactly n units (a batch that cannot be split).
func (w *window) takeAll(ctx context.Context, n int64) error {
	timer := time.NewTimer(w.stall)
	defer timer.Stop()
	for w.size-(w.sent.Load()-w.done.Load()) < n {
		select {
		case <-w.wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("role stalled: %d in flight, none completed for %s", w.inFlight(), w.stall)
		}
	}
	w.sent.Add(n)
	return nil
}

// release records n units completed.
func (w *window) release(n int64) {
	w.done.Add(n)
	w.poke()
}

// advance records every unit below to as completed (progress reported as
// a high-water mark).
func (w *window) advance(to int64) {
	for {
		cur := w.done.Load()
		if to <= cur || w.done.CompareAndSwap(cur, to) {
			break
		}
	}
	w.poke()
}

func (w *window) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *window) inFlight() int64 { return w.sent.Load() - w.done.Load() }

// drain waits until nothing is in flight, or gives up after limit.
func (w *window) drain(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for w.inFlight() > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d still in flight %s after the flood stopped", w.inFlight(), limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

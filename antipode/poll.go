package antipode

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Backoff bounds the polling of a store that cannot tell when a write
// arrives: the first check is immediate, the next after Min, each later
// one after twice the last, never more than Max apart. Max bounds the
// extra latency a barrier adds over the replication lag itself.
type Backoff struct {
	Min, Max time.Duration
}

// DefaultBackoff polls after 1ms, 2ms, 4ms, then every 5ms at most.
var DefaultBackoff = Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}

func (b Backoff) orDefault() Backoff {
	if b.Min <= 0 {
		b.Min = DefaultBackoff.Min
	}
	if b.Max < b.Min {
		b.Max = max(b.Min, DefaultBackoff.Max)
	}
	return b
}

func (b Backoff) next(d time.Duration) time.Duration {
	if d <= 0 {
		return b.Min
	}
	return min(2*d, b.Max)
}

// Poll calls check until it reports true, with backoff b between calls,
// or until ctx ends; a signal on wake (which may be nil) re-checks at once.
// Errors from check are retried: when ctx ends, Poll returns an error
// wrapping ctx.Err() with the last of them.
func Poll(ctx context.Context, b Backoff, wake <-chan struct{}, check func(context.Context) (bool, error)) error {
	b = b.orDefault()
	var lastErr error
	var d time.Duration
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		ok, err := check(ctx)
		if err == nil && ok {
			return nil
		}
		if err != nil && !errors.Is(err, ctx.Err()) {
			lastErr = err
		}
		d = b.next(d)
		t.Reset(d)
		select {
		case <-ctx.Done():
			return ctxErr(ctx, lastErr)
		case <-wake:
			t.Stop() // Go 1.23 timers: no stale value to drain
		case <-t.C:
		}
	}
}

func ctxErr(ctx context.Context, last error) error {
	if last != nil {
		return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
	}
	return ctx.Err()
}

// Tracker follows a replica's position: a number that only grows and that
// says how much of the primary's history the replica shows (a replication
// offset, a WAL replay position). However many barriers wait on one
// replica, a Tracker polls it with one loop, running only while someone
// waits, at Backoff.Min while the position moves and backing off to
// Backoff.Max while it stands still.
type Tracker struct {
	// Position reads the replica's current position.
	Position func(ctx context.Context) (uint64, error)
	// Backoff paces the polls; zero takes DefaultBackoff.
	Backoff Backoff
	// ReadTimeout bounds one Position call; zero means 2s.
	ReadTimeout time.Duration

	mu      sync.Mutex
	pos     uint64
	lastErr error
	// waiters are the positions waited for, lowest first, so that a poll
	// releases the waiters it satisfies without looking at the others
	// (thousands wait at once when a replica lags under load).
	waiters waitHeap
	running bool
	wake    chan struct{}
}

// waiting is one wait's position and what releases it: a channel Wait
// blocks on, or WaitFunc's callback.
type waiting struct {
	v    uint64
	ch   chan struct{}
	fn   func(error)
	stop func() bool // ends the watch on WaitFunc's ctx
	idx  int         // in the heap; -1 once released or removed
}

// release ends a wait the position reached, outside t.mu.
func (w *waiting) release(stop func() bool) {
	if w.fn == nil {
		close(w.ch)
		return
	}
	if stop != nil {
		stop()
	}
	w.fn(nil)
}

type waitHeap []*waiting

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].v < h[j].v }
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *waitHeap) Push(x any) {
	w := x.(*waiting)
	w.idx = len(*h)
	*h = append(*h, w)
}
func (h *waitHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.idx = -1
	return w
}

// Wake makes the poll loop, if running, read the position at once: a shim
// calls it when the store signals that something arrived, so waits are
// event-driven where the store allows and back off otherwise.
func (t *Tracker) Wake() {
	t.mu.Lock()
	w := t.wake
	t.mu.Unlock()
	if w != nil {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// Wait returns once the replica's position reaches v, or ctx ends.
func (t *Tracker) Wait(ctx context.Context, v uint64) error {
	t.mu.Lock()
	if t.pos >= v {
		t.mu.Unlock()
		return nil
	}
	w := &waiting{v: v, ch: make(chan struct{})}
	t.push(w)
	t.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		return t.withdraw(ctx, w) // nil if released as ctx ended
	}
}

// WaitFunc is Wait without a goroutine blocked on it: done(nil) is called
// once the replica's position reaches v, or done(err) once ctx ends, with
// the error Wait would return. done is called once, on no particular
// goroutine (before WaitFunc returns if the position is already there),
// and must not block: a poll loop shared by every wait calls it.
func (t *Tracker) WaitFunc(ctx context.Context, v uint64, done func(error)) {
	t.mu.Lock()
	if t.pos >= v {
		t.mu.Unlock()
		done(nil)
		return
	}
	w := &waiting{v: v, fn: done}
	t.push(w)
	t.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		if err := t.withdraw(ctx, w); err != nil {
			done(err) // else released as ctx ended: done was called
		}
	})
	t.mu.Lock()
	released := w.idx < 0
	if !released {
		w.stop = stop
	}
	t.mu.Unlock()
	if released {
		stop() // released before it could be told of the watch
	}
}

// push adds a wait and starts the poll loop if it is not running; t.mu
// is held.
func (t *Tracker) push(w *waiting) {
	heap.Push(&t.waiters, w)
	if !t.running {
		t.running = true
		if t.wake == nil {
			t.wake = make(chan struct{}, 1)
		}
		go t.loop(t.wake)
	}
}

// withdraw removes a wait whose ctx ended and returns its error, or nil
// if the position released it first.
func (t *Tracker) withdraw(ctx context.Context, w *waiting) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w.idx < 0 {
		return nil
	}
	heap.Remove(&t.waiters, w.idx)
	if t.lastErr != nil {
		return fmt.Errorf("%w (replica at position %d, waiting for %d; last error: %v)", ctx.Err(), t.pos, w.v, t.lastErr)
	}
	return fmt.Errorf("%w (replica at position %d, waiting for %d)", ctx.Err(), t.pos, w.v)
}

// Last returns the last position read.
func (t *Tracker) Last() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

// loop polls while anyone waits; it exits when the last waiter is released
// or gives up.
func (t *Tracker) loop(wake <-chan struct{}) {
	b := t.Backoff.orDefault()
	timeout := t.ReadTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	var d time.Duration
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		p, err := t.Position(ctx)
		cancel()
		t.mu.Lock()
		moved := false
		if err != nil {
			t.lastErr = err
		} else {
			t.lastErr = nil
			if p > t.pos {
				t.pos, moved = p, true
			}
		}
		var released []*waiting
		var stops []func() bool
		for len(t.waiters) > 0 && t.waiters[0].v <= t.pos {
			w := heap.Pop(&t.waiters).(*waiting)
			released = append(released, w)
			stops = append(stops, w.stop)
		}
		idle := len(t.waiters) == 0
		if idle {
			t.running = false
		}
		t.mu.Unlock()
		for i, w := range released {
			w.release(stops[i])
		}
		if idle {
			return
		}
		if moved {
			d = b.Min
		} else {
			d = b.next(d)
		}
		// d == 0 only right after a wake, and b.next(0) is b.Min.
		timer.Reset(d)
		select {
		case <-timer.C:
		case <-wake:
			timer.Stop()
			d = 0 // what woke us may land a moment later: poll from Min again
		}
	}
}

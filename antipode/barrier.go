package antipode

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// Waiter is a store shim's view of one replica of that store: Wait returns
// nil once w is visible there. It retries what fails transiently (a
// connection refused, a replica restarting) until ctx ends, and then
// returns an error that wraps ctx.Err() and says what it last saw.
// Waiters must not spin: they block on an event from the store, or poll
// with bounded backoff.
type Waiter interface {
	Wait(ctx context.Context, w WriteID) error
}

// AsyncWaiter is a Waiter that can also tell of a write's visibility with
// a callback, so that a barrier holds no goroutine while it waits: a
// service that keeps thousands of barriers waiting out a replication lag
// then pays for none of their stacks. WaitFunc calls done once, with what
// Wait would return, on no particular goroutine (before WaitFunc returns
// if the write is already visible); done must not block.
type AsyncWaiter interface {
	Waiter
	WaitFunc(ctx context.Context, w WriteID, done func(error))
}

// WaiterFunc adapts a function to Waiter.
type WaiterFunc func(ctx context.Context, w WriteID) error

// Wait calls f.
func (f WaiterFunc) Wait(ctx context.Context, w WriteID) error { return f(ctx, w) }

// Registry maps store names to the Waiters of the caller's local replicas.
// A process that is one service in one region uses Default; a process that
// plays several regions (a test, the benchmark) has a Registry per region.
type Registry struct {
	mu sync.RWMutex
	m  map[string]Waiter
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]Waiter{}} }

// Default is the registry the package-level Register and Barrier use.
var Default = NewRegistry()

// Register makes w the local replica of store, replacing any before it.
func (r *Registry) Register(store string, w Waiter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[store] = w
}

// Register makes w the local replica of store in Default.
func Register(store string, w Waiter) { Default.Register(store, w) }

// Barrier waits until every write in ctx's lineage is visible in this
// process's local replica of its store, as Default knows them.
func Barrier(ctx context.Context) error { return Default.Barrier(ctx) }

// ErrNoWaiter is returned (wrapped in a *BarrierError) for a write whose
// store has no Waiter registered: the barrier cannot tell when it is
// visible, and will not pretend it is.
var ErrNoWaiter = errors.New("no waiter registered for the store")

// Barrier waits until every write in ctx's lineage is visible in the local
// replica of its store, waiting for all of them at once. It returns nil at
// once for a context without a lineage. Give ctx a deadline: when it
// passes, Barrier returns a *BarrierError naming the writes not yet
// visible, which wraps ctx.Err() (errors.Is(err,
// context.DeadlineExceeded) holds).
func (r *Registry) Barrier(ctx context.Context) error {
	ws := FromContext(ctx).Writes()
	if len(ws) == 0 {
		return nil
	}
	waiters, err := r.waitersFor(ws)
	if err != nil {
		return err
	}
	if len(ws) == 1 {
		if err := waiters[0].Wait(ctx, ws[0]); err != nil {
			return &BarrierError{Total: 1, Pending: []Pending{{Write: ws[0], Err: err}}}
		}
		return nil
	}
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = waiters[i].Wait(ctx, w)
		}()
	}
	wg.Wait()
	return barrierErr(ws, errs)
}

// waitersFor returns the Waiter of each write's store, or a
// *BarrierError naming the writes whose store has none.
func (r *Registry) waitersFor(ws []WriteID) ([]Waiter, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	waiters := make([]Waiter, len(ws))
	var missing []Pending
	for i, w := range ws {
		if waiters[i] = r.m[w.Store]; waiters[i] == nil {
			missing = append(missing, Pending{Write: w, Err: fmt.Errorf("%w %q", ErrNoWaiter, w.Store)})
		}
	}
	if missing != nil {
		return nil, &BarrierError{Total: len(ws), Pending: missing}
	}
	return waiters, nil
}

// barrierErr is a barrier's result from each write's wait: nil, or a
// *BarrierError naming the writes whose wait failed.
func barrierErr(ws []WriteID, errs []error) error {
	var pending []Pending
	for i, err := range errs {
		if err != nil {
			pending = append(pending, Pending{Write: ws[i], Err: err})
		}
	}
	if pending != nil {
		return &BarrierError{Total: len(ws), Pending: pending}
	}
	return nil
}

// BarrierFunc is Barrier without blocking: it calls done once, with what
// Barrier would return, when every write in ctx's lineage is visible or
// ctx ends. The waits of AsyncWaiters hold no goroutine; another Waiter's
// wait holds one. done runs on no particular goroutine (before
// BarrierFunc returns if nothing needs waiting for) and must not block.
func (r *Registry) BarrierFunc(ctx context.Context, done func(error)) {
	ws := FromContext(ctx).Writes()
	if len(ws) == 0 {
		done(nil)
		return
	}
	waiters, err := r.waitersFor(ws)
	if err != nil {
		done(err)
		return
	}
	errs := make([]error, len(ws))
	var left atomic.Int32
	left.Store(int32(len(ws)))
	for i, w := range ws {
		one := func(err error) {
			errs[i] = err
			if left.Add(-1) == 0 {
				done(barrierErr(ws, errs))
			}
		}
		if aw, ok := waiters[i].(AsyncWaiter); ok {
			aw.WaitFunc(ctx, w, one)
			continue
		}
		go func() { one(waiters[i].Wait(ctx, w)) }()
	}
}

// Pending is a write a barrier could not see, and why.
type Pending struct {
	Write WriteID
	Err   error
}

// BarrierError is what Barrier returns when some writes did not become
// visible: it names them, each with its shim's last word.
type BarrierError struct {
	Total   int // writes in the lineage
	Pending []Pending
}

func (e *BarrierError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "antipode barrier: %d of %d writes not visible in the local replica: ", len(e.Pending), e.Total)
	const show = 5
	for i, p := range e.Pending {
		if i == show {
			fmt.Fprintf(&b, "; and %d more", len(e.Pending)-show)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s (%v)", p.Write, p.Err)
	}
	return b.String()
}

// Unwrap returns each pending write's error, so errors.Is finds
// context.DeadlineExceeded or ErrNoWaiter.
func (e *BarrierError) Unwrap() []error {
	out := make([]error, len(e.Pending))
	for i, p := range e.Pending {
		out[i] = p.Err
	}
	return out
}

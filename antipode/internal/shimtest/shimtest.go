// Package shimtest is the workload every store shim's test runs against a
// real primary and a lagging replica: reads right after a write miss it
// (so the test can fail), reads after the barrier never do.
package shimtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"tide/antipode"
)

// Store is one store as the workload sees it.
type Store struct {
	Name string
	// Write writes key on the primary (region A) and returns its WriteID.
	Write func(ctx context.Context, key string) (antipode.WriteID, error)
	// Read reads key from the replica (region B): found or not.
	Read func(ctx context.Context, key string) (bool, error)
	// Replica is the shim's Waiter on the replica.
	Replica antipode.Waiter
	// Lag is the replication lag injected.
	Lag time.Duration
}

// Run writes n keys, each followed at once by a read of the replica
// without a barrier, and n more, each read after a barrier. It fails the
// test unless some reads without the barrier missed and none with it did.
func Run(t *testing.T, s Store, n int) {
	t.Helper()
	reg := antipode.NewRegistry()
	reg.Register(s.Name, s.Replica)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prefix := fmt.Sprintf("shimtest-%d-", time.Now().UnixNano())

	var mu sync.Mutex
	var errs []error
	missedWithout, missedWith := 0, 0
	var wg sync.WaitGroup
	for i := range 2 * n {
		barrier := i >= n
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("%s%d", prefix, i)
			fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
			id, err := s.Write(ctx, key)
			if err != nil {
				fail(err)
				return
			}
			if id.Store != s.Name {
				fail(fmt.Errorf("write of %s returned store %q, want %q", key, id.Store, s.Name))
				return
			}
			rctx := antipode.Write(ctx, id)
			if barrier {
				bctx, bcancel := context.WithTimeout(rctx, 30*time.Second+20*s.Lag)
				err := reg.Barrier(bctx)
				bcancel()
				if err != nil {
					fail(err)
					return
				}
			}
			found, err := s.Read(ctx, key)
			if err != nil {
				fail(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !found && barrier {
				missedWith++
			} else if !found {
				missedWithout++
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	t.Logf("%s: %d of %d reads missed the write without a barrier, %d of %d with it (lag %v)", s.Name, missedWithout, n, missedWith, n, s.Lag)
	if missedWith > 0 {
		t.Errorf("%d reads after the barrier did not see their write", missedWith)
	}
	if missedWithout == 0 {
		t.Errorf("no read without the barrier missed its write: the lag of %v was not injected, so this test cannot fail", s.Lag)
	}
}

// Unreachable checks that a barrier whose only store cannot be reached
// returns the deadline error naming the write.
func Unreachable(t *testing.T, name string, w antipode.Waiter) {
	t.Helper()
	reg := antipode.NewRegistry()
	reg.Register(name, w)
	id := antipode.WriteID{Store: name, Key: "k", Version: 1}
	ctx, cancel := context.WithTimeout(antipode.Write(context.Background(), id), 300*time.Millisecond)
	defer cancel()
	err := reg.Barrier(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("barrier on an unreachable %s: %v, want the deadline error", name, err)
	}
	if !strings.Contains(err.Error(), id.String()) || !strings.Contains(err.Error(), "last error") {
		t.Fatalf("error %q does not name the write and the store's error", err)
	}
	t.Log(err)
}

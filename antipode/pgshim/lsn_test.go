package pgshim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// fakePrimary's WAL position grows by one at every commit; its
// pg_current_wal_lsn() answers after a while, as a loaded server would.
type fakePrimary struct {
	wal     atomic.Uint64
	queries atomic.Int64
	fail    atomic.Bool
}

type lsnRow struct {
	lsn uint64
	err error
}

func (r lsnRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	*dest[0].(*string) = FormatLSN(r.lsn)
	return nil
}

func (f *fakePrimary) QueryRow(ctx context.Context, sql string, _ ...any) pgx.Row {
	f.queries.Add(1)
	lsn := f.wal.Load() // the position when the query starts
	time.Sleep(2 * time.Millisecond)
	if f.fail.Load() {
		return lsnRow{err: errors.New("connection reset")}
	}
	return lsnRow{lsn: lsn}
}

func (f *fakePrimary) Exec(ctx context.Context, sql string, _ ...any) (pgconn.CommandTag, error) {
	f.wal.Add(1)
	return pgconn.CommandTag{}, nil
}

// TestCommittedShared: 200 concurrent writes each get an LSN that covers
// their own commit, from far fewer than 200 queries; a failing query is
// every waiting caller's error.
func TestCommittedShared(t *testing.T) {
	f := &fakePrimary{}
	w := &Writer{DB: f, Store: "posts"}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprint(i)
			if _, err := f.Exec(ctx, "INSERT"); err != nil {
				errs <- err
				return
			}
			committed := f.wal.Load() // at least this write's own position
			id, err := w.Committed(ctx, key)
			if err != nil {
				errs <- err
				return
			}
			if id.Version < committed || id.Key != key || id.Store != "posts" {
				errs <- fmt.Errorf("write %s at WAL %d got %+v", key, committed, id)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if q := f.queries.Load(); q >= 200 {
		t.Errorf("%d queries for 200 concurrent writes: not shared", q)
	}
	f.fail.Store(true)
	if _, err := w.Committed(ctx, "x"); err == nil {
		t.Error("a failed query gave an LSN")
	}
	// A caller whose context ends stops waiting.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := w.Committed(cctx, "y"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
}

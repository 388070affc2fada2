// Package pgshim is antipode's shim for PostgreSQL with streaming
// replication. A write's version is the primary's WAL position (LSN) once
// the write has committed; a standby shows the write once it has replayed
// WAL through that position (pg_last_wal_replay_lsn). This is the same
// token PostgreSQL's own tools compare, and it holds for any transaction,
// whatever tables it touched.
//
// A standby cannot LISTEN, so a Waiter polls the replay position with one
// loop per standby shared by every barrier, backing off while it stands
// still.
package pgshim

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"tide/antipode"
)

// Querier is what pgshim needs of a connection: *pgx.Conn, *pgxpool.Pool
// and pgx.Tx all have it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Writer writes to a primary and returns the WriteIDs of its writes.
type Writer struct {
	DB Querier
	// Store is the name lineages use for this database.
	Store string

	lsn lsnGroup
}

// Exec runs one statement in its own transaction and returns the
// identifier of the write, named key (a row's key, say).
func (w *Writer) Exec(ctx context.Context, key, sql string, args ...any) (antipode.WriteID, error) {
	if _, err := w.DB.Exec(ctx, sql, args...); err != nil {
		return antipode.WriteID{}, fmt.Errorf("postgres write %q: %w", key, err)
	}
	return w.Committed(ctx, key)
}

// Committed returns an identifier for key that covers every transaction
// committed so far: call it after committing a transaction of your own.
//
// Concurrent calls share queries: a call waits for the next
// pg_current_wal_lsn() to start (one that started before it was called
// might not cover its commit), and every call waiting then takes that
// query's answer. Under load that is one query per round trip to the
// primary rather than one per write, for at most one more round trip of
// latency.
func (w *Writer) Committed(ctx context.Context, key string) (antipode.WriteID, error) {
	lsn, err := w.lsn.get(ctx, w.DB)
	if err != nil {
		return antipode.WriteID{}, fmt.Errorf("postgres write %q: %w", key, err)
	}
	return antipode.WriteID{Store: w.Store, Key: key, Version: lsn}, nil
}

// lsnGroup coalesces the concurrent CurrentLSN queries of a Writer.
type lsnGroup struct {
	mu      sync.Mutex
	next    *lsnCall // the query the callers so far wait for, not started
	running bool     // a goroutine runs queries while callers wait
}

type lsnCall struct {
	done chan struct{}
	lsn  uint64
	err  error
}

// lsnQueryTimeout bounds one shared query; each caller's own context
// bounds its wait.
const lsnQueryTimeout = 30 * time.Second

func (g *lsnGroup) get(ctx context.Context, q Querier) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("pg_current_wal_lsn: %w", err)
	}
	g.mu.Lock()
	c := g.next
	if c == nil {
		c = &lsnCall{done: make(chan struct{})}
		g.next = c
		if !g.running {
			g.running = true
			go g.run(q)
		}
	}
	g.mu.Unlock()
	select {
	case <-c.done:
		return c.lsn, c.err
	case <-ctx.Done():
		return 0, fmt.Errorf("pg_current_wal_lsn: %w", ctx.Err())
	}
}

// run starts the next query once the last has answered, while anyone
// waits: a query taken from next starts after every caller that joined it.
func (g *lsnGroup) run(q Querier) {
	for {
		g.mu.Lock()
		c := g.next
		if c == nil {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.next = nil
		g.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), lsnQueryTimeout)
		c.lsn, c.err = CurrentLSN(ctx, q)
		cancel()
		close(c.done)
	}
}

// CurrentLSN returns the primary's WAL write position, which is past the
// commit record of every transaction already committed.
func CurrentLSN(ctx context.Context, q Querier) (uint64, error) {
	var s string
	if err := q.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		return 0, fmt.Errorf("pg_current_wal_lsn: %w", err)
	}
	return ParseLSN(s)
}

// ReplayedLSN returns how much WAL the server shows: the replayed position
// on a standby, the write position on a primary.
func ReplayedLSN(ctx context.Context, q Querier) (uint64, error) {
	var s *string
	err := q.QueryRow(ctx, `SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text`).Scan(&s)
	if err != nil {
		return 0, fmt.Errorf("pg_last_wal_replay_lsn: %w", err)
	}
	if s == nil {
		return 0, nil // a standby that has replayed nothing yet
	}
	return ParseLSN(*s)
}

// ParseLSN parses PostgreSQL's text form of a WAL position, "16/B374D848".
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad LSN %q", s)
	}
	return h<<32 | l, nil
}

// FormatLSN is the inverse of ParseLSN.
func FormatLSN(v uint64) string {
	return fmt.Sprintf("%X/%X", v>>32, uint32(v))
}

// Waiter tells when writes are visible in one server, standby or primary.
type Waiter struct {
	t antipode.Tracker
}

// NewWaiter returns a Waiter for the server q talks to; b paces its polls
// (zero: antipode.DefaultBackoff).
func NewWaiter(q Querier, b antipode.Backoff) *Waiter {
	w := &Waiter{}
	w.t = antipode.Tracker{Backoff: b, Position: func(ctx context.Context) (uint64, error) { return ReplayedLSN(ctx, q) }}
	return w
}

// Wait implements antipode.Waiter.
func (w *Waiter) Wait(ctx context.Context, id antipode.WriteID) error {
	return w.t.Wait(ctx, id.Version)
}

// WaitFunc implements antipode.AsyncWaiter.
func (w *Waiter) WaitFunc(ctx context.Context, id antipode.WriteID, done func(error)) {
	w.t.WaitFunc(ctx, id.Version, done)
}

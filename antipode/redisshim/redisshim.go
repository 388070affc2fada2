// Package redisshim is antipode's shim for Redis with replicas. A write's
// version is the primary's replication offset once the write is in its
// replication stream; a replica shows the write once the offset it has
// processed (ROLE's offset, INFO replication's slave_repl_offset) reaches
// that version.
//
// The version is per server, not per key, so a wait may also wait for
// writes that came just after, never less than needed. Redis has no
// notification of replication progress that a client can block on, so a
// Waiter polls ROLE with one loop per replica shared by every barrier,
// backing off while the offset stands still.
package redisshim

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"tide/antipode"
)

// Writer writes to a primary and returns the WriteIDs of its writes. It
// must not be copied once used.
type Writer struct {
	Client *redis.Client
	// Store is the name lineages use for this store.
	Store string

	inflight atomic.Int64 // Sets under way
	mu       sync.Mutex
	next     *offsetAsk // the ROLE the next Sets share, not sent yet
	asking   bool       // roleLoop runs
}

// offsetAsk is a ROLE shared by the Sets that completed before it left.
type offsetAsk struct {
	done chan struct{}
	off  uint64
	err  error
}

// Set sets key to value and returns the write's identifier: the primary's
// replication offset from a ROLE that Redis ran after the SET, once the
// SET was in its replication stream. (ROLE answers the offset as an
// integer; INFO replication, which says the same, formats a dozen fields
// as text for Redis to build and the client to parse.) A lone Set sends
// its SET and a ROLE in one round trip. Sets under way together share
// ROLEs instead: each SET completes, then waits for the next ROLE to
// leave, one at a time, so that under load a ROLE answers for every SET
// that completed while the one before it was on its way.
func (w *Writer) Set(ctx context.Context, key string, value []byte, ttl time.Duration) (antipode.WriteID, error) {
	n := w.inflight.Add(1)
	defer w.inflight.Add(-1)
	if n > 1 {
		if err := w.Client.Set(ctx, key, value, ttl).Err(); err != nil {
			return antipode.WriteID{}, fmt.Errorf("redis set %q: %w", key, err)
		}
		off, err := w.offsetAfter(ctx)
		if err != nil {
			return antipode.WriteID{}, fmt.Errorf("redis set %q: replication offset: %w", key, err)
		}
		return antipode.WriteID{Store: w.Store, Key: key, Version: off}, nil
	}
	pipe := w.Client.Pipeline()
	set := pipe.Set(ctx, key, value, ttl)
	role := pipe.Do(ctx, "ROLE")
	if _, err := pipe.Exec(ctx); err != nil {
		return antipode.WriteID{}, fmt.Errorf("redis set %q: %w", key, err)
	}
	if err := set.Err(); err != nil {
		return antipode.WriteID{}, fmt.Errorf("redis set %q: %w", key, err)
	}
	off, err := RoleOffset(role.Val())
	if err != nil {
		return antipode.WriteID{}, fmt.Errorf("redis set %q: replication offset: %w", key, err)
	}
	return antipode.WriteID{Store: w.Store, Key: key, Version: off}, nil
}

// offsetAfter returns the primary's offset from a ROLE sent after the
// call began: it covers every write completed before.
func (w *Writer) offsetAfter(ctx context.Context) (uint64, error) {
	w.mu.Lock()
	if w.next == nil {
		w.next = &offsetAsk{done: make(chan struct{})}
	}
	a := w.next
	if !w.asking {
		w.asking = true
		go w.roleLoop()
	}
	w.mu.Unlock()
	select {
	case <-a.done:
		return a.off, a.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// roleLoop sends the shared ROLEs, one at a time, while Sets wait for
// one.
func (w *Writer) roleLoop() {
	for {
		w.mu.Lock()
		a := w.next
		w.next = nil
		if a == nil {
			w.asking = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		// Every Set that joined a completed its SET first: this ROLE
		// leaves after all of them.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		a.off, a.err = Offset(ctx, w.Client)
		cancel()
		close(a.done)
	}
}

// Version returns an identifier for key covering every write the primary
// has acknowledged so far: call it after writes made some other way
// (MULTI, Lua, a pipeline of your own) to record them.
func (w *Writer) Version(ctx context.Context, key string) (antipode.WriteID, error) {
	off, err := Offset(ctx, w.Client)
	if err != nil {
		return antipode.WriteID{}, err
	}
	return antipode.WriteID{Store: w.Store, Key: key, Version: off}, nil
}

// Waiter tells when writes are visible in one server: a replica, or the
// primary itself for a reader in the writer's region.
type Waiter struct {
	t antipode.Tracker
}

// NewWaiter returns a Waiter for the server c talks to. b paces its polls
// (zero: antipode.DefaultBackoff).
func NewWaiter(c *redis.Client, b antipode.Backoff) *Waiter {
	w := &Waiter{}
	w.t = antipode.Tracker{Backoff: b, Position: func(ctx context.Context) (uint64, error) { return Offset(ctx, c) }}
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

// Offset returns how much of the primary's replication stream the server
// shows: on a replica the offset it has processed (INFO's
// slave_repl_offset), on a primary its master_repl_offset. It asks ROLE.
func Offset(ctx context.Context, c *redis.Client) (uint64, error) {
	v, err := c.Do(ctx, "ROLE").Result()
	if err != nil {
		return 0, fmt.Errorf("redis role: %w", err)
	}
	return RoleOffset(v)
}

// RoleOffset reads the replication offset from ROLE's answer: ["master",
// offset, replicas] or ["slave", host, port, state, offset] (-1 before the
// replica has synchronized: 0, nothing shown).
func RoleOffset(v any) (uint64, error) {
	a, ok := v.([]any)
	if !ok || len(a) == 0 {
		return 0, fmt.Errorf("redis role: answer %v: want an array", v)
	}
	var off any
	switch role, _ := a[0].(string); {
	case role == "master" && len(a) >= 2:
		off = a[1]
	case role == "slave" && len(a) >= 5:
		off = a[4]
	default:
		return 0, fmt.Errorf("redis role: answer %v: want a master or a replica", v)
	}
	n, ok := off.(int64)
	if !ok {
		return 0, fmt.Errorf("redis role: offset %v: want an integer", off)
	}
	if n < 0 {
		return 0, nil
	}
	return uint64(n), nil
}

// ParseInfo parses the field:value lines of Redis's INFO.
func ParseInfo(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = v
		}
	}
	return m
}

// InfoUint reads a numeric INFO field.
func InfoUint(m map[string]string, field string) (uint64, error) {
	v, ok := m[field]
	if !ok {
		return 0, errors.New("INFO has no " + field)
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("INFO %s=%q: %w", field, v, err)
	}
	return n, nil
}

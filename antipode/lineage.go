// Package antipode gives services cross-service causal consistency: a
// request carries a lineage, the identifiers of the writes it depends on,
// and Barrier waits until every one of them is visible in this process's
// local replica of each store before the request reads.
//
// The anomaly it prevents: a writer stores a post in one store and then
// publishes a notification through another; a reader in another region
// receives the notification before its replica of the post store has the
// post, and answers "not found". With antipode the writer records the
// post's write in the request's lineage, the lineage travels with the
// notification (a header or message attribute), and the reader calls
// Barrier before it reads.
//
// Each store has a shim (antipode/redisshim, antipode/pgshim,
// antipode/natsshim, antipode/logshim): its write helpers return the
// WriteID of what they wrote, and its Waiter tells when a WriteID is
// visible in a given replica. A Registry maps store names to the waiters of
// the caller's local replicas.
package antipode

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// WriteID identifies one write: the store it went to (a name the services
// agree on, such as "posts"), the key it wrote, and a version that the
// store's shim can compare against what a replica holds. Versions of one
// store and key are ordered: a replica that shows version v of a key also
// shows every earlier one, so a lineage keeps only the newest.
//
// What the version means is the shim's business: a replication offset for
// Redis, a WAL position (LSN) for PostgreSQL, a stream sequence for NATS
// JetStream, a slot for the tide log.
//
// Origin, when not 0, names the writer whose sequence Version is from,
// for stores whose replicas learn how far each writer has replicated (a
// watermark): the tide store's node incarnation that coordinated the
// write (X-Tide-Origin). A shim that has it may wait for the writer's
// watermark to pass Version instead of reading the key.
type WriteID struct {
	Store   string
	Key     string
	Version uint64
	Origin  uint64
}

// String returns store/key@version, the form errors use.
func (w WriteID) String() string {
	return fmt.Sprintf("%s/%s@%d", w.Store, w.Key, w.Version)
}

// Lineage is a set of WriteIDs: the writes a request depends on. It is
// safe for concurrent use, because the goroutines of one request may write
// to it at once. The zero value is an empty lineage.
type Lineage struct {
	mu     sync.Mutex
	writes []WriteID // sorted by store, key; one entry per (store, key)
}

// NewLineage returns a lineage holding ws.
func NewLineage(ws ...WriteID) *Lineage {
	l := &Lineage{}
	for _, w := range ws {
		l.Add(w)
	}
	return l
}

func compareIDs(a, b WriteID) int {
	if c := strings.Compare(a.Store, b.Store); c != 0 {
		return c
	}
	return strings.Compare(a.Key, b.Key)
}

// Add records a write. If the lineage already holds the same store and key,
// the newer version is kept.
func (l *Lineage) Add(w WriteID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, found := slices.BinarySearchFunc(l.writes, w, compareIDs)
	if found {
		if cur := &l.writes[i]; w.Version > cur.Version || (w.Version == cur.Version && cur.Origin == 0) {
			cur.Version, cur.Origin = w.Version, w.Origin
		}
		return
	}
	l.writes = slices.Insert(l.writes, i, w)
}

// Merge adds every write of o.
func (l *Lineage) Merge(o *Lineage) {
	if o == nil || o == l {
		return
	}
	for _, w := range o.Writes() {
		l.Add(w)
	}
}

// Writes returns a copy of the writes, ordered by store and key.
func (l *Lineage) Writes() []WriteID {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.writes)
}

// Len returns the number of writes.
func (l *Lineage) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.writes)
}

// String lists the writes, for logs.
func (l *Lineage) String() string {
	ws := l.Writes()
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = w.String()
	}
	return "[" + strings.Join(parts, " ") + "]"
}

type ctxKey struct{}

// NewContext returns ctx carrying l.
func NewContext(ctx context.Context, l *Lineage) context.Context {
	return context.WithValue(ctx, ctxKey{}, l)
}

// FromContext returns the lineage ctx carries, or nil.
func FromContext(ctx context.Context) *Lineage {
	l, _ := ctx.Value(ctxKey{}).(*Lineage)
	return l
}

// Write records w in ctx's lineage and returns a context carrying it: ctx
// itself when it already has a lineage (which then gains w, for everyone
// holding ctx), otherwise a child of ctx with a new lineage.
func Write(ctx context.Context, w WriteID) context.Context {
	if l := FromContext(ctx); l != nil {
		l.Add(w)
		return ctx
	}
	return NewContext(ctx, NewLineage(w))
}

// Transfer returns dst carrying the writes of both dst's and src's
// lineages: how a lineage moves from one request to another, such as from
// the request that received a notification to the requests it makes. dst's
// own lineage, if any, is not changed; the result carries a new one.
func Transfer(dst, src context.Context) context.Context {
	from := FromContext(src)
	if from == nil {
		return dst
	}
	l := NewLineage(FromContext(dst).Writes()...)
	l.Merge(from)
	return NewContext(dst, l)
}

// sortedStores returns the distinct store names of ws in order.
func sortedStores(ws []WriteID) []string {
	var out []string
	for _, w := range ws {
		if n := len(out); n == 0 || out[n-1] != w.Store {
			out = append(out, w.Store)
		}
	}
	slices.SortFunc(out, cmp.Compare[string])
	return slices.Compact(out)
}

package kvserver

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tide/kv"
)

// keyWatch lets readers wait for a key to be written on this node
// (GET /kv/KEY?version=V&wait=D, POST /kv-wait): the KV loop fires the
// watches of the keys each round stored, once they are committed.
type keyWatch struct {
	n  atomic.Int64 // watches registered, so that the loop skips fire when none
	mu sync.Mutex
	m  map[string][]*watcher
}

// watcher is one registered watch: ch is closed at the next write of the
// key stored here, and v is then that write's version.
type watcher struct {
	ch chan struct{}
	v  uint64 // set before ch is closed
}

// add registers a watch on key.
func (w *keyWatch) add(key string) *watcher {
	wr := &watcher{ch: make(chan struct{})}
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string][]*watcher{}
	}
	w.m[key] = append(w.m[key], wr)
	w.mu.Unlock()
	w.n.Add(1)
	return wr
}

// remove drops a watch that has not fired.
func (w *keyWatch) remove(key string, wr *watcher) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ws := w.m[key]
	for i, c := range ws {
		if c == wr {
			ws[i] = ws[len(ws)-1]
			ws[len(ws)-1] = nil
			ws = ws[:len(ws)-1]
			w.n.Add(-1)
			break
		}
	}
	if len(ws) == 0 {
		delete(w.m, key)
	} else {
		w.m[key] = ws
	}
}

// fire wakes the watches of the keys ops store, each with the version
// stored.
func (w *keyWatch) fire(ops []kv.PersistOp) {
	if w.n.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, op := range ops {
		if op.Put == nil {
			continue
		}
		if ws, ok := w.m[string(op.Put.Key)]; ok {
			for _, c := range ws {
				c.v = op.Put.Version
				close(c.ch)
			}
			w.n.Add(-int64(len(ws)))
			delete(w.m, string(op.Put.Key))
		}
	}
}

// watchRecheck bounds how long a waiting read goes without reading again
// on a node that is not one of the key's replicas: it sees no write to
// wake it.
const watchRecheck = 20 * time.Millisecond

// watchRecheckReplica bounds it on one of the key's replicas. There a
// write of the key wakes the read, with the version stored, and only a
// version at or above the one waited for is worth a quorum read: so a
// read waiting out a cross-region lag costs one quorum read, the one the
// arriving write wakes. The timer is only for a write
// that reached the key's other replicas and not this one (a message
// lost while W was met without it, or the ring moved): it bounds the
// extra wait then. Re-reading every 20 ms, then with backoff from 20 ms,
// cost a quorum read per waiting read every few tens of ms: under a
// barrier's load (hundreds of reads waiting out a cross-region lag)
// that was most of the nodes' CPU.
const watchRecheckReplica = time.Second

// MaxWait bounds the wait a read may ask for.
const MaxWait = time.Minute

// GetAtLeast reads key (R overrides the read quorum when > 0) until the
// read returns version want or newer, or wait passes (then it returns
// what the last read found). On one of the key's replicas it reads at
// quorum only once this node holds version want or newer (it looks
// first, then waits for a write of the key at that version to land
// here), and every watchRecheckReplica in case the write reached the
// key's other replicas only; elsewhere it reads at once and then every
// watchRecheck. Only a quorum read releases it: a version stored here is
// not yet one a read at the region's quorum is sure to return.
func (k *Server) GetAtLeast(ctx context.Context, key []byte, r int, want uint64, wait time.Duration) (kv.Record, bool, error) {
	return k.StartWait(key, want).Result(ctx, r, wait)
}

// Wait is a GetAtLeast begun: StartWait registers it and looks in this
// node's storage, Result waits. A caller with many waits starts them
// all in one goroutine and waits for each in one of its own, which then
// only waits (the look goes deep into storage: thousands of fresh
// goroutines each growing its stack for it cost more than the look).
type Wait struct {
	k    *Server
	key  []byte
	want uint64
	wr   *watcher // registered before the look: a write landing after it fires the watch
	read bool     // whether the first step reads at quorum
}

// StartWait begins a GetAtLeast of key for version want; its Result must
// be called.
func (k *Server) StartWait(key []byte, want uint64) *Wait {
	w := &Wait{k: k, key: key, want: want, wr: k.watch.add(string(key))}
	w.read = !k.replicaOf(key) || k.holds(key, want)
	return w
}

// Result waits as GetAtLeast does, up to wait from now.
func (w *Wait) Result(ctx context.Context, r int, wait time.Duration) (kv.Record, bool, error) {
	k, key, want := w.k, w.key, w.want
	deadline := time.Now().Add(min(wait, MaxWait))
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var rec kv.Record
	var found bool
	wr, read, readAny := w.wr, w.read, false
	for {
		if wr == nil {
			wr = k.watch.add(string(key))
		}
		if read {
			var err error
			rec, found, err = k.Get(ctx, key, r)
			readAny = true
			if err != nil || rec.Version >= want {
				k.watch.remove(string(key), wr)
				return rec, found, err
			}
		}
		left := time.Until(deadline)
		if left <= 0 && readAny {
			k.watch.remove(string(key), wr)
			return rec, found, nil
		}
		recheck := watchRecheck
		if k.replicaOf(key) {
			recheck = watchRecheckReplica
		}
		t.Reset(max(0, min(left, recheck)))
		select {
		case <-wr.ch:
			// An older write of the key changes nothing a quorum read
			// would answer for want.
			read = wr.v >= want
		case <-t.C:
			read = true
		case <-ctx.Done():
		}
		t.Stop()
		k.watch.remove(string(key), wr) // no-op once fired
		wr = nil
		if ctx.Err() != nil {
			return rec, found, ctx.Err()
		}
	}
}

// holds reports whether this node's storage holds key at version want
// or newer (a failed look says no: the timer's read covers it).
func (k *Server) holds(key []byte, want uint64) bool {
	rec, ok, err := k.n.eng.KV().Get(key)
	return err == nil && ok && rec.Version >= want
}

// Watches counts the reads waiting for a key to be written
// (GetAtLeast).
func (k *Server) Watches() int64 { return k.watch.n.Load() }

// replicaOf reports whether this node is on key's preference list in
// the member table requests are routed by.
func (k *Server) replicaOf(key []byte) bool {
	r := k.Applied()
	if r == nil {
		return false
	}
	return slices.Contains(r.Preference(r.Position(key), k.n.cfg.KV.N), k.n.cfg.Self)
}

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
// (GET /kv/KEY?version=V&wait=D): the KV loop fires the watches of the
// keys each round stored, once they are committed.
type keyWatch struct {
	n  atomic.Int64 // watches registered, so that the loop skips fire when none
	mu sync.Mutex
	m  map[string][]chan struct{}
}

// add registers a watch on key; its channel is closed at the next write
// of the key stored here.
func (w *keyWatch) add(key string) chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	if w.m == nil {
		w.m = map[string][]chan struct{}{}
	}
	w.m[key] = append(w.m[key], ch)
	w.mu.Unlock()
	w.n.Add(1)
	return ch
}

// remove drops a watch that has not fired.
func (w *keyWatch) remove(key string, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	chs := w.m[key]
	for i, c := range chs {
		if c == ch {
			chs[i] = chs[len(chs)-1]
			chs = chs[:len(chs)-1]
			w.n.Add(-1)
			break
		}
	}
	if len(chs) == 0 {
		delete(w.m, key)
	} else {
		w.m[key] = chs
	}
}

// fire wakes the watches of the keys ops store.
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
		if chs, ok := w.m[string(op.Put.Key)]; ok {
			for _, c := range chs {
				close(c)
			}
			w.n.Add(-int64(len(chs)))
			delete(w.m, string(op.Put.Key))
		}
	}
}

// watchRecheck bounds how long a waiting read goes without reading again
// on a node that is not one of the key's replicas: it sees no write to
// wake it.
const watchRecheck = 20 * time.Millisecond

// watchRecheckReplica bounds it on one of the key's replicas, which a
// write of the key wakes: it reads again only in case the write reached
// the key's other replicas and not this one (it was down, or the ring
// moved), after 20 ms, then twice as long each time up to this.
// Re-reading every 20 ms cost a quorum read per waiting read every 20 ms:
// under a barrier's load (hundreds of reads waiting out a cross-region
// lag) that was most of the nodes' CPU.
const watchRecheckReplica = time.Second

// MaxWait bounds the wait a read may ask for.
const MaxWait = time.Minute

// GetAtLeast reads key (R overrides the read quorum when > 0) until the
// read returns version want or newer, or wait passes (then it returns
// what the last read found). It re-reads whenever this node stores a
// write of the key, and otherwise every watchRecheck, or, on one of the
// key's replicas, with backoff up to watchRecheckReplica.
func (k *Server) GetAtLeast(ctx context.Context, key []byte, r int, want uint64, wait time.Duration) (kv.Record, bool, error) {
	deadline := time.Now().Add(min(wait, MaxWait))
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	recheck := watchRecheck
	for {
		ch := k.watch.add(string(key))
		rec, found, err := k.Get(ctx, key, r)
		left := time.Until(deadline)
		if err != nil || rec.Version >= want || left <= 0 {
			k.watch.remove(string(key), ch)
			return rec, found, err
		}
		t.Reset(min(left, recheck))
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		k.watch.remove(string(key), ch)
		if ctx.Err() != nil {
			return rec, found, ctx.Err()
		}
		if k.replicaOf(key) {
			recheck = min(2*recheck, watchRecheckReplica)
		} else {
			recheck = watchRecheck
		}
	}
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

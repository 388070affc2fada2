package kvserver

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"

	"tide/kv"
)

// Replication watermarks (kv/regions.go): the nodes of other regions
// send this node, per incarnation (origin), the version up to which every
// client write that incarnation coordinated is held by a write quorum of
// this region. A reader here that knows a write's origin (the
// X-Tide-Origin of its answer) waits for the origin's mark to pass the
// write's version: no read, and one call for every wait a mark passes
// (AddMarkWait). The loop raises the marks of each round's Ready.

// markStale is how long a mark may stand still while a wait needs it to
// move before the wait gives up on it (MarkStale, and the caller reads
// instead): its origin has stopped (crashed, restarted as a
// new one, cut off) or one of its writes is stuck.
const markStale = 5 * time.Second

// markForget is how long the mark of an origin that no longer moves and
// that nothing waits for is kept.
const markForget = 10 * time.Minute

// markTable holds the marks of every origin heard from.
type markTable struct {
	mu    sync.Mutex
	m     map[uint64]*originMark
	swept time.Time
	// subs are told, without blocking, that a mark rose (SubscribeMarks).
	subs map[chan struct{}]struct{}
}

// originMark is one origin's mark, and the waits for it to pass a
// version.
type originMark struct {
	v       uint64
	moved   time.Time // when v last rose
	waiters []*markWaiter
}

// markWaiter is one wait: fire is called once the mark reaches want.
type markWaiter struct {
	want uint64
	fire func()
}

// raise records marks received, and releases the waits they pass.
func (t *markTable) raise(ms []kv.RegionMark, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[uint64]*originMark{}
	}
	for _, m := range ms {
		om := t.m[m.Origin]
		if om == nil {
			om = &originMark{}
			t.m[m.Origin] = om
		}
		if m.Version <= om.v {
			continue // marks only rise; an older one came late
		}
		om.v, om.moved = m.Version, now
		for c := range t.subs {
			select {
			case c <- struct{}{}:
			default: // told already, not read yet
			}
		}
		ws := om.waiters[:0]
		for _, w := range om.waiters {
			if w.want <= om.v {
				w.fire()
			} else {
				ws = append(ws, w)
			}
		}
		clear(om.waiters[len(ws):])
		om.waiters = ws
	}
	if now.Sub(t.swept) > time.Minute {
		t.swept = now
		for o, om := range t.m {
			if len(om.waiters) == 0 && now.Sub(om.moved) > markForget {
				delete(t.m, o)
			}
		}
	}
}

// add registers a wait for origin's mark to reach v (see AddMarkWait).
func (t *markTable) add(origin, v uint64, fire func()) (w *markWaiter, passed, known bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	om := t.m[origin]
	switch {
	case om == nil:
		return nil, false, false
	case om.v >= v:
		return nil, true, true
	}
	w = &markWaiter{want: v, fire: fire}
	om.waiters = append(om.waiters, w)
	return w, false, true
}

// remove drops w from origin's waits, and reports whether it was there
// (it had not fired).
func (t *markTable) remove(origin uint64, w *markWaiter) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	om := t.m[origin]
	if om == nil {
		return false
	}
	for i, c := range om.waiters {
		if c == w {
			om.waiters[i] = om.waiters[len(om.waiters)-1]
			om.waiters[len(om.waiters)-1] = nil
			om.waiters = om.waiters[:len(om.waiters)-1]
			return true
		}
	}
	return false
}

// stale reports whether origin's mark has stood still for markStale.
func (t *markTable) stale(origin uint64, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	om := t.m[origin]
	return om == nil || now.Sub(om.moved) > markStale
}

// newOrigin draws an incarnation's origin: random, never 0.
func newOrigin() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if o := binary.LittleEndian.Uint64(b[:]); o != 0 {
			return o
		}
	}
}

// Origin names this incarnation of the node in the watermarks it sends
// other regions (0: it replicates to none). Its writes' answers carry it,
// so that readers in other regions can wait for its mark (WaitMark).
func (k *Server) Origin() uint64 { return k.n.cfg.KV.Origin }

// MarkWait is a wait for another region's node's watermark
// (AddMarkWait).
type MarkWait struct {
	origin uint64
	w      *markWaiter
}

// AddMarkWait registers fire to be called, once, when origin's
// watermark here reaches version: a read at this region's quorum then
// returns that write of origin, or a newer one. It registers nothing and
// reports passed when the mark is there already, and known false when
// this node has no mark of origin. fire runs on the KV loop, under a
// lock: it must not block. A wait that has not fired must be cancelled
// (CancelMarkWait).
func (k *Server) AddMarkWait(origin, version uint64, fire func()) (mw MarkWait, passed, known bool) {
	w, passed, known := k.marks.add(origin, version, fire)
	return MarkWait{origin: origin, w: w}, passed, known
}

// CancelMarkWait drops a wait, and reports whether it had not fired (it
// never will then).
func (k *Server) CancelMarkWait(mw MarkWait) bool {
	return mw.w != nil && k.marks.remove(mw.origin, mw.w)
}

// MarkStale reports whether the watermark of the origin a wait is for
// has stood still here for markStale (or is gone): its origin has
// stopped, or one of its writes is stuck, and the caller should read
// instead.
func (k *Server) MarkStale(mw MarkWait) bool { return k.marks.stale(mw.origin, time.Now()) }

// SubscribeMarks returns a channel told (it holds one signal at most)
// whenever a watermark here rises, and a function that ends the
// subscription. Marks reads them.
func (k *Server) SubscribeMarks() (<-chan struct{}, func()) {
	t := &k.marks
	c := make(chan struct{}, 1)
	t.mu.Lock()
	if t.subs == nil {
		t.subs = map[chan struct{}]struct{}{}
	}
	t.subs[c] = struct{}{}
	t.mu.Unlock()
	return c, func() {
		t.mu.Lock()
		delete(t.subs, c)
		t.mu.Unlock()
	}
}

// Marks calls f with each origin's watermark here that differs from
// what sent holds, and records it there: a stream's next lines.
func (k *Server) Marks(sent map[uint64]uint64, f func(origin, version uint64)) {
	t := &k.marks
	t.mu.Lock()
	defer t.mu.Unlock()
	for o, om := range t.m {
		if sent[o] != om.v {
			sent[o] = om.v
			f(o, om.v)
		}
	}
}

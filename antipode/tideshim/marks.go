package tideshim

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tide/antipode"
)

// A Waiter follows its node's replication watermarks (GET /kv-marks,
// store/kvwait.go): a mark says that a read at the region's quorum
// returns every write its origin coordinated up to its version. A wait
// for a write with an origin ends when the origin's mark passes the
// write's version, with no request of its own. The stream runs while
// waits come, and stops once none has for markIdle. While it is not
// connected, or when the node has no mark of a write's origin, or the
// mark has not risen for markStale, the wait asks the node instead
// (POST /kv-wait), which reads.

// markIdle is how long the stream runs on with no wait.
const markIdle = 30 * time.Second

// markStale is how long a mark may stand still under a wait before the
// wait asks the node instead: its origin has stopped, or one of its
// writes is stuck (the node gives up on a mark as soon: kvserver).
const markStale = 5 * time.Second

// markFollower is a Waiter's view of its node's marks.
type markFollower struct {
	mu      sync.Mutex
	running bool // the follow goroutine runs
	live    bool // a stream is connected and has sent every mark known
	lastUse time.Time
	off     time.Time // the node refused the stream: not asked again until a minute later
	m       map[uint64]*followed
	ended   atomic.Int64 // waits the stream ended (MarkWaits)
}

// followed is one origin's mark, and the waits for it to pass a version.
type followed struct {
	v     uint64
	moved time.Time
	waits []*markWait
}

type markWait struct {
	want uint64
	done chan struct{}
}

// waitMark waits for id by its origin's mark. done false: the mark
// cannot tell (no stream, no mark of the origin, or a mark that stands
// still), and the caller asks the node.
func (w *Waiter) waitMark(ctx context.Context, id antipode.WriteID) (done bool, err error) {
	f := &w.marks
	f.mu.Lock()
	now := time.Now()
	f.lastUse = now
	if !f.running && now.Sub(f.off) > time.Minute {
		f.running = true
		go w.follow()
	}
	o := f.m[id.Origin]
	switch {
	case !f.live || o == nil:
		f.mu.Unlock()
		return false, nil
	case o.v >= id.Version:
		f.mu.Unlock()
		f.ended.Add(1)
		return true, nil
	case now.Sub(o.moved) > markStale:
		f.mu.Unlock()
		return false, nil
	}
	mw := &markWait{want: id.Version, done: make(chan struct{})}
	o.waits = append(o.waits, mw)
	f.mu.Unlock()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-mw.done:
			f.ended.Add(1)
			return true, nil
		case <-ctx.Done():
			if w.dropMarkWait(id.Origin, mw) {
				return true, fmt.Errorf("%w (the region's watermark of the write's origin is at %d, below version %d of %q)", ctx.Err(), w.markOf(id.Origin), id.Version, id.Key)
			}
			f.ended.Add(1)
			return true, nil // it ended meanwhile
		case now := <-t.C:
			f.mu.Lock()
			stale := !f.live || now.Sub(o.moved) > markStale
			f.mu.Unlock()
			if stale && w.dropMarkWait(id.Origin, mw) {
				return false, nil
			}
		}
	}
}

// dropMarkWait removes mw, and reports whether it had not ended.
func (w *Waiter) dropMarkWait(origin uint64, mw *markWait) bool {
	f := &w.marks
	f.mu.Lock()
	defer f.mu.Unlock()
	o := f.m[origin]
	if o == nil {
		return false
	}
	for i, c := range o.waits {
		if c == mw {
			o.waits[i] = o.waits[len(o.waits)-1]
			o.waits = o.waits[:len(o.waits)-1]
			return true
		}
	}
	return false
}

// MarkWaits counts the waits that the node's mark stream ended, with no
// request of their own.
func (w *Waiter) MarkWaits() int64 { return w.marks.ended.Load() }

func (w *Waiter) markOf(origin uint64) uint64 {
	w.marks.mu.Lock()
	defer w.marks.mu.Unlock()
	if o := w.marks.m[origin]; o != nil {
		return o.v
	}
	return 0
}

// raise records origin's mark v, and ends the waits it passes.
func (f *markFollower) raise(origin, v uint64, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[uint64]*followed{}
	}
	o := f.m[origin]
	if o == nil {
		o = &followed{}
		f.m[origin] = o
	}
	if v <= o.v {
		return
	}
	o.v, o.moved = v, now
	ws := o.waits[:0]
	for _, mw := range o.waits {
		if mw.want <= v {
			close(mw.done)
		} else {
			ws = append(ws, mw)
		}
	}
	clear(o.waits[len(ws):])
	o.waits = ws
}

// follow reads the node's mark stream, one request after another, until
// no wait has come for markIdle or the node refuses it.
func (w *Waiter) follow() {
	f := &w.marks
	var pause time.Duration
	for {
		err := w.streamMarks()
		f.mu.Lock()
		f.live = false
		idle := time.Since(f.lastUse) > markIdle
		_, refused := err.(*streamRefused)
		if refused {
			f.off = time.Now()
		}
		if idle || refused {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		if err == nil {
			pause = 0
			continue
		}
		pause = min(max(2*pause, 50*time.Millisecond), 2*time.Second)
		time.Sleep(pause)
	}
}

// streamRefused is a mark stream the node answered with an error status
// (a node without /kv-marks, or one that denies it).
type streamRefused struct{ status string }

func (e *streamRefused) Error() string { return "tide marks: " + e.status }

// streamMarks reads one GET /kv-marks answer to its end.
func (w *Waiter) streamMarks() error {
	wait := w.LongPoll
	if wait <= 0 {
		wait = longWait
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+w.addr+"/kv-marks?wait="+wait.String(), nil)
	if err != nil {
		return err
	}
	resp, err := client(w.Client).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &streamRefused{resp.Status + ": " + strings.TrimSpace(string(b))}
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			// Every mark known at the start has come.
			w.marks.mu.Lock()
			w.marks.live = true
			w.marks.mu.Unlock()
			continue
		}
		os, vs, _ := strings.Cut(line, " ")
		o, err1 := strconv.ParseUint(os, 10, 64)
		v, err2 := strconv.ParseUint(vs, 10, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("tide marks: line %q: want ORIGIN VERSION", line)
		}
		w.marks.raise(o, v, time.Now())
	}
	return sc.Err()
}

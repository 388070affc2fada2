// Package tideshim is antipode's shim for the tide store's key-value API
// across regions (tide node --region). A write's version is the one the
// store gave it (X-Tide-Version: a hybrid logical clock timestamp; the
// last writer wins); it is visible in a region once a read there at the
// region's quorum returns that version or a newer one. Such a read writes
// the version it answers back to a write quorum of the region's replicas
// if it is not there yet, so every later read in the region sees it too.
//
// A write's answer also names the node incarnation that coordinated it
// (X-Tide-Origin), which the WriteID keeps as its Origin. That node tells
// every node of the other regions how far each has caught up with its
// writes (a replication watermark, kv/regions.go), so a wait for a write
// with an origin costs no read: the region's node answers once the
// origin's watermark there passes the version. A Waiter follows the
// node's marks as they rise (GET /kv-marks, one stream for all its
// waits: marks.go), so such a wait costs no request either: it ends when
// the stream passes its version. Without an origin, or when the node has
// no moving watermark of it, the wait reads:
//
// Versions are per key. A wait is event-driven: it asks the region's node
// to answer once its read returns the version. A node that is one of the
// key's replicas reads at quorum once it holds the version itself (it
// looks, then a write of the key at that version or newer landing wakes
// it; every second it reads anyway, in case the write reached the key's
// other replicas only); another node reads at once and every 20 ms. The waits of
// all the barriers in flight go to the node together, in one POST
// /kv-wait request per batch (store/kvwait.go has its format), and the
// node answers each as it ends. A wait the node ends unanswered, or that
// fails, is asked again with bounded backoff (antipode.Backoff).
package tideshim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tide/antipode"
)

// Writer writes through a node of the writer's region.
type Writer struct {
	// Addr is the HTTP address (host:port) of a node of the region.
	Addr string
	// Store is the name lineages use for this store.
	Store string
	// Client makes the requests; nil takes DefaultClient.
	Client *http.Client
}

// DefaultClient is the HTTP client of Writers and Waiters that name none.
// A waiting barrier holds a connection to its region's node for as long as
// the region lags, so a busy reader holds hundreds at once: they are kept
// for the next barriers rather than closed and dialed again.
var DefaultClient = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}

func client(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return DefaultClient
}

func kvURL(addr, key string) string { return "http://" + addr + "/kv/" + url.PathEscape(key) }

// Put writes key=value, acknowledged by the region's write quorum, and
// returns the write's identifier.
func (w *Writer) Put(ctx context.Context, key string, value []byte) (antipode.WriteID, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, kvURL(w.Addr, key), strings.NewReader(string(value)))
	if err != nil {
		return antipode.WriteID{}, err
	}
	resp, err := client(w.Client).Do(req)
	if err != nil {
		return antipode.WriteID{}, fmt.Errorf("tide put %q: %w", key, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return antipode.WriteID{}, fmt.Errorf("tide put %q: %s: %s", key, resp.Status, strings.TrimSpace(string(b)))
	}
	v, err := strconv.ParseUint(resp.Header.Get("X-Tide-Version"), 10, 64)
	if err != nil || v == 0 {
		return antipode.WriteID{}, fmt.Errorf("tide put %q: no version in the answer (X-Tide-Version %q)", key, resp.Header.Get("X-Tide-Version"))
	}
	var origin uint64
	if h := resp.Header.Get("X-Tide-Origin"); h != "" {
		if origin, err = strconv.ParseUint(h, 10, 64); err != nil {
			return antipode.WriteID{}, fmt.Errorf("tide put %q: X-Tide-Origin %q: %w", key, h, err)
		}
	}
	io.Copy(io.Discard, resp.Body)
	return antipode.WriteID{Store: w.Store, Key: key, Version: v, Origin: origin}, nil
}

// Get reads key through a node of a region, at the region's read quorum:
// its value if found, and the version it holds (a delete's version too;
// 0: never written).
func Get(ctx context.Context, c *http.Client, addr, key string) (value []byte, found bool, version uint64, err error) {
	return get(ctx, c, kvURL(addr, key), key)
}

func get(ctx context.Context, c *http.Client, u, key string) (value []byte, found bool, version uint64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, 0, err
	}
	resp, err := client(c).Do(req)
	if err != nil {
		return nil, false, 0, fmt.Errorf("tide get %q: %w", key, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, false, 0, fmt.Errorf("tide get %q: %w", key, err)
	}
	if h := resp.Header.Get("X-Tide-Version"); h != "" {
		if version, err = strconv.ParseUint(h, 10, 64); err != nil {
			return nil, false, 0, fmt.Errorf("tide get %q: X-Tide-Version %q: %w", key, h, err)
		}
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return b, true, version, nil
	case http.StatusNotFound:
		return nil, false, version, nil
	}
	return nil, false, 0, fmt.Errorf("tide get %q: %s: %s", key, resp.Status, strings.TrimSpace(string(b)))
}

// Waiter tells when writes are visible in one region, through a node of
// it. The waits of every barrier in flight go to the node together: one
// POST /kv-wait request carries all the waits that came while the one
// before it was being sent, and the node answers each as it ends.
type Waiter struct {
	addr    string
	backoff antipode.Backoff
	// Client makes the requests; nil takes DefaultClient.
	Client *http.Client
	// LongPoll is how long one request asks the node to wait before it
	// answers that a write is not there yet (then the wait is asked
	// again); zero: 10 s.
	LongPoll time.Duration

	// NoMarks turns off following the node's watermark stream: every
	// wait goes to the node (POST /kv-wait).
	NoMarks bool

	mu      sync.Mutex
	queue   []*pending // waits not sent yet
	sending bool       // dispatch is running

	marks markFollower
}

// pending is one wait in a batch.
type pending struct {
	key     string
	version uint64
	origin  uint64
	gone    atomic.Bool   // its barrier gave up: not worth sending
	done    chan struct{} // closed once the batch answered for it
	// Set before done is closed:
	ok   bool
	seen uint64 // the version the region's last read returned
	err  error
}

// NewWaiter returns a Waiter reading through the node at addr (HTTP
// host:port) of the caller's region; b paces its polls (zero:
// antipode.DefaultBackoff).
func NewWaiter(addr string, b antipode.Backoff) *Waiter {
	return &Waiter{addr: addr, backoff: b}
}

// longWait is LongPoll's default, under DefaultClient's time-out.
const longWait = 10 * time.Second

// batchGap is the least time between two batches: waits that come within
// it go in one request.
const batchGap = time.Millisecond

// maxBatch bounds the waits of one request (the node takes 4096).
const maxBatch = 1024

// Wait implements antipode.Waiter: it returns once a read of the key at
// the region's quorum returns the write's version or a newer one.
func (w *Waiter) Wait(ctx context.Context, id antipode.WriteID) error {
	if id.Origin != 0 && !w.NoMarks {
		if done, err := w.waitMark(ctx, id); done {
			return err
		}
	}
	var seen uint64
	err := antipode.Poll(ctx, w.backoff, nil, func(ctx context.Context) (bool, error) {
		p := &pending{key: id.Key, version: id.Version, origin: id.Origin, done: make(chan struct{})}
		w.enqueue(p)
		select {
		case <-p.done:
		case <-ctx.Done():
			p.gone.Store(true)
			return false, ctx.Err()
		}
		seen = max(seen, p.seen)
		return p.ok, p.err
	})
	if err != nil {
		return fmt.Errorf("%w (the region holds version %d of %q)", err, seen, id.Key)
	}
	return nil
}

func (w *Waiter) enqueue(p *pending) {
	w.mu.Lock()
	w.queue = append(w.queue, p)
	start := !w.sending
	w.sending = true
	w.mu.Unlock()
	if start {
		go w.dispatch()
	}
}

// dispatch sends the queued waits while there are any, a batch at a
// time: the next leaves once the node has begun to answer the last (it
// has registered its waits) and batchGap has passed.
func (w *Waiter) dispatch() {
	for {
		w.mu.Lock()
		var batch []*pending
		for _, p := range w.queue {
			if !p.gone.Load() {
				batch = append(batch, p)
			}
		}
		w.queue = nil
		if len(batch) > maxBatch {
			w.queue, batch = batch[maxBatch:], batch[:maxBatch]
		}
		if len(batch) == 0 {
			w.sending = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		gap := time.After(batchGap)
		started := make(chan struct{})
		go w.send(batch, started)
		<-started
		<-gap
	}
}

// send asks the node for batch's waits and hands each its answer; it
// closes started once the node has begun to answer, or failed.
func (w *Waiter) send(batch []*pending, started chan struct{}) {
	var body strings.Builder
	for _, p := range batch {
		body.WriteString(strconv.FormatUint(p.version, 10))
		body.WriteByte(' ')
		body.WriteString(url.PathEscape(p.key))
		if p.origin != 0 {
			body.WriteByte(' ')
			body.WriteString(strconv.FormatUint(p.origin, 10))
		}
		body.WriteByte('\n')
	}
	finish := func(err error) {
		for _, p := range batch {
			if p != nil {
				p.err = err
				close(p.done)
			}
		}
	}
	wait := w.LongPoll
	if wait <= 0 {
		wait = longWait
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+w.addr+"/kv-wait?wait="+wait.String(), strings.NewReader(body.String()))
	if err != nil {
		close(started)
		finish(err)
		return
	}
	resp, err := client(w.Client).Do(req)
	close(started)
	if err != nil {
		finish(fmt.Errorf("tide wait: %w", err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		finish(fmt.Errorf("tide wait: %s: %s", resp.Status, strings.TrimSpace(string(b))))
		return
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		a, err := parseAnswer(sc.Text(), len(batch))
		if err != nil {
			finish(fmt.Errorf("tide wait: %w", err))
			return
		}
		p := batch[a.i]
		if p == nil {
			finish(fmt.Errorf("tide wait: a second answer for write %d", a.i))
			return
		}
		batch[a.i] = nil
		// A version below the one asked for is never a yes.
		p.ok, p.seen, p.err = a.ok && a.version >= p.version, a.version, a.err
		close(p.done)
	}
	err = sc.Err()
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	finish(fmt.Errorf("tide wait: the answer ended early: %w", err))
}

// answer is one line of a /kv-wait answer (store/kvwait.go).
type answer struct {
	i       int
	ok      bool
	version uint64
	err     error
}

// parseAnswer reads one line of a /kv-wait answer to a request of n
// writes: "ok I V", "no I V" or "err I MESSAGE".
func parseAnswer(line string, n int) (answer, error) {
	kind, rest, _ := strings.Cut(line, " ")
	is, rest, _ := strings.Cut(rest, " ")
	i, err := strconv.Atoi(is)
	if err != nil || i < 0 || i >= n {
		return answer{}, fmt.Errorf("answer %q: index %q not one of the %d writes asked", line, is, n)
	}
	a := answer{i: i}
	switch kind {
	case "ok", "no":
		if a.version, err = strconv.ParseUint(rest, 10, 64); err != nil {
			return answer{}, fmt.Errorf("answer %q: version %q: %w", line, rest, err)
		}
		a.ok = kind == "ok"
	case "err":
		a.err = errors.New(rest)
	default:
		return answer{}, fmt.Errorf("answer %q: want ok, no or err", line)
	}
	return a, nil
}

// Package postnotify is antipode's post-notification benchmark (SEEDS.md
// §4): a writer in region A stores a post, waits --delay, and publishes a
// notification; a reader in region B receives it and reads the post from
// its own replica. Without antipode the read often misses the post (the
// notification outran replication); with antipode the notification
// carries the post's write in its lineage, and the reader's barrier waits
// for it.
package postnotify

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tide/antipode"
)

// RunConfig is one run: a delay, with or without antipode.
type RunConfig struct {
	Delay       time.Duration
	N           int  // requests
	Concurrency int  // writers at once
	Antipode    bool // carry lineage and wait at the barrier
	// BarrierTimeout bounds one barrier; a barrier that times out counts
	// as a barrier error, and the read goes ahead (and may be inconsistent).
	BarrierTimeout time.Duration
	// OpTimeout bounds each post write, notification and read; zero: 30s.
	OpTimeout time.Duration
	// PostBytes is the size of each post's body.
	PostBytes int
	// Prefix tells this run's post keys from others'.
	Prefix string
	// Progress receives a progress line now and then; nil for none.
	Progress io.Writer
	// Label names the run in progress lines.
	Label string
}

// Trace is one request, with the original benchmark's fields.
type Trace struct {
	ID int
	// WriterLatency is the writer's whole request: store the post, wait
	// the delay, publish the notification.
	WriterLatency time.Duration
	// PostWrite is the post write alone.
	PostWrite time.Duration
	// Visibility is when the reader's read completed, from the writer's
	// start.
	Visibility time.Duration
	// NotificationLatency is from the notification's publication to its
	// arrival at the reader.
	NotificationLatency time.Duration
	// Barrier is the time spent in the barrier (0 without antipode).
	Barrier           time.Duration
	NotificationBytes int
	LineageBytes      int
	PostBytes         int
	Consistent        bool
	Err               string // a barrier or read error
	done              bool
}

// notification payload: request id (uvarint), post key.
func encodeNote(id int, key string) []byte {
	b := binary.AppendUvarint(nil, uint64(id))
	return append(b, key...)
}

func decodeNote(b []byte) (int, string, error) {
	id, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, "", errors.New("bad notification")
	}
	return int(id), string(b[n:]), nil
}

// Result is a finished run.
type Result struct {
	Config   RunConfig
	Traces   []Trace
	Start    time.Time
	WriterS  float64 // seconds until the last writer finished
	EndToEnd float64 // seconds until the last read finished
	// CPU is the CPU time the run took (nil where not measured).
	CPU *CPUUse
}

// Run runs cfg.N requests against env.
func Run(ctx context.Context, env *Env, cfg RunConfig) (*Result, error) {
	if cfg.N <= 0 || cfg.Concurrency <= 0 {
		return nil, fmt.Errorf("requests (%d) and concurrency (%d) must be positive", cfg.N, cfg.Concurrency)
	}
	if cfg.BarrierTimeout <= 0 {
		cfg.BarrierTimeout = 10*time.Second + 10*env.Lag
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 30 * time.Second
	}
	reg := antipode.NewRegistry()
	reg.Register("posts", env.Post.Waiter())

	traces := make([]Trace, cfg.N)
	starts := make([]time.Time, cfg.N)
	published := make([]time.Time, cfg.N)
	var mu sync.Mutex // guards traces[i] between writer and reader
	var finished, inconsistent atomic.Int64
	allDone := make(chan struct{})
	var readers sync.WaitGroup
	var readersMu sync.Mutex
	readersClosed := false

	// A notification waits at the barrier with no goroutine of its own
	// (BarrierFunc), then goes to one of a fixed pool of readers. (A
	// goroutine per notification, blocked for the lag in Barrier, then
	// reading, cost the runs with antipode more CPU than the barrier
	// itself: thousands of stacks, shrunk by the collector while they
	// wait and grown again to read.)
	reads := make(chan readJob, 4*cfg.Concurrency)
	poolDone := make(chan struct{})
	defer close(poolDone)
	for range cfg.Concurrency {
		go func() {
			for {
				var j readJob
				select {
				case j = <-reads:
				case <-poolDone:
					return
				}
				t := j.t
				rctx, rcancel := context.WithTimeout(ctx, cfg.OpTimeout)
				found, rerr := env.Post.Read(rctx, j.key)
				rcancel()
				readDone := time.Now()
				if rerr != nil && t.Err == "" {
					t.Err = "read: " + rerr.Error()
				}
				id := j.id
				mu.Lock()
				t.ID = id
				t.Visibility = readDone.Sub(starts[id])
				t.NotificationLatency = j.arrived.Sub(published[id])
				t.Consistent = found
				t.done = true
				tr := &traces[id]
				t.WriterLatency, t.PostWrite, t.NotificationBytes, t.LineageBytes, t.PostBytes = tr.WriterLatency, tr.PostWrite, tr.NotificationBytes, tr.LineageBytes, tr.PostBytes
				already := tr.done
				*tr = t
				mu.Unlock()
				readers.Done()
				if already {
					continue
				}
				if !found {
					inconsistent.Add(1)
				}
				if finished.Add(1) == int64(cfg.N) {
					close(allDone)
				}
			}
		}()
	}

	// hand gives a notification to the readers without blocking: the
	// barrier's callback runs on a loop shared by every wait.
	hand := func(j readJob) {
		select {
		case reads <- j:
		default:
			go func() {
				select {
				case reads <- j:
				case <-poolDone:
					readers.Done()
				}
			}()
		}
	}

	subCtx, stopSub := context.WithCancel(ctx)
	defer stopSub()
	subErr := make(chan error, 1)
	subscribed := make(chan struct{})
	go func() {
		subErr <- env.Channel.Subscribe(subCtx, subscribed, func(mctx context.Context, data []byte, err error) {
			arrived := time.Now()
			id, key, derr := decodeNote(data)
			if err == nil && derr != nil {
				err = derr
			}
			if err != nil || id < 0 || id >= cfg.N || key != postKey(cfg, id) {
				return // another run's, or not readable: the request shows up as lost
			}
			readersMu.Lock()
			if readersClosed {
				readersMu.Unlock()
				return // the run is over
			}
			readers.Add(1)
			readersMu.Unlock()
			if !cfg.Antipode {
				hand(readJob{id: id, key: key, arrived: arrived})
				return
			}
			// The barrier's deadline bounds it; a deadline under the
			// subscription's context would also enter it in that
			// context's table of children, thousands at a time.
			bctx, cancel := context.WithTimeout(context.WithoutCancel(mctx), cfg.BarrierTimeout)
			b0 := time.Now()
			reg.BarrierFunc(bctx, func(berr error) {
				cancel()
				j := readJob{id: id, key: key, arrived: arrived}
				j.t.Barrier = time.Since(b0)
				if berr != nil {
					j.t.Err = berr.Error()
				}
				hand(j)
			})
		})
	}()
	// Publish nothing before the subscription is in place: a notification
	// published earlier may never arrive (a NATS subject keeps nothing
	// for subscribers to come), and would count as lost. (A fixed 50 ms
	// for it lost the first 678 of 10,000 at a load average of 40.)
	select {
	case <-subscribed:
	case err := <-subErr:
		if err == nil {
			err = errors.New("the subscription ended before it started")
		}
		return nil, fmt.Errorf("subscribe: %w", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	body := make([]byte, cfg.PostBytes)
	for i := range body {
		body[i] = byte('a' + rand.IntN(26))
	}
	cpu0 := sampleCPU()
	res := &Result{Config: cfg, Start: time.Now()}
	progressDone := make(chan struct{})
	go progress(cfg, &finished, &inconsistent, progressDone)
	defer close(progressDone)

	jobs := make(chan int)
	var writers sync.WaitGroup
	var writeErr error
	var werrOnce sync.Once
	for range cfg.Concurrency {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for id := range jobs {
				if err := write(ctx, env, cfg, id, body, starts, published, traces, &mu); err != nil {
					werrOnce.Do(func() { writeErr = err })
				}
			}
		}()
	}
	for i := range cfg.N {
		if ctx.Err() != nil {
			break
		}
		jobs <- i
	}
	close(jobs)
	writers.Wait()
	res.WriterS = time.Since(res.Start).Seconds()
	if writeErr != nil {
		return nil, writeErr
	}
	// Wait for the readers: every notification, or a generous time for
	// stragglers after the last was published.
	select {
	case <-allDone:
	case <-time.After(30*time.Second + 3*cfg.BarrierTimeout):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	stopSub()
	readersMu.Lock()
	readersClosed = true
	readersMu.Unlock()
	readers.Wait()
	res.EndToEnd = time.Since(res.Start).Seconds()
	if s, ok := env.Post.(Settler); ok {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second+10*env.Lag)
		err := s.Settle(sctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("waiting for the post store's replicas to catch up: %w", err)
		}
	}
	res.CPU = cpuUse(cpu0, sampleCPU(), cfg.N)
	mu.Lock()
	res.Traces = append([]Trace(nil), traces...)
	mu.Unlock()
	for i := range res.Traces {
		if !res.Traces[i].done {
			res.Traces[i].ID = i
			res.Traces[i].Err = "notification not received"
		}
	}
	return res, nil
}

// readJob is a notification that passed its barrier (or had none), for
// a reader of the pool.
type readJob struct {
	id      int
	key     string
	arrived time.Time
	t       Trace // the barrier's time and error
}

func postKey(cfg RunConfig, id int) string { return fmt.Sprintf("post-%s-%d", cfg.Prefix, id) }

// write is one writer request: the post, the delay, the notification.
func write(ctx context.Context, env *Env, cfg RunConfig, id int, body []byte, starts, published []time.Time, traces []Trace, mu *sync.Mutex) error {
	key := postKey(cfg, id)
	start := time.Now()
	mu.Lock()
	starts[id] = start
	mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
	wid, err := env.Post.Write(wctx, key, body, cfg.Antipode)
	cancel()
	if err != nil {
		return fmt.Errorf("request %d: %w", id, err)
	}
	postWrite := time.Since(start)
	nctx := ctx
	if cfg.Antipode {
		nctx = antipode.Write(ctx, wid)
	}
	if cfg.Delay > 0 {
		select {
		case <-time.After(cfg.Delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	note := encodeNote(id, key)
	mu.Lock()
	published[id] = time.Now()
	mu.Unlock()
	pctx, pcancel := context.WithTimeout(nctx, cfg.OpTimeout)
	size, lineageBytes, err := env.Channel.Publish(pctx, note)
	pcancel()
	if err != nil {
		return fmt.Errorf("request %d: notify: %w", id, err)
	}
	mu.Lock()
	t := &traces[id]
	t.WriterLatency = time.Since(start)
	t.PostWrite = postWrite
	t.NotificationBytes = size
	t.LineageBytes = lineageBytes
	t.PostBytes = len(key) + len(body)
	mu.Unlock()
	return nil
}

// progress prints a bar with the running inconsistency count until done:
// redrawn in place on a terminal, a line every 2s elsewhere (a log file,
// a test's output).
func progress(cfg RunConfig, finished, inconsistent *atomic.Int64, done chan struct{}) {
	if cfg.Progress == nil {
		return
	}
	tty := isTerminal(cfg.Progress)
	period := 500 * time.Millisecond
	if !tty {
		period = 2 * time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	line := func(final bool) {
		f, inc := finished.Load(), inconsistent.Load()
		const width = 30
		fill := int(f) * width / cfg.N
		bar := []byte(strings.Repeat("=", fill) + strings.Repeat(" ", width-fill))
		pct := 0.0
		if f > 0 {
			pct = 100 * float64(inc) / float64(f)
		}
		end := "\n"
		if tty && !final {
			end = "\r"
		}
		fmt.Fprintf(cfg.Progress, "%s [%s] %d/%d  inconsistent %d (%.1f%%)   %s", cfg.Label, bar, f, cfg.N, inc, pct, end)
	}
	for {
		select {
		case <-done:
			line(true)
			return
		case <-t.C:
			line(false)
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

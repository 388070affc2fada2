package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tide/cluster"
	"tide/paxos/node"
)

// ReconfigStep is one change of `tide bench log --live`: scale Role to N,
// or with Replace set, replace one acceptor of the first group.
type ReconfigStep struct {
	Role    string
	N       int
	Replace bool
}

func (s ReconfigStep) String() string {
	if s.Replace {
		return "replace an acceptor"
	}
	return fmt.Sprintf("%s -> %d", s.Role, s.N)
}

// DefaultReconfigSteps changes proxy leaders 2 -> 1 -> 2 -> 4 and acceptor
// groups 1 -> 2, replaces an acceptor, and goes back to one group.
var DefaultReconfigSteps = []ReconfigStep{
	{Role: "proxy-leaders", N: 1}, {Role: "proxy-leaders", N: 2}, {Role: "proxy-leaders", N: 4},
	{Role: "acceptor-groups", N: 2}, {Replace: true}, {Role: "acceptor-groups", N: 1},
}

// ReconfigResult is one change measured under load.
type ReconfigResult struct {
	Step string `json:"step"`
	// Seconds is how long the change took, from the first process started
	// to the last one stopped (for acceptors: until the old configuration
	// is retired and its acceptors stopped).
	Seconds float64 `json:"seconds"`
	// Before and After are the throughput over the hold before and after.
	Before float64 `json:"ops_per_sec_before"`
	After  float64 `json:"ops_per_sec_after"`
	// Dip is the lowest throughput of any 100 ms window during the change.
	Dip float64 `json:"dip_ops_per_sec"`
}

// LogReconfig starts a local log (the batched default), drives closed-loop
// clients putting 16-byte values, prints throughput every second, and
// applies steps one after another with hold seconds between them, each
// the way `tide log scale` does.
func LogReconfig(ctx context.Context, clients int, hold time.Duration, steps []ReconfigStep, log io.Writer) ([]ReconfigResult, error) {
	dir, err := os.MkdirTemp("", "tide-bench-reconf-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	local := &cluster.Local{Dir: dir}
	defer local.StopAll(5 * time.Second)
	d, ctl, err := StartLocalLog(ctx, local, cluster.ShapePlan(node.DefaultShape, ""))
	if err != nil {
		return nil, err
	}
	c, err := node.NewClient(d, "", clients)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	// Completions per 100 ms window since start.
	const window = 100 * time.Millisecond
	start := time.Now()
	var mu sync.Mutex
	var windows []int
	var errs atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	value := []byte("0123456789abcdef")
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := c.Put(opCtx, fmt.Sprintf("c%d-%d", i, n%1000), value)
				cancel()
				if err != nil {
					errs.Add(1)
					continue
				}
				w := int(time.Since(start) / window)
				mu.Lock()
				for len(windows) <= w {
					windows = append(windows, 0)
				}
				windows[w]++
				mu.Unlock()
			}
		}()
	}
	label := "proxy-leaders 2, acceptor-groups 1"
	var labelMu sync.Mutex
	printer := make(chan struct{})
	go func() {
		defer close(printer)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for sec := 1; ; sec++ {
			select {
			case <-done:
				return
			case <-t.C:
			}
			labelMu.Lock()
			l := label
			labelMu.Unlock()
			fmt.Fprintf(log, "t=%3ds %8.0f ops/s  %s\n", sec, rate(&mu, &windows, time.Duration(sec-1)*time.Second, time.Duration(sec)*time.Second, window), l)
		}
	}()
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	var results []ReconfigResult
	finish := func() {
		close(done)
		wg.Wait()
		<-printer
	}
	if err := sleep(hold + time.Second); err != nil { // one more second of warm-up
		finish()
		return nil, err
	}
	for _, st := range steps {
		before := rate(&mu, &windows, time.Since(start)-hold, time.Since(start), window)
		labelMu.Lock()
		label = "changing: " + st.String()
		labelMu.Unlock()
		t0 := time.Since(start)
		var err error
		if st.Replace {
			cur, cerr := ctl.Current()
			if cerr != nil {
				err = cerr
			} else {
				err = ctl.Replace(ctx, cur.Log.Groups[0].Acceptors[0], io.Discard)
			}
		} else {
			err = ctl.Scale(ctx, st.Role, st.N, io.Discard)
		}
		t1 := time.Since(start)
		if err != nil {
			finish()
			return results, fmt.Errorf("%s: %w", st, err)
		}
		cur, _ := ctl.Current()
		labelMu.Lock()
		label = fmt.Sprintf("epoch %d: proxy-leaders %d, acceptor-groups %d", cur.Log.Epoch, len(cur.Log.ProxyLeaders), len(cur.Log.Groups))
		labelMu.Unlock()
		if err := sleep(hold); err != nil {
			finish()
			return results, err
		}
		r := ReconfigResult{Step: st.String(), Seconds: (t1 - t0).Seconds(), Before: before,
			After: rate(&mu, &windows, t1, t1+hold, window), Dip: minRate(&mu, &windows, t0, max(t1, t0+window), window)}
		fmt.Fprintf(log, "%s: took %.2fs; %.0f ops/s before, %.0f after, lowest 100 ms window %.0f ops/s\n", r.Step, r.Seconds, r.Before, r.After, r.Dip)
		results = append(results, r)
	}
	finish()
	if n := errs.Load(); n > 0 {
		fmt.Fprintf(log, "%d operations failed (timed out)\n", n)
	}
	return results, nil
}

// rate is the throughput over [from, to) from per-window counts.
func rate(mu *sync.Mutex, ws *[]int, from, to, window time.Duration) float64 {
	mu.Lock()
	defer mu.Unlock()
	windows := *ws
	a, b := int(from/window), int(to/window)
	n := 0
	for i := max(a, 0); i < b && i < len(windows); i++ {
		n += windows[i]
	}
	if b <= a {
		return 0
	}
	return float64(n) / (time.Duration(b-a) * window).Seconds()
}

// minRate is the lowest one-window throughput over [from, to).
func minRate(mu *sync.Mutex, ws *[]int, from, to, window time.Duration) float64 {
	mu.Lock()
	defer mu.Unlock()
	windows := *ws
	var per []int
	for i := int(from / window); i < int(to/window); i++ {
		if i < len(windows) {
			per = append(per, windows[i])
		} else {
			per = append(per, 0)
		}
	}
	if len(per) == 0 {
		return 0
	}
	return float64(slices.Min(per)) / window.Seconds()
}

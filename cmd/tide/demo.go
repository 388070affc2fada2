package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"tide/autoscale"
	"tide/autoscale/provision"
	"tide/paxos/node"
)

// demoStoreConfig is the store policy of tide up --demo: the defaults,
// with a quicker scale-in so that the demo's end is seen too.
func demoStoreConfig(cfg autoscale.Config) autoscale.Config {
	cfg.Store.Min, cfg.Store.Max = 3, 5
	cfg.Store.ScaleInCooldown = autoscale.Duration(15 * time.Second)
	return cfg.WithDefaults()
}

// demoLogConfig is the log policy of tide up --demo: capacities low
// enough that the demo's load (a few hundred commands a second on a
// laptop) grows the log's batchers and proxy leaders; the log never
// shrinks below its default shape.
func demoLogConfig() autoscale.LogConfig {
	return autoscale.LogConfig{
		Capacity: map[string]float64{"batchers": 400, "proxy-leaders": 300, "acceptor-groups": 100000, "replicas": 100000, "unbatchers": 100000},
		Min:      map[string]int{"batchers": 1, "proxy-leaders": 2, "acceptor-groups": 1, "replicas": 2, "unbatchers": 1},
		Max:      map[string]int{"batchers": 3, "proxy-leaders": 4, "acceptor-groups": 1, "replicas": 2, "unbatchers": 1},
		Periods:  2, ScaleOutCooldown: autoscale.Duration(5 * time.Second), ScaleInCooldown: autoscale.Duration(15 * time.Second),
	}
}

type demoOptions struct {
	nodes      func() []provision.Instance
	capacity   int64  // each node's; the files fill 80% of it
	deployment string // the log's deployment file; empty: no log
	duration   time.Duration
	out        io.Writer
}

// runDemo is tide up --demo's load generator: it uploads files until the
// nodes pass the scale-out mark, writes keys and drives the log for
// o.duration, then deletes its files and stops, so that the autoscaler
// scales back in.
func runDemo(ctx context.Context, o demoOptions) {
	load, stop := context.WithTimeout(ctx, o.duration)
	defer stop()
	hc := &http.Client{Timeout: 10 * time.Second}
	pick := func() string {
		var live []string
		for _, in := range o.nodes() {
			if in.State == provision.StateRunning {
				live = append(live, in.HTTPAddr)
			}
		}
		if len(live) == 0 {
			return ""
		}
		return live[rand.IntN(len(live))]
	}
	do := func(ctx context.Context, method, url string, body []byte) error {
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %s", method, url, resp.Status)
		}
		return nil
	}
	var files []string
	var filesMu sync.Mutex
	var fileBytes, keys, cmds, errs atomic.Int64
	var wg sync.WaitGroup
	fmt.Fprintf(o.out, "demo: loading the store and the log for %s (watch the dashboard)\n", o.duration)

	// Files: 256 KiB each, until 80% of a node's capacity is stored (with
	// 3 nodes and 3 replicas, every node holds every file).
	wg.Add(1)
	go func() {
		defer wg.Done()
		const size = 256 << 10
		body := make([]byte, size)
		for i := 0; load.Err() == nil && o.capacity > 0 && fileBytes.Load() < o.capacity*8/10; i++ {
			addr := pick()
			name := fmt.Sprintf("demo-%05d.bin", i)
			for j := range body[:64] {
				body[j] = byte(i >> (j % 4 * 8))
			}
			if addr == "" || do(load, http.MethodPut, "http://"+addr+"/files/"+name, body) != nil {
				errs.Add(1)
				sleepCtx(load, 200*time.Millisecond)
				continue
			}
			filesMu.Lock()
			files = append(files, name)
			filesMu.Unlock()
			fileBytes.Add(size)
			sleepCtx(load, 20*time.Millisecond) // a steady fill, over several autoscaler periods
		}
	}()
	// Keys: a few writers over HTTP.
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; load.Err() == nil; i++ {
				addr := pick()
				key := fmt.Sprintf("demo:%d:%d", w, i%5000)
				if addr == "" || do(load, http.MethodPut, "http://"+addr+"/kv/"+key, []byte(time.Now().String())) != nil {
					errs.Add(1)
					sleepCtx(load, 100*time.Millisecond)
					continue
				}
				keys.Add(1)
			}
		}()
	}
	// The log: closed-loop clients.
	if o.deployment != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := loadCurrent(o.deployment)
			if err != nil {
				fmt.Fprintf(o.out, "demo: no log load: %v\n", err)
				return
			}
			c, err := node.NewClient(d, "", 16)
			if err != nil {
				fmt.Fprintf(o.out, "demo: no log load: %v\n", err)
				return
			}
			defer c.Close()
			var cw sync.WaitGroup
			for w := range 16 {
				cw.Add(1)
				go func() {
					defer cw.Done()
					for i := 0; load.Err() == nil; i++ {
						pctx, cancel := context.WithTimeout(load, 5*time.Second)
						err := c.Put(pctx, fmt.Sprintf("demo:%d:%d", w, i%1000), []byte("v"))
						cancel()
						if err != nil {
							errs.Add(1)
							continue
						}
						cmds.Add(1)
					}
				}()
			}
			cw.Wait()
		}()
	}
	// Progress.
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-load.Done():
				return
			case <-t.C:
				fmt.Fprintf(o.out, "demo: %d files (%d MiB), %d key writes, %d log commands, %d errors\n",
					len(files), fileBytes.Load()>>20, keys.Load(), cmds.Load(), errs.Load())
			}
		}
	}()
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	fmt.Fprintf(o.out, "demo: load stopped after %s: %d files, %d key writes, %d log commands; deleting the files, so the autoscaler scales back in\n",
		o.duration, len(files), keys.Load(), cmds.Load())
	for _, name := range files {
		if ctx.Err() != nil {
			return
		}
		if addr := pick(); addr != "" {
			do(ctx, http.MethodDelete, "http://"+addr+"/files/"+name, nil)
		}
	}
	fmt.Fprintln(o.out, "demo: done")
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

package regions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"tide/antipode/tideshim"
	"tide/cluster"
	"tide/store"
)

// Tide is the tide store as two regions, A and B, each a ring of its own
// nodes (tide node --region): A replicates its writes to B
// asynchronously, holding each for Lag first (--region-delay); B, where
// the benchmark only reads, replicates nowhere. Every node listens on
// ports it picked itself.
type Tide struct {
	A, B []string // the HTTP addresses of each region's nodes
	Lag  time.Duration

	stop func()
}

// StartTide starts the two regions under dir with nodes nodes each (N =
// nodes, at most 3): each node a child process of binary (a tide
// executable), or, with binary "", each in this process (tests, which
// have no tide binary). It waits until a write made in A is read in B.
func StartTide(ctx context.Context, dir, binary string, nodes int, lag time.Duration) (*Tide, error) {
	if nodes < 1 {
		return nil, fmt.Errorf("tide regions: %d nodes per region: want 1 or more", nodes)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	t := &Tide{Lag: lag}
	var start func(name string, args []string, cfg store.Config) (map[string]string, error)
	if binary != "" {
		local := &cluster.Local{Binary: binary, Dir: dir}
		t.stop = func() { local.StopAll(10 * time.Second) }
		start = func(name string, args []string, _ store.Config) (map[string]string, error) {
			file := filepath.Join(dir, name+".addrs")
			args = append([]string{"node", "--chord-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0",
				"--data-dir", filepath.Join(dir, name), "--addr-file", file, "--tick", "200ms"}, args...)
			p, err := local.Start(ctx, name, args, "")
			if err != nil {
				return nil, err
			}
			deadline := time.Now().Add(time.Minute)
			for {
				var addrs map[string]string
				b, err := os.ReadFile(file)
				if err == nil && json.Unmarshal(b, &addrs) == nil {
					return addrs, nil
				}
				select {
				case <-p.Done():
					return nil, fmt.Errorf("tide node %s exited; log %s:\n%s", name, p.LogPath, tail(p.LogPath, 15))
				default:
				}
				if time.Now().After(deadline) {
					return nil, fmt.Errorf("tide node %s did not report its addresses; log %s:\n%s", name, p.LogPath, tail(p.LogPath, 15))
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	} else {
		var running []*store.Node
		t.stop = func() {
			for _, n := range running {
				n.Close()
			}
		}
		start = func(name string, _ []string, cfg store.Config) (map[string]string, error) {
			cfg.ChordAddr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", filepath.Join(dir, name)
			cfg.TickInterval = 200 * time.Millisecond
			cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
			n, err := store.Start(ctx, cfg)
			if err != nil {
				return nil, fmt.Errorf("tide node %s: %w", name, err)
			}
			running = append(running, n)
			return n.Addrs(), nil
		}
	}
	replicas := min(nodes, 3)
	// B first, so that A's nodes can name a member of it.
	var firstB string
	for _, region := range []string{"B", "A"} {
		var first string
		for i := range nodes {
			name := fmt.Sprintf("%s%d", region, i+1)
			cfg := store.Config{Region: region, Replicas: replicas}
			args := []string{"--region", region, "--replicas", strconv.Itoa(replicas)}
			if first != "" {
				cfg.Join = first
				args = append(args, "--join", first)
			}
			if region == "A" {
				cfg.RegionDelay = lag
				cfg.RegionPeers = map[string][]string{"B": {firstB}}
				args = append(args, "--region-delay", lag.String(), "--region-peer", "B="+firstB)
			}
			addrs, err := start(name, args, cfg)
			if err != nil {
				t.Close()
				return nil, err
			}
			if first == "" {
				first = addrs["chord"]
			}
			if region == "A" {
				t.A = append(t.A, addrs["http"])
			} else {
				t.B = append(t.B, addrs["http"])
			}
		}
		if region == "B" {
			firstB = first
		}
	}
	if err := t.waitReady(ctx, nodes); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// waitReady waits until every node sees its region's members and a write
// in A is read in every node of B.
func (t *Tide) waitReady(ctx context.Context, nodes int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c := &http.Client{Timeout: 5 * time.Second}
	poll := func(what string, f func() error) error {
		for {
			err := f()
			if err == nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("tide regions: %s: %w (%v)", what, ctx.Err(), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	for _, addr := range append(append([]string(nil), t.A...), t.B...) {
		err := poll(addr+" to see its region's members", func() error {
			resp, err := c.Get("http://" + addr + "/hash_ring")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var hr struct{ Ring map[string]string }
			if err := json.NewDecoder(resp.Body).Decode(&hr); err != nil {
				return err
			}
			if len(hr.Ring) != nodes {
				return fmt.Errorf("%d members", len(hr.Ring))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	w := &tideshim.Writer{Addr: t.A[0], Store: "ready"}
	var id struct{ v uint64 }
	if err := poll("a write in A", func() error {
		wid, err := w.Put(ctx, "regions/ready", []byte("1"))
		id.v = wid.Version
		return err
	}); err != nil {
		return err
	}
	for _, addr := range t.B {
		err := poll("the write in A to reach "+addr, func() error {
			_, _, v, err := tideshim.Get(ctx, nil, addr, "regions/ready")
			if err == nil && v < id.v {
				err = errors.New("not there yet")
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Close stops every node.
func (t *Tide) Close() {
	if t.stop != nil {
		t.stop()
	}
}

package main

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"tide/bench"
	"tide/cluster"
	"tide/sim"
)

// roundRobin is a load balancer in front of node HTTP addresses.
type roundRobin struct {
	mu    sync.Mutex
	addrs []string
	next  atomic.Uint64
}

func (rr *roundRobin) set(addrs ...string) {
	rr.mu.Lock()
	rr.addrs = append([]string(nil), addrs...)
	rr.mu.Unlock()
}

func (rr *roundRobin) handler() http.Handler {
	return &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		rr.mu.Lock()
		a := rr.addrs[int(rr.next.Add(1))%len(rr.addrs)]
		rr.mu.Unlock()
		pr.SetURL(&url.URL{Scheme: "http", Host: a})
	}}
}

func seedPos(key string) int {
	s := md5.Sum([]byte(key))
	v := new(big.Int).SetBytes(s[:])
	return int(new(big.Int).Mod(v, big.NewInt(10000)).Int64())
}

// seedOwner is the seed's rule: the first token >= the key's position,
// wrapping around.
func seedOwner(ring map[int]string, key string) string {
	var tokens []int
	for t := range ring {
		tokens = append(tokens, t)
	}
	sort.Ints(tokens)
	p := seedPos(key)
	for _, t := range tokens {
		if t >= p {
			return ring[t]
		}
	}
	return ring[tokens[0]]
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestKVKillDuringWrites kills one of 5 node processes (N=3, W=2, R=2)
// under a write load with one writer per key, then checks that every
// acknowledged write survives and that the recorded history, reads
// included, is linearizable per key.
func TestKVKillDuringWrites(t *testing.T) {
	ctx := context.Background()
	local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
	defer local.StopAll(5 * time.Second)
	procs, err := bench.StartRing(ctx, local, 5, 3, []string{"--tick", "200ms"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var httpAddrs []string
	for _, p := range procs {
		httpAddrs = append(httpAddrs, p.Spec.HTTPAddr)
	}
	waitFor(t, "every node to see 5 members", time.Minute, func() error {
		for _, h := range httpAddrs {
			_, body := get(t, "http://"+h+"/hash_ring")
			var hr struct{ Ring map[string]string }
			json.Unmarshal([]byte(body), &hr)
			if len(hr.Ring) != 5 {
				return fmt.Errorf("%s sees %d members", h, len(hr.Ring))
			}
		}
		return nil
	})
	var alive atomic.Pointer[[]string]
	alive.Store(&httpAddrs)
	hc := &http.Client{Timeout: 10 * time.Second}
	var mu sync.Mutex
	var history []porcupine.Operation
	ackedKeys := map[string]bool{}
	begin := time.Now()
	now := func() int64 { return int64(time.Since(begin)) }
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				nodes := *alive.Load()
				node := nodes[rng.IntN(len(nodes))]
				key := fmt.Sprintf("w%d-k%d", w, rng.IntN(4))
				call := now()
				if rng.IntN(3) > 0 {
					val := fmt.Sprintf("w%d-%d", w, i)
					req, _ := http.NewRequest(http.MethodPut, "http://"+node+"/kv/"+key, strings.NewReader(val))
					resp, err := hc.Do(req)
					op := porcupine.Operation{ClientId: w, Input: sim.KVInput{Op: "put", Key: key, Value: val}, Call: call}
					if err == nil && resp.StatusCode == http.StatusNoContent {
						op.Output, op.Return = sim.KVOutput{OK: true}, now()
						acked.Add(1)
						mu.Lock()
						ackedKeys[key] = true
						mu.Unlock()
					} else {
						op.Output, op.Return = nil, math.MaxInt64 // may or may not have happened
					}
					if resp != nil {
						resp.Body.Close()
					}
					mu.Lock()
					history = append(history, op)
					mu.Unlock()
				} else {
					resp, err := hc.Get("http://" + node + "/kv/" + key)
					if err != nil {
						continue
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 && resp.StatusCode != 404 {
						continue
					}
					mu.Lock()
					history = append(history, porcupine.Operation{ClientId: w, Input: sim.KVInput{Op: "get", Key: key}, Call: call,
						Output: sim.KVOutput{OK: true, Found: resp.StatusCode == 200, Value: string(body)}, Return: now()})
					mu.Unlock()
				}
			}
		}()
	}
	waitFor(t, "writes before the kill", time.Minute, func() error {
		if acked.Load() < 300 {
			return fmt.Errorf("%d acknowledged", acked.Load())
		}
		return nil
	})
	victim := procs[2]
	victim.Kill()
	rest := []string{}
	for _, h := range httpAddrs {
		if h != victim.Spec.HTTPAddr {
			rest = append(rest, h)
		}
	}
	alive.Store(&rest)
	t.Logf("killed %s after %d acknowledged writes", victim.Spec.Name, acked.Load())
	target := acked.Load() + 300
	waitFor(t, "writes after the kill", time.Minute, func() error {
		if acked.Load() < target {
			return fmt.Errorf("%d acknowledged", acked.Load())
		}
		return nil
	})
	close(stop)
	wg.Wait()
	history = append(history, finalReads(t, rest[0], ackedKeys, now)...)
	if res := porcupine.CheckOperationsTimeout(sim.KVModel, history, time.Minute); res == porcupine.Illegal {
		t.Fatalf("history of %d operations is not linearizable", len(history))
	}
	t.Logf("%d operations, %d acknowledged writes", len(history), acked.Load())
}

// TestKVScaleUnderLoad grows a ring from 3 to 6 nodes and shrinks it back
// to 3 while clients write (one writer per key) and read, then checks that
// no acknowledged write was lost, that the history is linearizable, and
// reports the longest time any client saw requests fail.
func TestKVScaleUnderLoad(t *testing.T) {
	ctx := context.Background()
	local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
	defer local.StopAll(5 * time.Second)
	extra := []string{"--tick", "200ms"}
	procs, err := bench.StartRing(ctx, local, 3, 3, extra, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var alive atomic.Pointer[[]string]
	setAlive := func(ps []*cluster.Proc) {
		var hs []string
		for _, p := range ps {
			hs = append(hs, p.Spec.HTTPAddr)
		}
		alive.Store(&hs)
	}
	setAlive(procs)
	waitMembers := func(n int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("every node to see %d members", n), 2*time.Minute, func() error {
			for _, h := range *alive.Load() {
				_, body := get(t, "http://"+h+"/hash_ring")
				var hr struct{ Ring map[string]string }
				json.Unmarshal([]byte(body), &hr)
				if len(hr.Ring) != n {
					return fmt.Errorf("%s sees %d members", h, len(hr.Ring))
				}
			}
			return nil
		})
	}
	waitMembers(3)

	hc := &http.Client{Timeout: 10 * time.Second}
	var mu sync.Mutex
	var history []porcupine.Operation
	ackedKeys := map[string]bool{}
	var worstGap atomic.Int64
	var acked, failed atomic.Int64
	begin := time.Now()
	now := func() int64 { return int64(time.Since(begin)) }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			var failingSince time.Time
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				time.Sleep(time.Millisecond) // pace the load: the history stays checkable
				nodes := *alive.Load()
				node := nodes[rng.IntN(len(nodes))]
				key := fmt.Sprintf("s%d-k%d", w, rng.IntN(20))
				call := now()
				ok := false
				if rng.IntN(2) == 0 {
					val := fmt.Sprintf("s%d-%d", w, i)
					req, _ := http.NewRequest(http.MethodPut, "http://"+node+"/kv/"+key, strings.NewReader(val))
					resp, err := hc.Do(req)
					op := porcupine.Operation{ClientId: w, Input: sim.KVInput{Op: "put", Key: key, Value: val}, Call: call, Output: nil, Return: math.MaxInt64}
					if err == nil && resp.StatusCode == http.StatusNoContent {
						op.Output, op.Return, ok = sim.KVOutput{OK: true}, now(), true
						acked.Add(1)
						mu.Lock()
						ackedKeys[key] = true
						mu.Unlock()
					}
					if resp != nil {
						resp.Body.Close()
					}
					mu.Lock()
					history = append(history, op)
					mu.Unlock()
				} else if resp, err := hc.Get("http://" + node + "/kv/" + key); err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 || resp.StatusCode == 404 {
						ok = true
						mu.Lock()
						history = append(history, porcupine.Operation{ClientId: w, Input: sim.KVInput{Op: "get", Key: key}, Call: call,
							Output: sim.KVOutput{OK: true, Found: resp.StatusCode == 200, Value: string(body)}, Return: now()})
						mu.Unlock()
					}
				}
				if ok {
					if !failingSince.IsZero() {
						if gap := time.Since(failingSince); int64(gap) > worstGap.Load() {
							worstGap.Store(int64(gap))
						}
						failingSince = time.Time{}
					}
				} else {
					failed.Add(1)
					if failingSince.IsZero() {
						failingSince = time.Now()
					}
				}
			}
		}()
	}
	progress := func(what string) {
		t.Helper()
		t.Logf("%s: %s", time.Since(begin).Round(time.Millisecond), what)
		target := acked.Load() + 100
		waitFor(t, what, time.Minute, func() error {
			if acked.Load() < target {
				return fmt.Errorf("%d acknowledged", acked.Load())
			}
			return nil
		})
	}
	progress("load on 3 nodes")
	for i := range 3 {
		spec := cluster.NodeSpec{Name: fmt.Sprint("grow", i), ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Join: procs[0].Spec.ChordAddr, Replicas: 3, Extra: extra}
		p, err := local.Launch(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		setAlive(procs)
		waitMembers(len(procs))
		progress(fmt.Sprintf("load on %d nodes", len(procs)))
	}
	for len(procs) > 3 {
		leaving := procs[len(procs)-1]
		rest := procs[:len(procs)-1]
		setAlive(rest)
		t.Logf("%s: removing %s", time.Since(begin).Round(time.Millisecond), leaving.Spec.Name)
		if code, body := get(t, "http://"+rest[0].Spec.HTTPAddr+"/remove_node/"+leaving.Spec.HTTPAddr); code != 200 {
			t.Fatalf("remove_node %s: %d %s", leaving.Spec.Name, code, body)
		}
		procs = rest
		waitMembers(len(procs))
		progress(fmt.Sprintf("load on %d nodes", len(procs)))
	}
	close(stop)
	wg.Wait()
	history = append(history, finalReads(t, procs[0].Spec.HTTPAddr, ackedKeys, now)...)
	if res := porcupine.CheckOperationsTimeout(sim.KVModel, history, time.Minute); res == porcupine.Illegal {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(sim.KVInput).Key
			byKey[k] = append(byKey[k], op)
		}
		for k, ops := range byKey {
			if porcupine.CheckOperations(sim.KVModel, ops) {
				continue
			}
			sort.Slice(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
			for _, op := range ops {
				t.Logf("%s %v call=%v ret=%v in=%+v out=%+v", k, op.ClientId, time.Duration(op.Call), time.Duration(op.Return), op.Input, op.Output)
			}
			break
		}
		t.Fatalf("history of %d operations is not linearizable", len(history))
	}
	t.Logf("3 -> 6 -> 3 nodes: %d operations, %d acknowledged writes, %d failed requests, longest failure window %s",
		len(history), acked.Load(), failed.Load(), time.Duration(worstGap.Load()).Round(time.Millisecond))
}

// finalReads reads every key that had an acknowledged write through node, once
// the load has stopped, and returns the reads as operations to add to the
// history. Each must see the key's last acknowledged write or a later one
// whose request failed (its outcome is unknown, so it may have landed): the
// linearizability check decides which, so a lost acknowledged write fails it.
func finalReads(t *testing.T, node string, keys map[string]bool, now func() int64) []porcupine.Operation {
	t.Helper()
	var ops []porcupine.Operation
	for key := range keys {
		call := now()
		code, got := get(t, "http://"+node+"/kv/"+key)
		if code != 200 {
			t.Errorf("%s = %d %q after the load, want one of its acknowledged values", key, code, got)
			continue
		}
		ops = append(ops, porcupine.Operation{ClientId: 99, Input: sim.KVInput{Op: "get", Key: key}, Call: call,
			Output: sim.KVOutput{OK: true, Found: true, Value: got}, Return: now()})
	}
	return ops
}

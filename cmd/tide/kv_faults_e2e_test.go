package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tide/bench"
	"tide/cluster"
	"tide/kv"
)

// kvInfo is the part of /internal/info these tests read.
type kvInfo struct {
	KVKeys  int `json:"kv_keys"`
	KVHints int `json:"kv_hints"`
}

func nodeInfo(httpAddr string) (kvInfo, error) {
	var in kvInfo
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := getJSON(ctx, "http://"+httpAddr+"/internal/info", &in)
	return in, err
}

// metricSum adds up a metric over nodes.
func metricSum(procs []*cluster.Proc, name string) (float64, error) {
	total := 0.0
	for _, p := range procs {
		m, err := bench.Scrape(context.Background(), p.Spec.HTTPAddr)
		if err != nil {
			return 0, err
		}
		total += m[name][""]
	}
	return total, nil
}

// waitKVMembers waits until every node's KV layer counts n members.
func waitKVMembers(t *testing.T, procs []*cluster.Proc, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("every node to see %d members", n), time.Minute, func() error {
		for _, p := range procs {
			_, body := get(t, "http://"+p.Spec.HTTPAddr+"/hash_ring")
			var hr struct{ Ring map[string]string }
			json.Unmarshal([]byte(body), &hr)
			if len(hr.Ring) != n {
				return fmt.Errorf("%s sees %d members", p.Spec.Name, len(hr.Ring))
			}
		}
		return nil
	})
}

// putKV writes key=value through the node at httpAddr.
func putKV(hc *http.Client, httpAddr, key string, value []byte) error {
	req, _ := http.NewRequest(http.MethodPut, "http://"+httpAddr+"/kv/"+key, bytes.NewReader(value))
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("put %s via %s: %s", key, httpAddr, resp.Status)
	}
	return nil
}

// TestKVHintsDeliveredAfterRestart kills one of 3 node processes (N=3,
// W=2) and writes keys at once, while the ring still counts the dead node:
// the writes succeed with two copies and their coordinators hold a hint
// for each. The node is restarted on its data directory and addresses; it
// must end up holding every key written while it was down, and the
// holders must have delivered and dropped their hints.
func TestKVHintsDeliveredAfterRestart(t *testing.T) {
	ctx := context.Background()
	local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
	defer local.StopAll(5 * time.Second)
	// The default 1s Chord period: a dead successor is dropped after
	// three failed stabilizations, which leaves time to write to a ring
	// that still counts it.
	procs, err := bench.StartRing(ctx, local, 3, 3, []string{"--tick", "1s"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	waitKVMembers(t, procs, 3)
	victim, holders := procs[2], procs[:2]

	victim.Kill()
	killed := time.Now()
	const keys = 200
	value := func(i int) string { return fmt.Sprintf("written-while-down-%d", i) }
	hc := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	errs := make(chan error, keys)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < keys; i += 8 {
				if err := putKV(hc, holders[i%2].Spec.HTTPAddr, fmt.Sprint("hinted-", i), []byte(value(i))); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write with one replica down: %v", err)
	}
	t.Logf("%d keys written %s after the kill", keys, time.Since(killed).Round(time.Millisecond))
	// Each write's coordinator holds a hint once the dead replica's
	// acknowledgement times out.
	waitFor(t, "a hint for every key", 30*time.Second, func() error {
		held, err := metricSum(holders, "tide_kv_hints_held")
		if err != nil {
			return err
		}
		if held != keys {
			return fmt.Errorf("%v hints held, want %d (a key written after the ring dropped the dead node has none)", held, keys)
		}
		return nil
	})
	for _, p := range holders {
		in, err := nodeInfo(p.Spec.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s holds %d hints", p.Spec.Name, in.KVHints)
	}

	restarted, err := local.Launch(ctx, victim.Spec)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restarted node to hold every key written while it was down", time.Minute, func() error {
		missing := 0
		for i := range keys {
			code, body := get(t, "http://"+restarted.Spec.HTTPAddr+"/internal/kv/local?key=hinted-"+fmt.Sprint(i))
			if code != http.StatusOK || body != value(i) {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d keys missing", missing, keys)
		}
		return nil
	})
	waitFor(t, "the holders to drop their hints", time.Minute, func() error {
		held, err := metricSum(holders, "tide_kv_hints_held")
		if err != nil {
			return err
		}
		if held != 0 {
			return fmt.Errorf("%v hints still held", held)
		}
		return nil
	})
	delivered, err := metricSum(holders, "tide_kv_hints_delivered_total")
	if err != nil {
		t.Fatal(err)
	}
	if delivered != keys {
		t.Fatalf("%v hints delivered, want %d", delivered, keys)
	}
}

// TestStatefulSetJoinAndLeave runs nodes as one Kubernetes StatefulSet
// would: every node has the first node's chord address as --join, the
// first node included, which creates the ring. A node then leaves
// gracefully; started again on its data directory it refuses, exits
// non-zero and says why; with an empty data directory it joins again.
func TestStatefulSetJoinAndLeave(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	local := &cluster.Local{Binary: tideBin, Dir: dir}
	defer local.StopAll(5 * time.Second)
	extra := []string{"--tick", "200ms"}
	var procs []*cluster.Proc
	// Every pod has an address of its own, as in Kubernetes: a loopback
	// address no other process uses (127.R.R.i, R random), with fixed
	// ports, so that the first pod's --join, its own address, is known
	// before it starts.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
	prefix := fmt.Sprintf("127.%d.%d.", 1+rng.IntN(254), 1+rng.IntN(254))
	seed := prefix + "1:5057"
	for i := range 3 {
		host := fmt.Sprint(prefix, i+1)
		spec := cluster.NodeSpec{Name: fmt.Sprint("pod", i), ChordAddr: host + ":5057", HTTPAddr: host + ":5058", Join: seed, Replicas: 3,
			Extra: append([]string{"--peer-addr", host + ":5059"}, extra...)}
		p, err := local.Launch(ctx, spec)
		if err != nil {
			t.Fatalf("start %s with --join %s: %v", spec.Name, seed, err)
		}
		procs = append(procs, p)
	}
	waitKVMembers(t, procs, 3)
	hc := &http.Client{Timeout: 10 * time.Second}
	for i := range 50 {
		if err := putKV(hc, procs[i%3].Spec.HTTPAddr, fmt.Sprint("sts-", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}

	leaver := procs[2]
	out := runTide(t, "node", "leave", leaver.Spec.ChordAddr)
	t.Logf("leave: %s", strings.TrimSpace(out))
	select {
	case <-leaver.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not exit after leaving")
	}
	rest := procs[:2]
	waitKVMembers(t, rest, 2)

	// A restart on the same data directory, as a restart policy would do.
	args := []string{"node", "--chord-addr", leaver.Spec.ChordAddr, "--http-addr", leaver.Spec.HTTPAddr,
		"--data-dir", leaver.DataDir, "--join", seed, "--replicas", "3"}
	args = append(args, leaver.Spec.Extra...)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(rctx, tideBin, args...)
	outb, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 || rctx.Err() != nil {
		t.Fatalf("restart of a node that left: err=%v (want a non-zero exit)\n%s", err, outb)
	}
	if !strings.Contains(string(outb), "this node left the ring on") || !strings.Contains(string(outb), "empty --data-dir") {
		t.Fatalf("restart of a node that left exited %d without saying why:\n%s", exit.ExitCode(), outb)
	}
	t.Logf("restart refused (exit %d): %s", exit.ExitCode(), strings.TrimSpace(string(outb)))
	waitKVMembers(t, rest, 2)

	fresh := leaver.Spec
	fresh.Name = "pod2-fresh"
	p, err := local.Launch(ctx, fresh)
	if err != nil {
		t.Fatalf("start on an empty data directory: %v", err)
	}
	procs = append(slices.Clone(rest), p)
	waitKVMembers(t, procs, 3)
	for i := range 50 {
		code, body := get(t, "http://"+p.Spec.HTTPAddr+"/kv/sts-"+fmt.Sprint(i))
		if code != http.StatusOK || body != fmt.Sprint(i) {
			t.Fatalf("sts-%d after the rejoin: %d %q", i, code, body)
		}
	}
}

// TestKVMigrationKeepsForeground loads a 3-node ring (N=3) with KV data,
// adds a 4th node with the default --migration-rate while a foreground
// client reads and writes, and checks that every foreground request
// succeeds until the new node holds every key it replicates and the old
// nodes have handed off (and dropped) half of what they no longer
// replicate; the rest must go once the foreground stops. It
// reports the foreground latency before and during the migration, and
// the nodes' warnings (slow rounds, slow fsyncs) when a request fails.
func TestKVMigrationKeepsForeground(t *testing.T) {
	if testing.Short() {
		t.Skip("loads tens of megabytes into a real ring")
	}
	// 120k keys of 1 KiB (about 370 MB on disk with 3 copies) keep the
	// test near a minute on a busy 2-core machine; TIDE_MIGRATION_TEST_KEYS
	// changes it (200000 for about 200 MB of values), and
	// TIDE_MIGRATION_TEST_RATE sets --migration-rate.
	keys := 120000
	if s := os.Getenv("TIDE_MIGRATION_TEST_KEYS"); s != "" {
		if _, err := fmt.Sscan(s, &keys); err != nil || keys < 1 {
			t.Fatalf("TIDE_MIGRATION_TEST_KEYS=%q: want a positive number of keys", s)
		}
	}
	const valueSize = 1024
	value := func(i int) []byte {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, valueSize)
		copy(b, fmt.Sprintf("%08d", i))
		return b
	}
	ctx := context.Background()
	local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
	defer local.StopAll(10 * time.Second)
	extra := []string{"--tick", "200ms"}
	if rate := os.Getenv("TIDE_MIGRATION_TEST_RATE"); rate != "" {
		// Another --migration-rate than the default, to compare.
		extra = append(extra, "--migration-rate", rate)
	}
	var procs []*cluster.Proc
	var resp []string
	for i := range 3 {
		spec := cluster.NodeSpec{Name: fmt.Sprint("node", i+1), ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Replicas: 3,
			Extra: append([]string{"--resp-addr", "127.0.0.1:0"}, extra...)}
		if i > 0 {
			spec.Join = procs[0].Spec.ChordAddr
		}
		p, err := local.Launch(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		procs, resp = append(procs, p), append(resp, p.Ready.RESPAddr)
	}
	waitKVMembers(t, procs, 3)

	// Load through the Redis protocol, pipelined: far cheaper per key
	// than one HTTP request each.
	begin := time.Now()
	var next atomic.Int64
	const wave = 512
	var wg sync.WaitGroup
	var loadErr atomic.Value
	var retried atomic.Int64
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := respLoad(resp[w%3], &next, keys, wave, value, &retried); err != nil {
				loadErr.Store(err)
			}
		}()
	}
	wg.Wait()
	if err := loadErr.Load(); err != nil {
		t.Fatalf("load: %v", err)
	}
	loadTime := time.Since(begin)
	t.Logf("loaded %d keys of %d bytes (%.0f MB, %.0f MB with 3 copies) in %s: %.0f writes/s; %d SETs sent again after \"quorum not reached\"",
		keys, valueSize, float64(keys*valueSize)/1e6, 3*float64(keys*valueSize)/1e6, loadTime.Round(time.Millisecond), float64(keys)/loadTime.Seconds(), retried.Load())
	hc := &http.Client{Timeout: 30 * time.Second}

	// Foreground: reads of loaded keys and writes of its own keys, on
	// the three original nodes.
	const fgKeys = 100
	for i := range fgKeys {
		if err := putKV(hc, procs[i%3].Spec.HTTPAddr, fmt.Sprint("fg-", i), []byte("0")); err != nil {
			t.Fatal(err)
		}
	}
	type sample struct {
		phase int
		lat   time.Duration
	}
	const (
		before = iota
		during
		after
	)
	var phase atomic.Int32
	var mu sync.Mutex
	var samples []sample
	var failures []string
	stop := make(chan struct{})
	fg := &http.Client{Timeout: 10 * time.Second}
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				node := procs[(i+c)%3].Spec.HTTPAddr
				ph := int(phase.Load())
				start := time.Now()
				var err error
				if i%2 == 0 {
					k := (i*7919 + c*104729) % keys
					var resp *http.Response
					if resp, err = fg.Get(fmt.Sprintf("http://%s/kv/load-%08d", node, k)); err == nil {
						body, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK || !bytes.Equal(body, value(k)) {
							err = fmt.Errorf("get load-%08d via %s: %s, %d bytes", k, node, resp.Status, len(body))
						}
					}
				} else {
					err = putKV(fg, node, fmt.Sprint("fg-", i%fgKeys), []byte(fmt.Sprint(i)))
				}
				lat := time.Since(start)
				mu.Lock()
				if err != nil {
					failures = append(failures, fmt.Sprintf("%s: %v", []string{"before", "during", "after"}[ph], err))
				} else {
					samples = append(samples, sample{ph, lat})
				}
				mu.Unlock()
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	time.Sleep(5 * time.Second)

	// A 4th node joins with the default migration rate.
	phase.Store(during)
	migStart := time.Now()
	spec := cluster.NodeSpec{Name: "node4", ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Join: procs[0].Spec.ChordAddr, Replicas: 3, Extra: extra}
	p4, err := local.Launch(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(procs), p4)
	waitKVMembers(t, all, 4)
	// The new node replicates every key whose preference list (N=3) on
	// the 4-node ring includes it.
	var hr struct{ Ring map[string]string }
	if code, body := get(t, "http://"+procs[0].Spec.HTTPAddr+"/hash_ring"); code != http.StatusOK || json.Unmarshal([]byte(body), &hr) != nil {
		t.Fatalf("hash_ring: %d %s", code, body)
	}
	var ms []kv.Member
	for tok, a := range hr.Ring {
		var tk uint32
		fmt.Sscan(tok, &tk)
		ms = append(ms, kv.Member{Addr: a, Token: tk})
	}
	pos := kv.Partitioners["md5-low32"]
	ring := kv.NewStaticRing(pos, ms)
	want := 0
	for i := range keys + fgKeys {
		k := fmt.Sprintf("load-%08d", i)
		if i >= keys {
			k = fmt.Sprint("fg-", i-keys)
		}
		if slices.Contains(ring.Preference(pos([]byte(k)), 3), p4.Spec.HTTPAddr) {
			want++
		}
	}
	var moved kvInfo
	var copies int // every node's keys
	lastLog := time.Now()
	waitFor(t, fmt.Sprintf("the new node to receive the %d keys it replicates", want), 3*time.Minute, func() error {
		copies = 0
		var per []int
		for _, p := range all {
			in, err := nodeInfo(p.Spec.HTTPAddr)
			if err != nil {
				return err
			}
			copies += in.KVKeys
			per = append(per, in.KVKeys)
			if p == p4 {
				moved = in
			}
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			t.Logf("%s: keys per node %v", time.Since(migStart).Round(time.Second), per)
		}
		if moved.KVKeys < want {
			return fmt.Errorf("%d of %d keys on the new node", moved.KVKeys, want)
		}
		return nil
	})
	migTime := time.Since(migStart)
	// The old nodes then hand off (and drop) what they no longer
	// replicate, reading their stores as they go: the foreground goes on
	// until half the stray copies are gone.
	strays := func() (int, error) {
		n := 0
		for _, p := range all {
			in, err := nodeInfo(p.Spec.HTTPAddr)
			if err != nil {
				return 0, err
			}
			n += in.KVKeys
		}
		return n - 3*(keys+fgKeys), nil
	}
	most := copies - 3*(keys+fgKeys)
	waitFor(t, "the old nodes to hand off half their stray copies", 3*time.Minute, func() error {
		n, err := strays()
		if err != nil {
			return err
		}
		most = max(most, n)
		if n > most/2 {
			return fmt.Errorf("%d of %d stray copies left", n, most)
		}
		return nil
	})
	handTime := time.Since(migStart)
	phase.Store(after)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	pct := func(ph int) (p50, p99 time.Duration, n int) {
		var xs []float64
		for _, s := range samples {
			if s.phase == ph {
				xs = append(xs, float64(s.lat))
			}
		}
		return time.Duration(bench.Percentile(xs, 50)), time.Duration(bench.Percentile(xs, 99)), len(xs)
	}
	b50, b99, bn := pct(before)
	d50, d99, dn := pct(during)
	t.Logf("migration: the new node holds %d keys (%d expected) after %s; the old nodes handed off half their %d stray copies after %s, all of them once the foreground stopped",
		moved.KVKeys, want, migTime.Round(time.Millisecond), most, handTime.Round(time.Millisecond))
	t.Logf("foreground before: %d requests, p50 %s, p99 %s", bn, b50.Round(time.Microsecond), b99.Round(time.Microsecond))
	t.Logf("foreground during: %d requests, p50 %s, p99 %s", dn, d50.Round(time.Microsecond), d99.Round(time.Microsecond))
	if len(failures) > 0 {
		for _, p := range all {
			logWarnings(t, p)
		}
		t.Fatalf("%d foreground requests failed, first: %s", len(failures), failures[0])
	}
	if bn == 0 || dn == 0 {
		t.Fatalf("foreground requests: %d before, %d during the migration", bn, dn)
	}
	// Without the foreground, the rest of the strays go too: the
	// transition settles.
	waitFor(t, "the old nodes to hand off every stray copy", 3*time.Minute, func() error {
		if n, err := strays(); err != nil || n > 0 {
			return fmt.Errorf("%d stray copies left (%v)", n, err)
		}
		return nil
	})
}

// respLoad writes load-%08d keys, taking indexes from next until keys, in
// pipelined waves of wave SETs over one Redis-protocol connection. A SET
// answered "quorum not reached" (the ring was too slow to answer within
// the server's deadline: a loaded machine, a disk stall) is sent again,
// as a bulk loader would send an idempotent write, up to loadRetries
// times; retried counts them.
func respLoad(addr string, next *atomic.Int64, keys, wave int, value func(int) []byte, retried *atomic.Int64) error {
	const loadRetries = 5
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	var buf bytes.Buffer
	send := func(idx []int) (failed []int, err error) {
		buf.Reset()
		for _, i := range idx {
			k, v := fmt.Sprintf("load-%08d", i), value(i)
			fmt.Fprintf(&buf, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n", len(k), k, len(v))
			buf.Write(v)
			buf.WriteString("\r\n")
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		if _, err := c.Write(buf.Bytes()); err != nil {
			return nil, err
		}
		for _, i := range idx {
			line, err := r.ReadString('\n')
			if err != nil {
				return nil, err
			}
			switch {
			case line == "+OK\r\n":
			case strings.HasPrefix(line, "-ERR quorum not reached"):
				failed = append(failed, i)
			default:
				return nil, fmt.Errorf("SET via %s: %q", addr, strings.TrimSpace(line))
			}
		}
		return failed, nil
	}
	for {
		first := int(next.Add(int64(wave))) - wave
		if first >= keys {
			return nil
		}
		idx := make([]int, 0, wave)
		for i := first; i < min(first+wave, keys); i++ {
			idx = append(idx, i)
		}
		for attempt := 0; len(idx) > 0; attempt++ {
			if attempt > loadRetries {
				return fmt.Errorf("SET via %s: %d keys (load-%08d first) not written after %d tries", addr, len(idx), idx[0], attempt)
			}
			if attempt > 0 {
				retried.Add(int64(len(idx)))
				time.Sleep(time.Second)
			}
			if idx, err = send(idx); err != nil {
				return err
			}
		}
	}
}

// logStacks logs the goroutines of node p (its /debug/pprof) whose
// stacks pass through one of the packages named: where a request that
// never answered is waiting.
func logStacks(t *testing.T, p *cluster.Proc, pkgs ...string) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + p.Spec.HTTPAddr + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		t.Logf("%s: goroutines: %v", p.Name, err)
		return
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, g := range strings.Split(string(b), "\n\n") {
		if slices.ContainsFunc(pkgs, func(pkg string) bool { return strings.Contains(g, pkg+".") }) {
			t.Logf("%s: %s", p.Name, g)
		}
	}
}

// logWarnings logs the lines of p's log at level WARN or ERROR, the
// nodes' own account of what was slow or failed.
func logWarnings(t *testing.T, p *cluster.Proc) {
	t.Helper()
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Logf("%s: %v", p.Name, err)
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Logf("%s: %s", p.Name, line)
		}
	}
}

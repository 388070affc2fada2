package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"tide/bench"
	"tide/chord"
	"tide/chord/rpc"
	"tide/cluster"
)

// TestDynamoSeedScenario runs the Dynamo seed's deployment and tests as its
// scripts do, against real node processes behind a round-robin proxy over
// all three nodes: three standbys; reconfigure.sh (clear_cache, then
// POST /hash_ring on each node: two members at 3000 and 8000, the third a
// standby); writes and reads through the proxy; the standby added at 5000;
// the 8000 node removed. Right after each OK, with no waiting, every node
// answers route_test and /hash_ring by the new ring, the removed node
// included (it stays up, out of the ring), and every value is there. The
// requests through the proxy after the removal are answered before the
// first retry to a replica would be sent (--kv-resend 1s, so that a
// machine busy for a few hundred milliseconds does not count as a
// request waiting): no node waits for the one that
// left, even once it is shut down, nor after a second removal leaves a
// ring of one.
func TestDynamoSeedScenario(t *testing.T) {
	ctx := context.Background()
	local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
	defer local.StopAll(5 * time.Second)
	start := func(name string) *cluster.Proc {
		p, err := local.Launch(ctx, cluster.NodeSpec{Name: name, ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			// Replicas are asked again after 1s rather than 200ms: a
			// request that waits for a node that left waits 8s, one on
			// a loaded machine a few hundred milliseconds.
			Extra: []string{"--standby", "--partitioner", "md5-mod10000", "--tick", "200ms", "--kv-resend", "1s"}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b, c := start("a"), start("b"), start("c")
	nodes := []*cluster.Proc{a, b, c}
	rr := &roundRobin{}
	rr.set(a.Spec.HTTPAddr, b.Spec.HTTPAddr, c.Spec.HTTPAddr)
	lb := httptest.NewServer(rr.handler())
	defer lb.Close()
	keys := []string{"bed", "roof", "apple", "chair", "desk", "lamp", "rug", "sofa", "stool", "table", "vase", "clock", "shelf"}

	// checkRing asks every node, at once, for /hash_ring and for the owner
	// of every key.
	checkRing := func(ring map[int]string) {
		t.Helper()
		for _, p := range nodes {
			h := p.Spec.HTTPAddr
			var hr struct {
				Ring       map[string]string `json:"ring"`
				SortedKeys []int             `json:"_sorted_keys"`
			}
			code, body := get(t, "http://"+h+"/hash_ring")
			if code != 200 || json.Unmarshal([]byte(body), &hr) != nil {
				t.Fatalf("%s: hash_ring: %d %s", p.Spec.Name, code, body)
			}
			ok := len(hr.Ring) == len(ring) && len(hr.SortedKeys) == len(ring) && sort.IntsAreSorted(hr.SortedKeys)
			for tok, addr := range ring {
				ok = ok && hr.Ring[fmt.Sprint(tok)] == addr
			}
			if !ok {
				t.Fatalf("%s: hash_ring %s, want %v", p.Spec.Name, body, ring)
			}
			for _, k := range keys {
				if code, owner := get(t, "http://"+h+"/route_test?key="+k); code != 200 || owner != seedOwner(ring, k) {
					t.Fatalf("%s: route_test %s (position %d) = %d %s, want %s", p.Spec.Name, k, seedPos(k), code, owner, seedOwner(ring, k))
				}
			}
		}
	}
	put := func(k, v string) {
		t.Helper()
		resp, err := http.PostForm(lb.URL+"/route", url.Values{"key": {k}, "val": {v}})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "OK" {
			t.Fatalf("store %s: %d %q", k, resp.StatusCode, body)
		}
	}
	checkValues := func(vals map[string]string) {
		t.Helper()
		for range nodes { // each key through each node in turn
			for _, k := range keys {
				if code, v := get(t, lb.URL+"/route?key="+k); code != 200 || v != vals[k] {
					t.Fatalf("route %s = %d %q, want %q", k, code, v, vals[k])
				}
			}
		}
		if _, v := get(t, lb.URL+"/route?key=unknown-key"); v != "N/A" {
			t.Fatalf("unknown key: %q", v)
		}
	}
	state := func(p *cluster.Proc) string {
		var info struct{ State string }
		if err := getJSON(ctx, "http://"+p.Spec.HTTPAddr+"/internal/info", &info); err != nil {
			t.Fatal(err)
		}
		return info.State
	}

	// reconfigure.sh, unchanged but for the addresses.
	ring := map[int]string{3000: a.Spec.HTTPAddr, 8000: b.Spec.HTTPAddr}
	for _, p := range nodes {
		if code, body := get(t, "http://"+p.Spec.HTTPAddr+"/clear_cache"); code != 200 {
			t.Fatalf("clear_cache on %s: %d %q", p.Spec.Name, code, body)
		}
	}
	data := fmt.Sprintf(`{"nodes":[{"ip":%q,"key":3000},{"ip":%q,"key":8000}]}`, a.Spec.HTTPAddr, b.Spec.HTTPAddr)
	for _, p := range nodes {
		resp, err := http.PostForm("http://"+p.Spec.HTTPAddr+"/hash_ring", url.Values{"data": {data}})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST /hash_ring to %s: %d %q", p.Spec.Name, resp.StatusCode, body)
		}
	}
	checkRing(ring)
	if s := state(c); s != "standby" {
		t.Fatalf("c is %s after reconfigure, want standby", s)
	}
	vals := map[string]string{}
	for i, k := range keys {
		vals[k] = fmt.Sprint("v", i)
		put(k, vals[k])
	}
	checkValues(vals)

	// The standby joins at 5000 and takes over (3000, 5000].
	began := time.Now()
	if code, body := get(t, lb.URL+"/add_node/5000/"+c.Spec.HTTPAddr); code != 200 || body != "OK" {
		t.Fatalf("add_node: %d %q", code, body)
	}
	t.Logf("add_node answered OK in %s", time.Since(began).Round(time.Millisecond))
	ring[5000] = c.Spec.HTTPAddr
	checkRing(ring)
	checkValues(vals)

	// resends counts, over the nodes up, the requests coordinators sent to
	// a replica again since the counts in before were taken.
	var before map[string]float64
	resends := func() float64 {
		total := 0.0
		now := map[string]float64{}
		for _, p := range nodes {
			m, err := bench.Scrape(ctx, p.Spec.HTTPAddr)
			if err != nil {
				t.Fatal(err)
			}
			now[p.Spec.Name] = m["tide_kv_resends_total"][""]
			total += now[p.Spec.Name] - before[p.Spec.Name]
		}
		if before == nil {
			before = now
		}
		return total
	}
	resends()
	// b leaves the ring; its keys move to the two nodes left, and it stays
	// up as a standby.
	began = time.Now()
	if code, body := get(t, lb.URL+"/remove_node/"+b.Spec.HTTPAddr); code != 200 || body != "OK" {
		t.Fatalf("remove_node: %d %q", code, body)
	}
	t.Logf("remove_node answered OK in %s", time.Since(began).Round(time.Millisecond))
	delete(ring, 8000)
	checkRing(ring)
	if s := state(b); s != "standby" {
		t.Fatalf("b is %s after remove_node, want standby", s)
	}
	checkValues(vals)
	for i, k := range keys {
		vals[k] = fmt.Sprint("w", i)
		put(k, vals[k])
	}
	checkValues(vals)
	if code, _ := get(t, lb.URL+"/remove_node/"+b.Spec.HTTPAddr); code != 404 {
		t.Fatalf("removing a removed node: %d, want 404", code)
	}
	// The removed node is then shut down, as an operator would once it is
	// out: still within the transition window of the add, requests
	// through the two nodes left must not wait for it.
	b.Kill()
	rr.set(a.Spec.HTTPAddr, c.Spec.HTTPAddr)
	nodes = []*cluster.Proc{a, c}
	began = time.Now()
	for i, k := range keys {
		vals[k] = fmt.Sprint("x", i)
		put(k, vals[k])
	}
	checkValues(vals)
	t.Logf("with the removed node gone: %d writes and %d reads in %s", len(keys), 2*len(keys)+2, time.Since(began).Round(time.Millisecond))
	if r := resends(); r != 0 {
		t.Fatalf("after remove_node, coordinators sent requests to a replica again %v times: a request waited for a node that left", r)
	}
	// A second removal leaves a ring of one, which answers just as well,
	// through itself and through the standby c has become.
	if code, body := get(t, lb.URL+"/remove_node/"+c.Spec.HTTPAddr); code != 200 || body != "OK" {
		t.Fatalf("remove_node c: %d %q", code, body)
	}
	delete(ring, 5000)
	checkRing(ring)
	for i, k := range keys {
		vals[k] = fmt.Sprint("y", i)
		put(k, vals[k])
	}
	checkValues(vals)
	if r := resends(); r != 0 {
		t.Fatalf("on the ring of one, coordinators sent requests to a replica again %v times", r)
	}
}

// TestChordIdleStart forms a ring as the course's grader does: every node
// started as ./chord IP PORT would be (tide chord IP PORT, and tide node
// --idle), idle until told over msgpack-rpc to create a ring or join one.
func TestChordIdleStart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	local := &cluster.Local{Binary: tideBin, Dir: dir}
	defer local.StopAll(5 * time.Second)
	var addrs []string
	for i := range 4 {
		// Port 0: each node takes free ports and reports them.
		ready := filepath.Join(dir, fmt.Sprintf("n%d.ready.json", i))
		args := []string{"chord", "127.0.0.1", "0", "--tick", "200ms", "--data-dir", fmt.Sprintf("%s/n%d", dir, i), "--addr-file", ready}
		if i%2 == 1 {
			args = []string{"node", "--idle", "--chord-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--tick", "200ms", "--data-dir", fmt.Sprintf("%s/n%d", dir, i), "--addr-file", ready}
		}
		p, err := local.StartReporting(ctx, fmt.Sprint("n", i), args, ready, nil)
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, p.Ready.ChordAddr)
	}
	cl := rpc.NewClient()
	defer cl.Close()
	var refs []chord.Ref
	for _, a := range addrs {
		ref, err := cl.CallRef(ctx, a, "get_info")
		if err != nil {
			t.Fatalf("get_info on an idle node: %v", err)
		}
		refs = append(refs, ref)
		if _, err := cl.CallRef(ctx, a, "find_successor", uint32(7)); err == nil || !strings.Contains(err.Error(), "not in a ring") {
			t.Fatalf("find_successor on an idle node: %v, want an error saying it is not in a ring", err)
		}
	}
	if _, err := cl.Call(ctx, addrs[0], "create"); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs[1:] {
		if _, err := cl.Call(ctx, a, "join", rpc.EncodeRef(refs[0])); err != nil {
			t.Fatalf("join %s: %v", a, err)
		}
	}
	if err := bench.WaitConverged(ctx, cl, addrs, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.txt", "b.txt", "hello", "tide"} {
		want := chord.SuccessorAmong(refs, chord.KeyOf(name))
		for _, a := range addrs {
			got, err := cl.CallRef(ctx, a, "find_successor", uint32(chord.KeyOf(name)))
			if err != nil || got != want {
				t.Fatalf("find_successor(%s) at %s = %v, %v; want %v", name, a, got, err, want)
			}
		}
	}
}

// TestLogLevelFromEnv starts a node with TIDE_LOG_LEVEL=debug and no
// --log-level, and waits for a debug line in its log.
func TestLogLevelFromEnv(t *testing.T) {
	cmd := exec.Command(tideBin, "node", "--idle", "--chord-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "TIDE_LOG_LEVEL=debug", "TIDE_LOG_FORMAT=json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"level":"DEBUG"`) {
				found <- sc.Text()
				return
			}
		}
		close(found)
	}()
	select {
	case line, ok := <-found:
		if !ok {
			t.Fatal("the node exited without a debug line")
		}
		t.Logf("debug line: %s", line)
	case <-time.After(30 * time.Second):
		t.Fatal("no JSON debug line in 30s with TIDE_LOG_LEVEL=debug and TIDE_LOG_FORMAT=json")
	}
}

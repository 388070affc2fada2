package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tide/bench"
	"tide/cluster"
)

// regionNode is a node process started on ports it picked itself
// (reported through --addr-file), so that it can be restarted on them.
type regionNode struct {
	name  string
	args  []string // without the addresses
	addrs map[string]string
	proc  *cluster.Proc
}

// startRegionNode starts a node on port 0 and reads back its addresses;
// with addrs set, it restarts the node on those.
func startRegionNode(t *testing.T, local *cluster.Local, rn *regionNode) {
	t.Helper()
	file := filepath.Join(local.Dir, rn.name+".addrs")
	os.Remove(file)
	chordA, httpA, peerA := "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if rn.addrs != nil {
		chordA, httpA, peerA = rn.addrs["chord"], rn.addrs["http"], rn.addrs["peer"]
	}
	args := append([]string{"node", "--chord-addr", chordA, "--http-addr", httpA, "--peer-addr", peerA,
		"--data-dir", filepath.Join(local.Dir, rn.name), "--addr-file", file, "--tick", "200ms"}, rn.args...)
	p, err := local.Start(context.Background(), rn.name, args, "")
	if err != nil {
		t.Fatal(err)
	}
	rn.proc = p
	waitFor(t, rn.name+" to report its addresses", time.Minute, func() error {
		select {
		case <-p.Done():
			b, _ := os.ReadFile(p.LogPath)
			t.Fatalf("%s exited:\n%s", rn.name, b)
		default:
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &rn.addrs)
	})
}

// kvGet reads key through node (HTTP), returning the status, the value
// and the version header.
func kvGet(node, path string) (int, string, uint64, error) {
	resp, err := http.Get("http://" + node + path)
	if err != nil {
		return 0, "", 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	v, _ := strconv.ParseUint(resp.Header.Get("X-Tide-Version"), 10, 64)
	return resp.StatusCode, string(b), v, nil
}

func kvPut(node, key, val string) (uint64, error) {
	req, _ := http.NewRequest(http.MethodPut, "http://"+node+"/kv/"+key, strings.NewReader(val))
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("put %s: %s: %s", key, resp.Status, b)
	}
	return strconv.ParseUint(resp.Header.Get("X-Tide-Version"), 10, 64)
}

// TestKVRegions runs two regions of three node processes each. Region A
// replicates to B with a delay. A write acknowledged in A is read at once
// through every A node; B gets it after the delay, through every B node,
// and A's nodes export the lag. Then writes are made through one A node,
// which is killed with SIGKILL while they wait in its outbox, and a B node
// is killed too; both restart, and every write ends up in B, on the
// restarted B node's own storage as well.
func TestKVRegions(t *testing.T) {
	const delay = time.Second
	local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
	defer local.StopAll(5 * time.Second)

	var a, b []*regionNode
	for i := range 3 {
		n := &regionNode{name: fmt.Sprintf("b%d", i+1), args: []string{"--region", "B"}}
		if i > 0 {
			n.args = append(n.args, "--join", b[0].addrs["chord"])
		}
		startRegionNode(t, local, n)
		b = append(b, n)
	}
	for i := range 3 {
		n := &regionNode{name: fmt.Sprintf("a%d", i+1), args: []string{"--region", "A", "--region-peer", "B=" + b[0].addrs["chord"],
			"--region-delay", delay.String()}}
		if i > 0 {
			n.args = append(n.args, "--join", a[0].addrs["chord"])
		}
		startRegionNode(t, local, n)
		a = append(a, n)
	}
	for _, region := range [][]*regionNode{a, b} {
		for _, n := range region {
			waitFor(t, n.name+" to see its region's 3 members", time.Minute, func() error {
				_, body, _, err := kvGet(n.addrs["http"], "/hash_ring")
				if err != nil {
					return err
				}
				var hr struct{ Ring map[string]string }
				json.Unmarshal([]byte(body), &hr)
				if len(hr.Ring) != 3 {
					return fmt.Errorf("%d members", len(hr.Ring))
				}
				return nil
			})
		}
	}

	// A write acknowledged in A: read at once through every A node.
	start := time.Now()
	v, err := kvPut(a[0].addrs["http"], "post-1", "hello")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range a {
		code, val, got, err := kvGet(n.addrs["http"], "/kv/post-1")
		if err != nil || code != 200 || val != "hello" || got != v {
			t.Fatalf("read in A through %s right after the write: %d %q version %d (want %d), %v", n.name, code, val, got, v, err)
		}
	}
	code, _, _, err := kvGet(b[0].addrs["http"], "/kv/post-1")
	if err != nil {
		t.Fatal(err)
	}
	if early := time.Since(start) < delay; early && code == 200 {
		t.Fatalf("B has the write before the region delay of %s passed", delay)
	}
	for _, n := range b {
		waitFor(t, "post-1 in B through "+n.name, time.Minute, func() error {
			code, val, got, err := kvGet(n.addrs["http"], "/kv/post-1")
			if err != nil || code != 200 || val != "hello" || got != v {
				return fmt.Errorf("%d %q version %d, %v", code, val, got, err)
			}
			return nil
		})
	}
	waitFor(t, "the region lag metric", time.Minute, func() error {
		m, err := bench.Scrape(context.Background(), a[0].addrs["http"])
		if err != nil {
			return err
		}
		lag, ok := m["tide_kv_region_lag_seconds"]["B"]
		switch {
		case !ok:
			return fmt.Errorf("no tide_kv_region_lag_seconds{region=\"B\"} in %v", m["tide_kv_region_lag_seconds"])
		case m["tide_kv_region_pending"]["B"] != 0:
			return fmt.Errorf("%v writes pending", m["tide_kv_region_pending"]["B"])
		case lag < delay.Seconds():
			// The write waited out the delay, so its replication took
			// at least that long.
			return fmt.Errorf("lag %vs, below the region delay", lag)
		}
		return nil
	})
	for _, n := range b {
		m, err := bench.Scrape(context.Background(), n.addrs["http"])
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m["tide_kv_region_lag_seconds"]; ok {
			t.Fatalf("%s (B, replicating nowhere) reports a region lag: %v", n.name, m["tide_kv_region_lag_seconds"])
		}
	}

	// Writes through a1, which is killed while they wait out the delay in
	// its outbox; b2 is killed too. Both restart.
	const k = 100
	versions := map[string]uint64{}
	start = time.Now()
	for i := range k {
		key := fmt.Sprintf("crash-%d", i)
		v, err := kvPut(a[0].addrs["http"], key, "v-"+key)
		if err != nil {
			t.Fatal(err)
		}
		versions[key] = v
	}
	m, err := bench.Scrape(context.Background(), a[0].addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	pending := m["tide_kv_region_pending"]["B"]
	inDelay := time.Since(start) < delay
	a[0].proc.Kill()
	b[1].proc.Kill()
	<-a[0].proc.Done()
	<-b[1].proc.Done()
	t.Logf("killed a1 with %v of %d writes pending for B (all within the delay: %v)", pending, k, inDelay)
	if inDelay && pending == 0 {
		t.Fatalf("no write pending for B within the region delay")
	}
	startRegionNode(t, local, a[0])
	startRegionNode(t, local, b[1])
	for key, v := range versions {
		waitFor(t, key+" in B", 2*time.Minute, func() error {
			code, val, got, err := kvGet(b[2].addrs["http"], "/kv/"+key)
			if err != nil || code != 200 || val != "v-"+key || got != v {
				return fmt.Errorf("%d %q version %d (want %d), %v", code, val, got, v, err)
			}
			return nil
		})
	}
	// Every B node holds every write itself (N=3 of 3), the restarted
	// one included, through hinted hand-off and anti-entropy.
	for _, n := range b {
		for key, v := range versions {
			waitFor(t, key+" on "+n.name+"'s own storage", 2*time.Minute, func() error {
				code, _, got, err := kvGet(n.addrs["http"], "/internal/kv/local?key="+key)
				if err != nil || code != 200 || got != v {
					return fmt.Errorf("%d version %d (want %d), %v", code, got, v, err)
				}
				return nil
			})
		}
	}
	waitFor(t, "a1's outbox to empty", time.Minute, func() error {
		m, err := bench.Scrape(context.Background(), a[0].addrs["http"])
		if err != nil {
			return err
		}
		if p := m["tide_kv_region_pending"]["B"]; p != 0 {
			return fmt.Errorf("%v pending", p)
		}
		return nil
	})
}

// TestRegionFlags: bad region settings are refused with a clear error.
func TestRegionFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--region-peer", "B=127.0.0.1:1"}, "needs --region"},
		{[]string{"--region", "A", "--region-peer", "B"}, "NAME=CHORDADDR"},
		{[]string{"--region", "A", "--region-peer", "A=127.0.0.1:1"}, "own region"},
		{[]string{"--region", "a b"}, "region \"a b\""},
		{[]string{"--region", "A", "--region-delay", "-1s"}, "--region-delay"},
	} {
		args := append([]string{"node", "--chord-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "d")}, c.args...)
		out, err := execTide(args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("tide %s: %v\n%s\nwant an error saying %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
}

// execTide runs tide with args and returns its combined output.
func execTide(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tideBin, args...).CombinedOutput()
	return string(out), err
}

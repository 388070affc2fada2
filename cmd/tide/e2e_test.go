package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"tide/bench"
	"tide/chord"
	"tide/cluster"
	"tide/store"
	"tide/store/engine"
)

// tideBin is the tide binary built once for the real-process tests.
var tideBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tide-e2e-bin-")
	if err != nil {
		panic(err)
	}
	tideBin = filepath.Join(dir, "tide")
	// Pure Go, as the Docker image's binary and `make build` are: one
	// compile of the dependencies serves them all.
	build := exec.Command("go", "build", "-o", tideBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build tide: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fileData(name string) []byte {
	r := rand.New(rand.NewPCG(uint64(chord.KeyOf(name)), 7))
	b := make([]byte, 1000+r.IntN(60000))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func runTide(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(tideBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("tide %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestEightNodesSurviveTwoCrashes is the real-process scenario: 8
// node processes on loopback, 200 files uploaded through random entry
// nodes, 2 nodes that are not successors of each other killed with
// SIGKILL, and every file still downloads byte-identical. It then asks a
// third node to leave gracefully and checks again.
func TestEightNodesSurviveTwoCrashes(t *testing.T) {
	ctx := context.Background()
	local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
	defer local.StopAll(5 * time.Second)
	procs, err := bench.StartRing(ctx, local, 8, 3, []string{"--tick", "200ms", "--full-repair", "3s"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	c := store.NewClient()
	defer c.Close()
	addrs := func(ps []*cluster.Proc) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Spec.ChordAddr)
		}
		return out
	}
	if err := bench.WaitConverged(ctx, c.RPC, addrs(procs), time.Minute); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(42, 42))
	var names []string
	for i := range 200 {
		name := fmt.Sprintf("file-%03d.bin", i)
		names = append(names, name)
		via := procs[rng.IntN(len(procs))].Spec.ChordAddr
		if err := c.Upload(ctx, via, name, bytes.NewReader(fileData(name))); err != nil {
			t.Fatalf("upload %s via %s: %v", name, via, err)
		}
	}
	// A few through the CLI itself.
	dir := t.TempDir()
	for i := range 3 {
		p := filepath.Join(dir, fmt.Sprintf("cli-%d.txt", i))
		os.WriteFile(p, fileData(p), 0o644)
		runTide(t, "upload", "-q", p, procs[i].Spec.ChordAddr)
	}

	// Order the processes around the ring and kill two that are not
	// neighbours: positions 1 and 4.
	ids := map[string]chord.ID{}
	for _, p := range procs {
		ids[p.Spec.ChordAddr] = chord.IDOfAddr(p.Spec.ChordAddr)
	}
	ring := slices.Clone(procs)
	slices.SortFunc(ring, func(a, b *cluster.Proc) int { return int(ids[a.Spec.ChordAddr]>>1) - int(ids[b.Spec.ChordAddr]>>1) })
	ring[1].Kill()
	ring[4].Kill()
	t.Logf("killed %s and %s", ring[1].Spec.Name, ring[4].Spec.Name)
	survivors := []*cluster.Proc{ring[0], ring[2], ring[3], ring[5], ring[6], ring[7]}
	if err := bench.WaitConverged(ctx, c.RPC, addrs(survivors), time.Minute); err != nil {
		t.Fatal(err)
	}
	checkAll := func(entries []*cluster.Proc) {
		t.Helper()
		for _, name := range names {
			via := entries[rng.IntN(len(entries))].Spec.ChordAddr
			var buf bytes.Buffer
			waitFor(t, "download of "+name, 30*time.Second, func() error {
				buf.Reset()
				return c.Download(ctx, via, name, &buf, nil)
			})
			if !bytes.Equal(buf.Bytes(), fileData(name)) {
				t.Fatalf("%s via %s: content differs (%d bytes)", name, via, buf.Len())
			}
		}
		for i := range 3 {
			p := filepath.Join(dir, fmt.Sprintf("cli-%d.txt", i))
			out := filepath.Join(dir, fmt.Sprintf("out-%d", i))
			runTide(t, "download", "-q", filepath.Base(p), entries[i].Spec.ChordAddr, "-o", out)
			got, _ := os.ReadFile(out)
			if !bytes.Equal(got, fileData(p)) {
				t.Fatalf("CLI download of %s differs", p)
			}
		}
	}
	checkAll(survivors)

	// Replicas come back to 3 for every file.
	waitFor(t, "3 copies of every file", time.Minute, func() error { return copiesAtLeast(ctx, survivors, names, 3) })

	// Graceful leave of another node loses nothing.
	leaver := survivors[2]
	out := runTide(t, "node", "leave", leaver.Spec.ChordAddr)
	t.Log(strings.TrimSpace(out))
	select {
	case <-leaver.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("leaving node did not exit")
	}
	rest := slices.DeleteFunc(slices.Clone(survivors), func(p *cluster.Proc) bool { return p == leaver })
	if err := bench.WaitConverged(ctx, c.RPC, addrs(rest), time.Minute); err != nil {
		t.Fatal(err)
	}
	checkAll(rest)
	waitFor(t, "3 copies after leave", time.Minute, func() error { return copiesAtLeast(ctx, rest, names, 3) })

	// tide ring --json sees the 5 remaining members.
	var infos []store.Info
	if err := json.Unmarshal([]byte(runTide(t, "ring", "--json", rest[0].Spec.ChordAddr)), &infos); err != nil {
		t.Fatal(err)
	}
	if len(infos) != len(rest) {
		t.Fatalf("tide ring shows %d nodes, want %d", len(infos), len(rest))
	}
}

func copiesAtLeast(ctx context.Context, procs []*cluster.Proc, names []string, n int) error {
	count := map[string]int{}
	for _, p := range procs {
		var list []engine.Meta
		if err := getJSON(ctx, "http://"+p.Spec.HTTPAddr+"/files?local=1", &list); err != nil {
			return err
		}
		for _, m := range list {
			if !m.Deleted {
				count[m.Name]++
			}
		}
	}
	for _, name := range names {
		if count[name] < n {
			return fmt.Errorf("%s has %d copies", name, count[name])
		}
	}
	return nil
}

// TestSeedScripts runs the course's client flow from Python against a ring
// laid out like the seed's deployment: every node on its own address with
// ports 5057 and 5058.
func TestSeedScripts(t *testing.T) {
	py := "/usr/bin/python3"
	if exec.Command(py, "-c", "import msgpack").Run() != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("python3-msgpack is not installed; the README set-up installs it")
		}
		t.Skip("python3 with msgpack not available")
	}
	ctx := context.Background()
	local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
	defer local.StopAll(5 * time.Second)
	layout := cluster.Layout{HostPerNode: true, HostPrefix: "127.0.9.", BasePort: 5057}
	var first string
	var addrs []string
	var procs []*cluster.Proc
	for i := range 3 {
		ca, ha := layout.Addrs(i)
		p, err := local.Launch(ctx, cluster.NodeSpec{Name: fmt.Sprint("n", i), ChordAddr: ca, HTTPAddr: ha, Join: first, Extra: []string{"--tick", "200ms", "--allow-kill"}})
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		if first == "" {
			first = ca
		}
		addrs = append(addrs, ca)
	}
	c := store.NewClient()
	defer c.Close()
	if err := bench.WaitConverged(ctx, c.RPC, addrs, time.Minute); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script, _ := filepath.Abs("testdata/seed_client.py")
	for i := range 6 {
		name := fmt.Sprintf("seed-%d.txt", i)
		p := filepath.Join(dir, name)
		os.WriteFile(p, fileData(name), 0o644)
		ip := fmt.Sprintf("127.0.9.%d", 1+i%3)
		out, err := exec.Command(py, script, "upload", p, ip).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "204" {
			t.Fatalf("upload.py %s %s: %v %s", name, ip, err, out)
		}
		dl := filepath.Join(dir, "dl-"+name)
		ip = fmt.Sprintf("127.0.9.%d", 1+(i+1)%3)
		out, err = exec.Command(py, script, "download", name, ip, dl).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "200" {
			t.Fatalf("download.py %s %s: %v %s", name, ip, err, out)
		}
		got, _ := os.ReadFile(dl)
		if !bytes.Equal(got, fileData(name)) {
			t.Fatalf("%s: downloaded bytes differ", name)
		}
	}
	// kill() stops the node process, as the course's fault tests use it.
	if _, err := c.RPC.Call(ctx, addrs[2], "kill"); err != nil {
		t.Fatalf("kill: %v", err)
	}
	select {
	case <-procs[2].Done():
	case <-time.After(30 * time.Second):
		t.Fatal("node did not exit after kill()")
	}
}

func getJSON(ctx context.Context, u string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// controllerAddr waits until a `tide autoscale --listen 127.0.0.1:0`
// whose output goes to out says where it serves, and returns that address.
func controllerAddr(t *testing.T, out *syncBuffer) string {
	t.Helper()
	re := regexp.MustCompile(`serving events and status.* addr=(\S+)`)
	var addr string
	waitFor(t, "the controller to say where it serves", time.Minute, func() error {
		m := re.FindStringSubmatch(out.String())
		if m == nil {
			return fmt.Errorf("not yet:\n%s", out.String())
		}
		addr = m[1]
		return nil
	})
	return addr
}

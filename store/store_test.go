package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tide/chord"
	"tide/store/engine"
	"tide/store/status"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func testLog() *slog.Logger {
	if os.Getenv("TIDE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startTestNode(t testing.TB, join string, replicas int, mod func(*Config)) *Node {
	t.Helper()
	// Port 0: each listener takes a free port and the node reports it (a
	// port picked first and bound later could be taken in between by a
	// test package running alongside).
	cfg := Config{
		ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), Join: join,
		Replicas: replicas, TickInterval: 50 * time.Millisecond, RepairInterval: 50 * time.Millisecond,
		FullRepairInterval: time.Second, Log: testLog(),
	}
	if mod != nil {
		mod(&cfg)
	}
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// restartConfig is n's configuration with the addresses it bound, to
// start it again where the ring knows it.
func restartConfig(n *Node) Config {
	cfg := n.cfg
	cfg.ChordAddr, cfg.HTTPAddr = n.ring.Self().Addr(), n.HTTPAddr()
	return cfg
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ringConverged(nodes []*Node) bool {
	var ids []chord.Ref
	for _, n := range nodes {
		ids = append(ids, n.ring.Self())
	}
	for _, n := range nodes {
		want := chord.SuccessorAmong(ids, n.ring.Self().ID+1)
		if n.ring.Successor(0) != want {
			return false
		}
	}
	return true
}

func startCluster(t *testing.T, size, replicas int) []*Node {
	nodes := []*Node{startTestNode(t, "", replicas, nil)}
	for len(nodes) < size {
		nodes = append(nodes, startTestNode(t, nodes[0].ring.Self().Addr(), replicas, nil))
	}
	waitFor(t, "ring to converge", func() bool { return ringConverged(nodes) })
	return nodes
}

func content(name string, size int) []byte {
	r := rand.New(rand.NewPCG(uint64(len(name)), uint64(chord.KeyOf(name))))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func upload(t *testing.T, c *Client, via *Node, name string, data []byte) {
	t.Helper()
	if err := c.Upload(context.Background(), via.ring.Self().Addr(), name, bytes.NewReader(data)); err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
}

func download(c *Client, via *Node, name string) ([]byte, error) {
	var buf bytes.Buffer
	err := c.Download(context.Background(), via.ring.Self().Addr(), name, &buf, nil)
	return buf.Bytes(), err
}

func TestUploadDownloadReplicated(t *testing.T) {
	nodes := startCluster(t, 4, 3)
	c := NewClient()
	defer c.Close()
	files := map[string][]byte{}
	for i := range 30 {
		name := fmt.Sprintf("file-%d.txt", i)
		files[name] = content(name, 100+i*37)
		upload(t, c, nodes[i%len(nodes)], name, files[name])
	}
	for name, data := range files {
		for _, via := range nodes {
			got, err := download(c, via, name)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("download %s via %s: %v (%d bytes, want %d)", name, via.ring.Self(), err, len(got), len(data))
			}
		}
	}
	// A download names the node whose copy it sent: one that holds the
	// version it says, whichever node it went through.
	for i, via := range nodes {
		name := fmt.Sprintf("file-%d.txt", i)
		resp, err := http.Get("http://" + via.HTTPAddr() + "/files/" + name)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		by, version := resp.Header.Get("X-Tide-Served-By"), resp.Header.Get("X-Tide-Version")
		held := false
		for _, n := range nodes {
			if m, ok, _ := n.eng.Get(name); ok && n.ring.Self().Addr() == by && strconv.FormatUint(m.Version, 10) == version {
				held = true
			}
		}
		if !held {
			t.Errorf("%s through %s: served by %q, version %q, which no node holds", name, via.ring.Self().Addr(), by, version)
		}
	}
	// Every file is on exactly 3 nodes.
	waitFor(t, "3 copies of every file", func() bool {
		for name := range files {
			if k := copies(nodes, name); k != 3 {
				for _, n := range nodes {
					m, ok, _ := n.eng.Get(name)
					t.Logf("%s (key %d) has %d copies: node %d pred %d succ %v has=%v %+v", name, chord.KeyOf(name), k, n.ring.Self().ID, n.ring.Predecessor().ID, n.ring.Successors(), ok, m)
				}
				return false
			}
		}
		return true
	})
}

func copies(nodes []*Node, name string) int {
	k := 0
	for _, n := range nodes {
		if m, ok, _ := n.eng.Get(name); ok && !m.Deleted {
			k++
		}
	}
	return k
}

func TestBadInput(t *testing.T) {
	nodes := startCluster(t, 2, 2)
	base := "http://" + nodes[0].HTTPAddr()
	post := func(body, ctype string) int {
		resp, err := http.Post(base+"/upload", ctype, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	form := func(field, filename, data string) string {
		return "--XX\r\nContent-Disposition: form-data; name=\"" + field + "\"; filename=\"" + filename + "\"\r\n\r\n" + data + "\r\n--XX--\r\n"
	}
	mp := "multipart/form-data; boundary=XX"
	cases := []struct {
		what string
		code int
		got  int
	}{
		{"missing files field", 400, post(form("other", "a.txt", "x"), mp)},
		{"not multipart", 400, post("hello", "text/plain")},
		{"traversal", 400, post(form("files", "../x", "x"), mp)},
		{"absolute path", 400, post(form("files", "/etc/passwd", "x"), mp)},
		{"truncated body", 400, post("--XX\r\nContent-Disposition: form-data; name=\"files\"; filename=\"t.txt\"\r\n\r\npartial data", mp)},
		{"good upload", 204, post(form("files", "ok.txt", "hello"), mp)},
	}
	for _, c := range cases {
		if c.got != c.code {
			t.Errorf("%s: status %d, want %d", c.what, c.got, c.code)
		}
	}
	// An empty body with the right type, and an empty file (which is a
	// file: uploadserver stores it too).
	if code := post("--XX--\r\n", mp); code != 400 {
		t.Errorf("form without parts: %d, want 400", code)
	}
	if code := post(form("files", "empty.txt", ""), mp); code != 204 {
		t.Errorf("zero-byte file: %d, want 204", code)
	}
	for _, n := range nodes {
		if _, ok, _ := n.eng.Get("t.txt"); ok {
			t.Errorf("truncated upload left t.txt on %s", n.ring.Self())
		}
	}
	for _, p := range []string{"/..%2fx", "/files/..%2f..%2fetc%2fpasswd", "/a%00b"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("GET %s: %d, want 400", p, resp.StatusCode)
		}
	}
	// Same name twice replaces, no duplicates.
	if code := post(form("files", "ok.txt", "second"), mp); code != 204 {
		t.Fatalf("re-upload: %d", code)
	}
	c := NewClient()
	defer c.Close()
	got, err := download(c, nodes[1], "ok.txt")
	if err != nil || string(got) != "second" {
		t.Fatalf("after re-upload got %q, %v", got, err)
	}
	var list []engine.Meta
	if err := status.GetJSON(context.Background(), c.HTTP, base+"/files", &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "empty.txt" || list[1].Name != "ok.txt" {
		t.Fatalf("listing after re-upload: %+v", list)
	}
}

func TestOversizedRefused(t *testing.T) {
	n := startTestNode(t, "", 1, func(c *Config) { c.MaxFileSize = 1000 })
	c := NewClient()
	defer c.Close()
	err := c.Upload(context.Background(), n.ring.Self().Addr(), "huge", bytes.NewReader(make([]byte, 1001)))
	if err == nil || !strings.Contains(err.Error(), "413") {
		t.Fatalf("oversized upload: %v, want 413", err)
	}
	req, _ := http.NewRequest(http.MethodPut, "http://"+n.HTTPAddr()+"/files/huge", bytes.NewReader(make([]byte, 5000)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("oversized PUT: %d, want 413", resp.StatusCode)
	}
	if n.eng.Files() != 0 {
		t.Fatal("oversized upload was stored")
	}
}

func TestCapacityRefused(t *testing.T) {
	n := startTestNode(t, "", 1, func(c *Config) { c.Capacity = 1000 })
	c := NewClient()
	defer c.Close()
	upload(t, c, n, "small", make([]byte, 600))
	err := c.Upload(context.Background(), n.ring.Self().Addr(), "big", bytes.NewReader(make([]byte, 600)))
	if err == nil || !strings.Contains(err.Error(), "507") {
		t.Fatalf("upload past capacity: %v, want 507", err)
	}
	if got, err := download(c, n, "small"); err != nil || len(got) != 600 {
		t.Fatalf("small file after refusal: %d bytes, %v", len(got), err)
	}
	if _, ok, _ := n.eng.Get("big"); ok {
		t.Fatal("refused upload was stored")
	}
}

// TestJoinMovesOwnedFiles checks that a joining node receives exactly the
// files it now owns, and that every file stays readable throughout.
func TestJoinMovesOwnedFiles(t *testing.T) {
	nodes := startCluster(t, 3, 1)
	c := NewClient()
	defer c.Close()
	files := map[string][]byte{}
	for i := range 120 {
		name := fmt.Sprintf("j-%d", i)
		files[name] = content(name, 2000)
		upload(t, c, nodes[i%3], name, files[name])
	}
	stop := make(chan struct{})
	readErrs := make(chan error, 1)
	go func() {
		for {
			for name, data := range files {
				select {
				case <-stop:
					close(readErrs)
					return
				default:
				}
				got, err := download(c, nodes[0], name)
				if err != nil || !bytes.Equal(got, data) {
					readErrs <- fmt.Errorf("read %s during join: %v", name, err)
					close(readErrs)
					return
				}
			}
		}
	}()
	joiner := startTestNode(t, nodes[1].ring.Self().Addr(), 1, nil)
	all := append(nodes, joiner)
	waitFor(t, "ring with joiner", func() bool { return ringConverged(all) })
	want := map[string]bool{}
	refs := []chord.Ref{}
	for _, n := range all {
		refs = append(refs, n.ring.Self())
	}
	for name := range files {
		if chord.SuccessorAmong(refs, chord.KeyOf(name)) == joiner.ring.Self() {
			want[name] = true
		}
	}
	waitFor(t, "joiner to hold exactly its files", func() bool {
		have := map[string]bool{}
		joiner.eng.Scan(0, 0, func(m engine.Meta) bool { have[m.Name] = true; return true })
		if len(have) != len(want) {
			return false
		}
		for name := range want {
			if !have[name] || copies(all, name) != 1 {
				return false
			}
		}
		return true
	})
	close(stop)
	if err := <-readErrs; err != nil {
		t.Fatal(err)
	}
	t.Logf("joiner received %d of %d files", len(want), len(files))
}

func TestGracefulLeaveLosesNothing(t *testing.T) {
	nodes := startCluster(t, 4, 2)
	c := NewClient()
	defer c.Close()
	files := map[string][]byte{}
	for i := range 80 {
		name := fmt.Sprintf("l-%d", i)
		files[name] = content(name, 500)
		upload(t, c, nodes[i%4], name, files[name])
	}
	leaver := nodes[2]
	moved, err := c.Leave(context.Background(), leaver.ring.Self().Addr())
	if err != nil {
		t.Fatal(err)
	}
	<-leaver.Stopped()
	leaver.Close()
	rest := []*Node{nodes[0], nodes[1], nodes[3]}
	waitFor(t, "ring without leaver", func() bool { return ringConverged(rest) })
	for name, data := range files {
		got, err := download(c, rest[0], name)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s after leave: %v", name, err)
		}
	}
	waitFor(t, "2 copies of every file", func() bool {
		for name := range files {
			if copies(rest, name) != 2 {
				return false
			}
		}
		return true
	})
	t.Logf("leave moved %d copies", moved)
}

func TestCrashReReplicates(t *testing.T) {
	nodes := startCluster(t, 5, 3)
	c := NewClient()
	defer c.Close()
	files := map[string][]byte{}
	for i := range 60 {
		name := fmt.Sprintf("c-%d", i)
		files[name] = content(name, 300)
		upload(t, c, nodes[i%5], name, files[name])
	}
	nodes[1].Close()
	rest := []*Node{nodes[0], nodes[2], nodes[3], nodes[4]}
	waitFor(t, "ring to heal", func() bool { return ringConverged(rest) })
	waitFor(t, "3 copies again", func() bool {
		for name := range files {
			if copies(rest, name) != 3 {
				return false
			}
		}
		return true
	})
	for name, data := range files {
		got, err := download(c, rest[2], name)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s after crash: %v", name, err)
		}
	}
}

func TestDeleteAndRestart(t *testing.T) {
	nodes := startCluster(t, 3, 3)
	c := NewClient()
	defer c.Close()
	upload(t, c, nodes[0], "gone.txt", []byte("bye"))
	upload(t, c, nodes[0], "kept.txt", []byte("stay"))
	req, _ := http.NewRequest(http.MethodDelete, "http://"+nodes[1].HTTPAddr()+"/files/gone.txt", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("delete: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, err := download(c, nodes[2], "gone.txt"); err == nil {
		t.Fatal("deleted file still downloads")
	}
	// Restart a node from its data directory; it rejoins and keeps its files.
	cfg := restartConfig(nodes[2])
	nodes[2].Close()
	cfg.Join = ""
	n2, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	all := []*Node{nodes[0], nodes[1], n2}
	waitFor(t, "restarted node back in the ring", func() bool { return ringConverged(all) })
	if m, ok, _ := n2.eng.Get("kept.txt"); !ok || m.Deleted {
		t.Fatal("restarted node lost kept.txt")
	}
	got, err := download(c, n2, "kept.txt")
	if err != nil || string(got) != "stay" {
		t.Fatalf("kept.txt after restart: %q %v", got, err)
	}
}

// A node whose --join member is not up yet keeps trying, and joins once it
// starts; one that cannot reach it within JoinTimeout fails with the cause.
func TestJoinRetriesUntilMemberStarts(t *testing.T) {
	seed := freeAddr(t)
	type res struct {
		n   *Node
		err error
	}
	done := make(chan res, 1)
	go func() {
		cfg := Config{ChordAddr: freeAddr(t), HTTPAddr: freeAddr(t), DataDir: t.TempDir(), Join: seed, Replicas: 2,
			TickInterval: 50 * time.Millisecond, RepairInterval: 50 * time.Millisecond, FullRepairInterval: time.Second,
			JoinTimeout: time.Minute, Log: testLog()}
		n, err := Start(context.Background(), cfg)
		done <- res{n, err}
	}()
	time.Sleep(700 * time.Millisecond) // a few refused attempts
	a := startTestNode(t, "", 2, func(c *Config) { c.ChordAddr = seed })
	var b *Node
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("joining node failed instead of retrying: %v", r.err)
		}
		b = r.n
		t.Cleanup(func() { b.Close() })
	case <-time.After(time.Minute):
		t.Fatal("joining node still starting a minute after its member came up")
	}
	waitFor(t, "the two nodes to form one ring", func() bool { return ringConverged([]*Node{a, b}) })

	_, err := Start(context.Background(), Config{ChordAddr: freeAddr(t), HTTPAddr: freeAddr(t), DataDir: t.TempDir(),
		Join: freeAddr(t), JoinTimeout: 600 * time.Millisecond, Log: testLog()})
	if err == nil || !strings.Contains(err.Error(), "gave up after") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("join of a member that never answers: %v; want a refusal after retries", err)
	}
}

// TestStartPortInUse checks that a node whose address is taken fails to
// start with an error that names the address and unwraps to EADDRINUSE
// (startTestNode retries on it).
func TestStartPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := Config{ChordAddr: ln.Addr().String(), HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), Replicas: 3, Log: testLog()}
	n, err := Start(context.Background(), cfg)
	if err == nil {
		n.Close()
		t.Fatal("started on a port in use")
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("error %q: want EADDRINUSE naming %s", err, ln.Addr())
	}
}

package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// fillDisk gives n's engine a reserve of 64 MiB on a filesystem of 1 GiB
// that it sees as the returned setter says: setting the free bytes also
// drops the engine's last measurement.
func fillDisk(t *testing.T, n *Node) (setFree func(int64)) {
	t.Helper()
	var free atomic.Int64
	free.Store(1 << 30)
	f := func(string) (int64, int64, error) { return free.Load(), 1 << 30, nil }
	n.eng.SetStatfs(f)
	if err := n.eng.SetDiskReserve(64 << 20); err != nil {
		t.Fatal(err)
	}
	return func(v int64) { free.Store(v); n.eng.SetStatfs(f) }
}

func httpDo(t *testing.T, method, u, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDiskFullRefusesWrites checks that a node whose disk is below the
// reserve refuses every kind of client write with a clear error (507 over
// HTTP, "disk full" over RESP), still serves reads and deletes, and takes
// writes again once space returns.
func TestDiskFullRefusesWrites(t *testing.T) {
	n := startTestNode(t, "", 1, func(c *Config) { c.RESPAddr = "127.0.0.1:0" })
	setFree := fillDisk(t, n)
	base := "http://" + n.HTTPAddr()
	if code, b := httpDo(t, http.MethodPut, base+"/kv/kept", "before"); code/100 != 2 {
		t.Fatalf("kv put: %d %s", code, b)
	}
	c := NewClient()
	defer c.Close()
	upload(t, c, n, "kept.txt", []byte("file before"))
	rc, err := net.Dial("tcp", n.respAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	r := bufio.NewReader(rc)

	setFree(60 << 20) // below the 64 MiB reserve
	if code, b := httpDo(t, http.MethodPut, base+"/kv/k", "v"); code != http.StatusInsufficientStorage || !strings.HasPrefix(b, "disk full") {
		t.Fatalf("kv put on a full disk: %d %q, want 507 disk full", code, b)
	}
	if code, b := httpDo(t, http.MethodPost, base+"/route", "key=k&val=v"); code != http.StatusInsufficientStorage {
		t.Fatalf("POST /route on a full disk: %d %q, want 507", code, b)
	}
	if got := respDo(t, rc, r, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"); !strings.HasPrefix(got, "-ERR disk full") {
		t.Fatalf("SET on a full disk: %q", got)
	}
	// A pipeline: the write is refused, the reads around it answered.
	respPipeline(rc, "*2\r\n$3\r\nGET\r\n$4\r\nkept\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$4\r\nkept\r\n")
	for i, want := range []string{"$6", "-ERR disk full", "$6"} {
		got := respLine(t, r)
		if !strings.HasPrefix(got, want) {
			t.Fatalf("pipeline reply %d: %q, want %s...", i, got, want)
		}
		if want == "$6" {
			if v := respLine(t, r); v != "before\r\n" {
				t.Fatalf("pipeline GET: %q", v)
			}
		}
	}
	err = c.Upload(context.Background(), n.ring.Self().Addr(), "new.txt", bytes.NewReader([]byte("refused")))
	if err == nil || !strings.Contains(err.Error(), "507") || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("upload on a full disk: %v, want 507 disk full", err)
	}
	if _, ok, _ := n.eng.Get("new.txt"); ok {
		t.Fatal("a refused upload was stored")
	}
	// Reads answer; deletes, which return space, are taken.
	if code, b := httpGet(t, base+"/kv/kept"); code != 200 || b != "before" {
		t.Fatalf("kv get on a full disk: %d %q", code, b)
	}
	if got, err := download(c, n, "kept.txt"); err != nil || string(got) != "file before" {
		t.Fatalf("download on a full disk: %q %v", got, err)
	}
	if code, b := httpDo(t, http.MethodDelete, base+"/kv/kept", ""); code/100 != 2 {
		t.Fatalf("kv delete on a full disk: %d %s", code, b)
	}
	if n.eng.WritesRefused() == 0 {
		t.Fatal("no refusal counted")
	}

	setFree(1 << 30) // space returns
	if code, b := httpDo(t, http.MethodPut, base+"/kv/k", "after"); code/100 != 2 {
		t.Fatalf("kv put once space returned: %d %s", code, b)
	}
	if got := respDo(t, rc, r, "*3\r\n$3\r\nSET\r\n$1\r\nj\r\n$1\r\nv\r\n"); got != "+OK\r\n" {
		t.Fatalf("SET once space returned: %q", got)
	}
	upload(t, c, n, "new.txt", []byte("accepted"))
}

// TestDiskFullReplicaRefuses checks that a replica whose disk is below
// the reserve does not store a peer's write, that the write still
// succeeds on the others' quorum, and that the replica gets it (hinted
// hand-off or anti-entropy) once its space returns.
func TestDiskFullReplicaRefuses(t *testing.T) {
	nodes := kvCluster(t, 3, nil)
	setFree := fillDisk(t, nodes[2])
	setFree(1 << 20)
	ctx := context.Background()
	for i := range 20 {
		key := []byte(fmt.Sprintf("r%d", i))
		if _, err := nodes[i%2].kv.Put(ctx, key, []byte("v"), 2); err != nil {
			t.Fatalf("put %s through a healthy node with W=2: %v", key, err)
		}
	}
	for i := range 20 {
		if _, ok, _ := nodes[2].eng.KV().Get([]byte(fmt.Sprintf("r%d", i))); ok {
			t.Fatalf("the full replica stored r%d", i)
		}
	}
	// A put returns on its W=2 acknowledgements, which the healthy
	// replicas may send before the full one has looked at the write.
	waitFor(t, "the full replica to count a refusal", func() bool { return nodes[2].eng.WritesRefused() > 0 })
	// The coordinators hold hints for it, and say so by target.
	waitFor(t, "hints pending for the full replica in the coordinators' metrics", func() bool {
		_, body := httpGet(t, "http://"+nodes[0].HTTPAddr()+"/metrics")
		return strings.Contains(body, `tide_kv_hints_pending{target="`+nodes[2].addrs()["peer"]+`"}`)
	})
	setFree(1 << 30)
	waitFor(t, "the replica to get every write once its space returned", func() bool {
		for i := range 20 {
			if _, ok, _ := nodes[2].eng.KV().Get([]byte(fmt.Sprintf("r%d", i))); !ok {
				return false
			}
		}
		return true
	})
}

// TestDiskFullReplicasFailWritesFast checks that a write through a node
// with room fails with the replicas' refusal (507, "disk full") when too
// many of them are full for a quorum, rather than waiting out the
// coordinator's timeout and answering that the quorum was not reached;
// and that the writes reach every replica once space returns.
func TestDiskFullReplicasFailWritesFast(t *testing.T) {
	nodes := kvCluster(t, 3, nil)
	var setFree []func(int64)
	for _, n := range nodes[1:] {
		f := fillDisk(t, n)
		f(1 << 20)
		setFree = append(setFree, f)
	}
	base := "http://" + nodes[0].HTTPAddr()
	for i := range 5 {
		code, b := httpDo(t, http.MethodPut, fmt.Sprintf("%s/kv/f%d", base, i), "v")
		if code != http.StatusInsufficientStorage || !strings.HasPrefix(b, "disk full") || !strings.Contains(b, "refused by") {
			t.Fatalf("put f%d through the node with room, two replicas of three full: %d %q, want 507 with their refusal", i, code, b)
		}
	}
	if _, err := nodes[0].kv.Put(context.Background(), []byte("g"), []byte("v"), 2); err == nil || !strings.HasPrefix(err.Error(), "disk full") {
		t.Fatalf("kv.Put with two replicas full: %v, want disk full", err)
	}
	for _, f := range setFree {
		f(1 << 30)
	}
	waitFor(t, "the full replicas to get the refused writes once space returned", func() bool {
		for _, n := range nodes[1:] {
			for i := range 5 {
				if _, ok, _ := n.eng.KV().Get([]byte(fmt.Sprintf("f%d", i))); !ok {
					return false
				}
			}
		}
		return true
	})
	if code, b := httpDo(t, http.MethodPut, base+"/kv/after", "v"); code/100 != 2 {
		t.Fatalf("put once space returned: %d %s", code, b)
	}
}

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tide/bench"
	"tide/chord/rpc"
	"tide/cluster"
	"tide/store"
	"tide/tlsconf"
)

// tlsFlags are the --tls-* flags of certificate name in dir.
func tlsFlags(dir, name string) []string {
	f := tlsconf.NodeFiles(dir, name)
	return []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
}

// TestTLSCluster runs a 3-node ring with mutual TLS between its nodes:
// files and keys written at one node are read at the others (Chord RPC,
// KV replication and file replication all over TLS); plain-text clients
// on loopback still look up (the seed's scripts) but cannot change the
// ring or reach /internal/; a node with a certificate of another CA, an
// expired one, or none, does not get in, with an error that says why; and
// a rotated certificate is served without a restart while requests go on.
func TestTLSCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	certs, other := filepath.Join(dir, "certs"), filepath.Join(dir, "other")
	runTide(t, "cert", "init", "--dir", certs)
	out := runTide(t, "cert", "node", "node", "--ip", "127.0.0.1", "--dir", certs)
	if !strings.Contains(out, "valid for [127.0.0.1]") {
		t.Fatalf("tide cert node: %s", out)
	}
	runTide(t, "cert", "node", "admin", "--dir", certs)
	runTide(t, "cert", "init", "--dir", other)
	runTide(t, "cert", "node", "node", "--ip", "127.0.0.1", "--dir", other)

	local := &cluster.Local{Binary: tideBin, Dir: filepath.Join(dir, "nodes")}
	defer local.StopAll(5 * time.Second)
	extra := append(tlsFlags(certs, "node"), "--tick", "200ms", "--resp-addr", "127.0.0.1:0")
	procs, err := bench.StartRing(ctx, local, 3, 3, extra, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := tlsconf.Load(tlsconf.NodeFiles(certs, "admin"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := store.NewClientWith(admin, "")
	defer c.Close()
	var chordAddrs []string
	for _, p := range procs {
		chordAddrs = append(chordAddrs, p.Spec.ChordAddr)
	}
	if err := bench.WaitConverged(ctx, c.RPC, chordAddrs, 2*time.Minute); err != nil {
		t.Fatal(err)
	}

	// Files: upload through node 1, download through node 3, over TLS.
	for i := range 4 {
		name := fmt.Sprintf("tls-%d.txt", i)
		if err := c.Upload(ctx, chordAddrs[0], name, bytes.NewReader(fileData(name))); err != nil {
			t.Fatalf("upload %s over TLS: %v", name, err)
		}
		var got bytes.Buffer
		if err := c.Download(ctx, chordAddrs[2], name, &got, nil); err != nil || !bytes.Equal(got.Bytes(), fileData(name)) {
			t.Fatalf("download %s over TLS: %v (%d bytes)", name, err, got.Len())
		}
	}
	// Every copy reached its replicas (file replication over TLS).
	waitFor(t, "3 copies of every file", time.Minute, func() error {
		return copiesAtLeast(ctx, procs, []string{"tls-0.txt", "tls-1.txt", "tls-2.txt", "tls-3.txt"}, 3)
	})

	// KV: written through node 1's HTTP (a plain client on loopback),
	// read through node 3's, and through Redis at node 2.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+procs[0].Spec.HTTPAddr+"/kv/greeting", strings.NewReader("hello"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("PUT /kv/greeting: %v %v", resp, err)
	}
	if code, body := get(t, "http://"+procs[2].Spec.HTTPAddr+"/kv/greeting"); code != 200 || body != "hello" {
		t.Fatalf("GET /kv/greeting at node 3: %d %q", code, body)
	}
	rc := redis.NewClient(&redis.Options{Addr: procs[1].Ready.RESPAddr})
	defer rc.Close()
	if v, err := rc.Get(ctx, "greeting").Result(); err != nil || v != "hello" {
		t.Fatalf("redis GET at node 2: %q, %v", v, err)
	}
	if err := rc.Set(ctx, "k2", "v2", 0).Err(); err != nil {
		t.Fatalf("redis SET: %v", err)
	}

	// The seed's plain msgpack-rpc on loopback: lookups yes, changes no.
	plain := rpc.NewClient()
	defer plain.Close()
	if _, err := plain.CallRef(ctx, chordAddrs[0], "find_successor", 607204990); err != nil {
		t.Fatalf("plain find_successor on loopback: %v", err)
	}
	if _, err := plain.Call(ctx, chordAddrs[0], "stabilize"); err == nil || !strings.Contains(err.Error(), "mutual TLS") {
		t.Fatalf("plain stabilize: %v, want a refusal naming mutual TLS", err)
	}
	if _, err := plain.Call(ctx, chordAddrs[0], "kill"); err == nil {
		t.Fatal("plain kill was accepted")
	}
	if _, err := c.RPC.Call(ctx, chordAddrs[0], "kill"); err == nil || !strings.Contains(err.Error(), "--allow-kill") {
		t.Fatalf("kill over TLS without --allow-kill: %v", err)
	}
	// /internal/ needs a node's certificate; clients' routes do not.
	if code, body := get(t, "http://"+procs[0].Spec.HTTPAddr+"/internal/kv/ring"); code != http.StatusForbidden || !strings.Contains(body, "certificate") {
		t.Fatalf("plain GET /internal/kv/ring: %d %q", code, body)
	}
	if resp, err := c.HTTP.Get("http://" + procs[0].Spec.HTTPAddr + "/internal/kv/ring"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /internal/kv/ring with a certificate: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Strangers: another CA's certificate, an expired one, or none.
	join := func(args ...string) string {
		t.Helper()
		base := []string{"node", "--chord-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
			"--join", chordAddrs[0], "--join-timeout", "3s"}
		cmd := exec.CommandContext(ctx, tideBin, append(base, args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("tide node %s joined", strings.Join(args, " "))
		}
		return string(out)
	}
	if out := join(tlsFlags(other, "node")...); !strings.Contains(out, "not signed by our --tls-ca") {
		t.Errorf("a node of another CA: %s", out)
	}
	mixed := []string{"--tls-ca", tlsconf.NodeFiles(certs, "x").CA, "--tls-cert", tlsconf.CertFile(other, "node"), "--tls-key", tlsconf.KeyFile(other, "node")}
	if out := join(mixed...); !strings.Contains(out, "not signed by the CA") {
		t.Errorf("a certificate of another CA under our CA: %s", out)
	}
	if _, err := tlsconf.IssueNode(certs, tlsconf.NodeCert{Name: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if out := join(tlsFlags(certs, "old")...); !strings.Contains(out, "expired") {
		t.Errorf("a node with an expired certificate: %s", out)
	}
	if out := join(); !strings.Contains(out, "join") {
		t.Errorf("a node without TLS: %s", out)
	}
	// The ring still has its 3 members.
	infos, err := c.Ring(ctx, chordAddrs[0])
	if err != nil || len(infos) != 3 {
		t.Fatalf("ring after the strangers: %d members, %v", len(infos), err)
	}

	// Rotation under load: a new certificate under the same files; the
	// nodes serve it without a restart, and no request fails meanwhile.
	stop := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := rc.Set(ctx, fmt.Sprint("rot-", i), "v", 0).Err(); err != nil {
				errs <- fmt.Errorf("SET during rotation: %w", err)
				return
			}
			if err := c.Upload(ctx, chordAddrs[i%3], fmt.Sprint("rot-", i%5), bytes.NewReader([]byte("x"))); err != nil {
				errs <- fmt.Errorf("upload during rotation: %w", err)
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	rotated, err := tlsconf.IssueNode(certs, tlsconf.NodeCert{Name: "node", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every node to serve the rotated certificate", time.Minute, func() error {
		for _, a := range chordAddrs {
			conn, err := admin.Dial(ctx, "tcp", a)
			if err != nil {
				return err
			}
			serial := conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
			conn.Close()
			if serial.Cmp(rotated.SerialNumber) != 0 {
				return fmt.Errorf("%s still serves serial %v", a, serial)
			}
		}
		return nil
	})
	time.Sleep(time.Second) // new connections under the new certificate
	close(stop)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

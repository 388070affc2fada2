package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tide/chord/rpc"
	"tide/tlsconf"
	"tide/web"
)

// TestUpTLS runs `tide up --tls`: a CA and a certificate are made under the
// data directory, every node takes changes to its membership and its
// internal routes only over mutual TLS, the log's clients need the
// certificate, and keys written at one node are read at another (KV
// replication over TLS). A second run reuses the same files. The dashboard
// off loopback is refused without TLS.
func TestUpTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole tide up")
	}
	dir := t.TempDir()
	up := startUp(t, dir, "--tls", "--nodes", "3")
	certs := filepath.Join(dir, "tls")
	files := tlsconf.NodeFiles(certs, "node")
	for _, f := range []string{files.CA, files.Cert, files.Key} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("tide up --tls made no %s: %v", f, err)
		}
	}
	if !strings.Contains(up.banner, "mutual TLS") || !strings.Contains(up.banner, files.CA) {
		t.Errorf("the banner does not say where the TLS files are:\n%s", up.banner)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg, err := tlsconf.Load(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := cfg.HTTPClient(5 * time.Second)

	// Every node started with the files: its internal routes refuse a
	// plain client and serve the certificate's holder.
	for _, h := range up.https {
		if code, body := get(t, "http://"+h+"/internal/kv/ring"); code != http.StatusForbidden || !strings.Contains(body, "certificate") {
			t.Fatalf("plain GET /internal/kv/ring at %s: %d %q", h, code, body)
		}
		resp, err := hc.Get("http://" + h + "/internal/kv/ring")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /internal/kv/ring at %s with the certificate: %v %v", h, resp, err)
		}
		resp.Body.Close()
	}
	plain := rpc.NewClient()
	defer plain.Close()
	if _, err := plain.Call(ctx, up.chords[0], "stabilize"); err == nil || !strings.Contains(err.Error(), "mutual TLS") {
		t.Fatalf("plain stabilize: %v, want a refusal naming mutual TLS", err)
	}

	// Keys written at node 1 over Redis (plain on loopback, as redis-cli
	// does) are read at node 3: the nodes replicate over TLS.
	rc := redis.NewClient(&redis.Options{Addr: up.redis[0]})
	defer rc.Close()
	if err := rc.Set(ctx, "tls-greeting", "hello", 0).Err(); err != nil {
		t.Fatalf("redis SET: %v", err)
	}
	waitFor(t, "the key at node 3", time.Minute, func() error {
		if code, body := get(t, "http://"+up.https[2]+"/kv/tls-greeting"); code != 200 || body != "hello" {
			return fmt.Errorf("GET /kv/tls-greeting at node 3: %d %q", code, body)
		}
		return nil
	})

	// The log's roles speak TLS: its client needs the certificate.
	if out, err := exec.Command(tideBin, "log", "put", up.dep, "k", "v").CombinedOutput(); err == nil {
		t.Fatalf("tide log put without the certificate succeeded:\n%s", out)
	} else if !strings.Contains(string(out), "TLS") {
		t.Errorf("tide log put without the certificate: %s", out)
	}
	tf := tlsFlags(certs, "node")
	runTide(t, append([]string{"log", "put", up.dep, "k", "over-tls"}, tf...)...)
	if !strings.Contains(up.banner, "tide log put --tls-ca "+files.CA) {
		t.Errorf("the banner's log command lacks the certificate:\n%s", up.banner)
	}
	if out := runTide(t, append([]string{"log", "get", up.dep, "k"}, tf...)...); !strings.Contains(out, "over-tls") {
		t.Fatalf("tide log get: %s", out)
	}

	// The dashboard reads the ring and the log.
	waitFor(t, "the dashboard to show the ring and the log", time.Minute, func() error {
		var st web.State
		if err := getJSON(ctx, up.dashboard+"api/state", &st); err != nil {
			return err
		}
		if st.Store.Members != 3 || st.Log == nil || st.Log.Leader == "" {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	up.stop(t)

	// Again: the same CA and certificate, and the same data.
	before, _ := os.ReadFile(files.Cert)
	up = startUp(t, dir, "--tls", "--nodes", "3")
	if after, _ := os.ReadFile(files.Cert); string(after) != string(before) {
		t.Error("a second tide up --tls made a new certificate")
	}
	waitFor(t, "the key after the restart", time.Minute, func() error {
		if code, body := get(t, "http://"+up.https[1]+"/kv/tls-greeting"); code != 200 || body != "hello" {
			return fmt.Errorf("GET /kv/tls-greeting: %d %q", code, body)
		}
		return nil
	})
	up.stop(t)

	// A dashboard off loopback without TLS is refused, before anything
	// starts.
	out, err := exec.Command(tideBin, "up", "--data-dir", t.TempDir(), "--dashboard", "0.0.0.0:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--insecure") {
		t.Fatalf("tide up --dashboard 0.0.0.0:0: %v\n%s", err, out)
	}
}

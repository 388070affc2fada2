package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tide/cluster"
)

// TestClientAuth runs a node with --acl-file and --http-tokens: redis-cli
// with --user/--pass and -a, and go-redis with a password, get in, and
// without them get NOAUTH; HTTP clients need a bearer token of the
// route's scope, and /metrics and /healthz stay open.
func TestClientAuth(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-cli is not installed; make deps installs it")
		}
		t.Skip("redis-cli not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	runTide(t, "cert", "init", "--dir", certs)
	runTide(t, "cert", "node", "node", "--ip", "127.0.0.1", "--dir", certs)
	acl := filepath.Join(dir, "users.acl")
	os.WriteFile(acl, []byte("user default on >defaultpass allkeys +@all\nuser app on >apppass ~app:* +@all\n"), 0o600)
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("read reader-0123456789abcdef\nwrite writer-0123456789abcdef\nadmin admin-0123456789abcdef\n"), 0o600)
	local := &cluster.Local{Binary: tideBin, Dir: filepath.Join(dir, "nodes")}
	defer local.StopAll(5 * time.Second)
	extra := append(tlsFlags(certs, "node"), "--resp-addr", "127.0.0.1:0", "--acl-file", acl, "--http-tokens", tokens, "--replicas", "1")
	p, err := local.Launch(ctx, cluster.NodeSpec{Name: "n1", ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Replicas: 1, Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(p.Ready.RESPAddr, ":")
	cli := func(args ...string) string {
		out, _ := exec.CommandContext(ctx, "redis-cli", append([]string{"-h", host, "-p", port, "--no-auth-warning"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	if out := cli("-a", "defaultpass", "SET", "greeting", "hello"); out != "OK" {
		t.Fatalf("redis-cli -a: %q", out)
	}
	if out := cli("--user", "app", "--pass", "apppass", "SET", "app:1", "x"); out != "OK" {
		t.Fatalf("redis-cli --user --pass: %q", out)
	}
	if out := cli("--user", "app", "--pass", "apppass", "GET", "greeting"); !strings.Contains(out, "NOPERM") {
		t.Fatalf("redis-cli as app, a key outside ~app:*: %q", out)
	}
	if out := cli("GET", "greeting"); !strings.Contains(out, "NOAUTH") {
		t.Fatalf("redis-cli without a password: %q", out)
	}
	if out := cli("-a", "wrong", "GET", "greeting"); !strings.Contains(out, "WRONGPASS") && !strings.Contains(out, "AUTH failed") {
		t.Fatalf("redis-cli with a wrong password: %q", out)
	}
	rc := redis.NewClient(&redis.Options{Addr: p.Ready.RESPAddr, Password: "defaultpass"})
	defer rc.Close()
	if v, err := rc.Get(ctx, "greeting").Result(); err != nil || v != "hello" {
		t.Fatalf("go-redis with the password: %q %v", v, err)
	}
	anon := redis.NewClient(&redis.Options{Addr: p.Ready.RESPAddr, MaxRetries: -1})
	defer anon.Close()
	if err := anon.Get(ctx, "greeting").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatalf("go-redis without a password: %v", err)
	}

	base := "http://" + p.Spec.HTTPAddr
	do := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/metrics", "", 200},
		{"GET", "/kv/greeting", "", 401},
		{"GET", "/kv/greeting", "not-a-token-0123456789", 401},
		{"GET", "/kv/greeting", "reader-0123456789abcdef", 200},
		{"PUT", "/kv/k2", "reader-0123456789abcdef", 403},
		{"PUT", "/kv/k2", "writer-0123456789abcdef", 204},
		{"GET", "/hash_ring", "reader-0123456789abcdef", 200},
		{"GET", "/clear_cache", "writer-0123456789abcdef", 403},
		{"GET", "/internal/kv/ring", "writer-0123456789abcdef", 403},
		{"GET", "/internal/kv/ring", "admin-0123456789abcdef", 200},
	} {
		code, body := do(c.method, c.path, c.token, "v2")
		if code != c.want && !(c.want == 204 && code/100 == 2) {
			t.Errorf("%s %s with token %q: %d %q, want %d", c.method, c.path, c.token, code, body, c.want)
		}
		if code == 401 && !strings.Contains(body, "token") {
			t.Errorf("%s %s: 401 without saying why: %q", c.method, c.path, body)
		}
	}
	if code, body := do("GET", "/metrics", "", ""); code != 200 || !strings.Contains(body, `tide_auth_failures_total{proto="http"}`) || !strings.Contains(body, `tide_auth_failures_total{proto="resp"}`) {
		t.Errorf("/metrics lacks tide_auth_failures_total: %d", code)
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tide/cluster"
)

// TestAuthReload changes a running node's --http-tokens and --acl-file:
// a file rewritten in place takes effect without a restart (a removed
// token is refused, a new one accepted; a user's narrowed rules apply to
// its open connection, and a removed user is logged out), and so does
// SIGHUP after a change the polling cannot see. A file that does not
// load leaves the old one in force.
func TestAuthReload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	runTide(t, "cert", "init", "--dir", certs)
	runTide(t, "cert", "node", "node", "--ip", "127.0.0.1", "--dir", certs)
	acl := filepath.Join(dir, "users.acl")
	write := func(path, s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(acl, "user default on >defaultpass allkeys +@all\nuser app on >apppass ~app:* +@all\n")
	tokens := filepath.Join(dir, "tokens")
	const tokA, tokB, tokC = "token-a-0123456789abcdef", "token-b-0123456789abcdef", "token-c-0123456789abcdef"
	write(tokens, "write "+tokA+"\n")
	local := &cluster.Local{Binary: tideBin, Dir: filepath.Join(dir, "nodes")}
	defer local.StopAll(5 * time.Second)
	extra := append(tlsFlags(certs, "node"), "--resp-addr", "127.0.0.1:0", "--acl-file", acl, "--http-tokens", tokens, "--replicas", "1")
	p, err := local.Launch(ctx, cluster.NodeSpec{Name: "n1", ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Replicas: 1, Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + p.Spec.HTTPAddr
	status := func(method, path, token string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader("v"))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	want := func(what string, cond map[string][2]int) {
		t.Helper()
		waitFor(t, what, time.Minute, func() error {
			for tok, c := range cond {
				method := "GET"
				if c[0] == 1 {
					method = "PUT"
				}
				if got := status(method, "/kv/reload", tok); got/100 != c[1]/100 {
					return fmt.Errorf("%s /kv/reload with %s: %d, want %d", method, tok, got, c[1])
				}
			}
			return nil
		})
	}
	want("token A to write", map[string][2]int{tokA: {1, 204}, tokB: {0, 401}})

	// Rewritten: A goes, B comes (read only).
	write(tokens, "read "+tokB+"\n")
	want("the rewritten tokens file in force", map[string][2]int{tokA: {0, 401}, tokB: {0, 200}})
	if got := status("PUT", "/kv/reload", tokB); got != http.StatusForbidden {
		t.Errorf("PUT with a read token after the reload: %d, want 403", got)
	}
	// A file that does not load changes nothing.
	write(tokens, "sudo "+tokC+"\n")
	waitFor(t, "the node to report the bad tokens file", time.Minute, func() error {
		b, _ := os.ReadFile(p.LogPath)
		if !strings.Contains(string(b), "reload failed") || !strings.Contains(string(b), `scope \"sudo\"`) {
			return fmt.Errorf("not in %s yet", p.LogPath)
		}
		return nil
	})
	want("the last good tokens after a bad file", map[string][2]int{tokB: {0, 200}, tokC: {0, 401}})

	// SIGHUP: a change of the same size with the old modification time,
	// which polling does not notice.
	write(tokens, "read "+tokB+"\n")
	want("the good file again", map[string][2]int{tokB: {0, 200}})
	st, _ := os.Stat(tokens)
	if err := os.WriteFile(tokens, []byte("write "+tokC[:len(tokB)-1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(tokens, st.ModTime(), st.ModTime())
	if err := syscall.Kill(p.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	want("the tokens file in force after SIGHUP", map[string][2]int{tokB: {0, 401}, tokC[:len(tokB)-1]: {1, 204}})

	// The ACL: app's open connection loses +@write, then app goes.
	rc := redis.NewClient(&redis.Options{Addr: p.Ready.RESPAddr, Username: "app", Password: "apppass", PoolSize: 1, MaxRetries: -1})
	defer rc.Close()
	if err := rc.Set(ctx, "app:1", "x", 0).Err(); err != nil {
		t.Fatalf("SET as app: %v", err)
	}
	write(acl, "user default on >defaultpass allkeys +@all\nuser app on >apppass ~app:* +@read\n")
	waitFor(t, "app's narrowed rules on its open connection", time.Minute, func() error {
		if err := rc.Set(ctx, "app:1", "y", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			return fmt.Errorf("SET as app: %v, want NOPERM", err)
		}
		return nil
	})
	if err := rc.Get(ctx, "app:1").Err(); err != nil {
		t.Fatalf("GET as app with +@read: %v", err)
	}
	write(acl, "user default on >defaultpass allkeys +@all\n")
	// 20 s: ten rounds of the node's 2 s poll of the file (tlsconf.WatchFiles).
	// A connection that is never logged out (the mutant
	// resp-acl-reload-logout) fails here, and sooner than in a minute.
	waitFor(t, "app logged out once removed", 20*time.Second, func() error {
		if err := rc.Get(ctx, "app:1").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
			return fmt.Errorf("GET as a removed user: %v, want NOAUTH", err)
		}
		return nil
	})
	dc := redis.NewClient(&redis.Options{Addr: p.Ready.RESPAddr, Password: "defaultpass"})
	defer dc.Close()
	if v, err := dc.Get(ctx, "app:1").Result(); err != nil || v != "x" && v != "y" {
		t.Fatalf("GET as default: %q %v", v, err)
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tide/bench"
	"tide/cluster"
)

// TestTLSKV runs `tide kv` against a node that speaks mutual TLS and
// takes bearer tokens: with a certificate of the CA it writes, reads and
// deletes (through the node's HTTP address and its Chord address); without
// one, or with a certificate of another CA, it is refused; with a token
// and no certificate it reads in plain text on loopback. `tide ring`
// given the node's HTTP address finds its Chord address the same way.
func TestTLSKV(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	certs, other := filepath.Join(dir, "certs"), filepath.Join(dir, "other")
	runTide(t, "cert", "init", "--dir", certs)
	runTide(t, "cert", "node", "node", "--ip", "127.0.0.1", "--dir", certs)
	runTide(t, "cert", "node", "admin", "--ip", "127.0.0.1", "--dir", certs)
	runTide(t, "cert", "init", "--dir", other)
	runTide(t, "cert", "node", "admin", "--ip", "127.0.0.1", "--dir", other)
	const token = "a-reader-token-of-this-test"
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("read "+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	local := &cluster.Local{Binary: tideBin, Dir: filepath.Join(dir, "nodes")}
	defer local.StopAll(5 * time.Second)
	extra := append(tlsFlags(certs, "node"), "--http-tokens", tokens)
	procs, err := bench.StartRing(ctx, local, 1, 1, extra, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, chord := procs[0].Spec.HTTPAddr, procs[0].Spec.ChordAddr
	admin := tlsFlags(certs, "admin")
	kv := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, tideBin, append([]string{"kv"}, args...)...).CombinedOutput()
		return string(out), err
	}

	// With the certificate: a write, then reads through either address.
	waitFor(t, "tide kv put with a certificate", time.Minute, func() error {
		out, err := kv(append([]string{"put", httpAddr, "greeting", "hello"}, admin...)...)
		if err != nil || strings.TrimSpace(out) != "OK" {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	for _, addr := range []string{httpAddr, chord} {
		if out, err := kv(append([]string{"get", addr, "greeting"}, admin...)...); err != nil || strings.TrimSpace(out) != "hello" {
			t.Fatalf("tide kv get %s with a certificate: %v: %q", addr, err, out)
		}
	}

	// Commands that speak Chord resolve a node's HTTP address over
	// mutual TLS too.
	if out, err := exec.CommandContext(ctx, tideBin, append([]string{"ring", "--json", httpAddr}, admin...)...).CombinedOutput(); err != nil || !strings.Contains(string(out), chord) {
		t.Fatalf("tide ring %s with a certificate: %v: %s, want the ring with %s", httpAddr, err, out, chord)
	}

	// Without a certificate or a token: refused (401), nothing printed
	// as a value.
	out, err := kv("put", httpAddr, "greeting", "intruder")
	if err == nil || !strings.Contains(out, "401") {
		t.Fatalf("tide kv put without a certificate: %v: %q, want a 401 refusal", err, out)
	}
	if out, err := kv("get", httpAddr, "greeting"); err == nil || !strings.Contains(out, "401") || strings.Contains(out, "hello") {
		t.Fatalf("tide kv get without a certificate: %v: %q, want a 401 refusal", err, out)
	}
	// A certificate of another CA fails its handshake.
	if out, err := kv(append([]string{"get", httpAddr, "greeting"}, tlsFlags(other, "admin")...)...); err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("tide kv get with a certificate of another CA: %v: %q, want a handshake error", err, out)
	}
	// A read token, without a certificate, reads (plain text on loopback)
	// but does not write.
	if out, err := kv("get", "--auth-token", token, httpAddr, "greeting"); err != nil || strings.TrimSpace(out) != "hello" {
		t.Fatalf("tide kv get --auth-token: %v: %q", err, out)
	}
	if out, err := kv("del", "--auth-token", token, httpAddr, "greeting"); err == nil || !strings.Contains(out, "403") {
		t.Fatalf("tide kv del with a read token: %v: %q, want a 403 refusal", err, out)
	}

	// The certificate deletes; the key is gone.
	if out, err := kv(append([]string{"del", httpAddr, "greeting"}, admin...)...); err != nil || strings.TrimSpace(out) != "OK" {
		t.Fatalf("tide kv del with a certificate: %v: %q", err, out)
	}
	if out, err := kv(append([]string{"get", httpAddr, "greeting"}, admin...)...); err == nil {
		t.Fatalf("tide kv get of a deleted key: %q, want an error", out)
	}
}

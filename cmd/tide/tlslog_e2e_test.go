package main

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tide/paxos/node"
	"tide/tlsconf"
)

// TestTLSLog runs `tide log up` with mutual TLS: its role processes speak
// TLS to each other and to clients. A client with a certificate of the
// CA puts and gets; one without any is told the log needs TLS; one of
// another CA is refused, and so is a raw connection that presents no
// certificate, another CA's, or plain text, at a role's own port. The log
// goes on serving through an acceptor replaced by a new process (started,
// joined and reconfigured over TLS). The roles' HTTP ports and the control
// endpoint serve mutual TLS, and plain text on loopback that may read but
// not change: tide log status and replace use the client's certificate,
// and are refused without one.
func TestTLSLog(t *testing.T) {
	dir := t.TempDir()
	certs, other := filepath.Join(dir, "certs"), filepath.Join(dir, "other")
	runTide(t, "cert", "init", "--dir", certs)
	runTide(t, "cert", "node", "node", "--ip", "127.0.0.1", "--dir", certs)
	runTide(t, "cert", "node", "admin", "--ip", "127.0.0.1", "--dir", certs)
	runTide(t, "cert", "node", "noip", "--dir", certs)
	runTide(t, "cert", "init", "--dir", other)
	runTide(t, "cert", "node", "admin", "--ip", "127.0.0.1", "--dir", other)

	logDir := filepath.Join(dir, "log")
	startLogUp(t, 2*time.Minute, time.Minute, append([]string{"--data-dir", logDir}, tlsFlags(certs, "node")...)...)
	dep := filepath.Join(logDir, "deployment.json")
	d, err := node.LoadDeployment(dep)
	if err != nil {
		t.Fatal(err)
	}
	if !d.TLS {
		t.Fatalf("the deployment of a TLS log does not say so: %+v", d)
	}

	logCmd := func(creds []string, args ...string) (string, error) {
		b, err := exec.Command(tideBin, append(append([]string{"log"}, args...), creds...)...).CombinedOutput()
		return strings.TrimSpace(string(b)), err
	}
	admin := tlsFlags(certs, "admin")
	putGet := func(key, value string) {
		t.Helper()
		if got, err := logCmd(admin, "put", dep, key, value, "--timeout", "30s"); err != nil || got != "OK" {
			t.Fatalf("put %s with a certificate of the CA: %v: %s", key, err, got)
		}
		if got, err := logCmd(admin, "get", dep, key, "--timeout", "30s"); err != nil || got != value {
			t.Fatalf("get %s with a certificate of the CA: %v: %q, want %q", key, err, got, value)
		}
	}
	putGet("greeting", "hello")

	// Refusals that the client itself explains.
	for _, c := range []struct {
		name  string
		creds []string
		want  string
	}{
		{"no certificate", nil, "speaks mutual TLS"},
		{"another CA", tlsFlags(other, "admin"), "unknown authority"},
		{"no IP for the replies", tlsFlags(certs, "noip"), "--ip 127.0.0.1"},
	} {
		got, err := logCmd(c.creds, "put", dep, "intruder", c.name, "--timeout", "3s")
		if err == nil || !strings.Contains(got, c.want) {
			t.Errorf("put with %s: %v: %q, want an error with %q", c.name, err, got, c.want)
		}
	}

	// Refusals at a role's port, for clients that would not check first.
	batcher := d.Log.Batchers[0]
	frame := make([]byte, 4+3)
	binary.BigEndian.PutUint32(frame, 3)
	refused := func(what string, dial func() (net.Conn, error)) {
		t.Helper()
		c, err := dial()
		if err != nil {
			return // refused during the handshake
		}
		defer c.Close()
		c.Write(frame)
		c.SetReadDeadline(time.Now().Add(time.Minute))
		var b [1]byte
		if n, err := c.Read(b[:]); err == nil && b[0] != 0x15 { // 0x15: a TLS alert record
			t.Errorf("%s: the batcher answered %d bytes (%#x), not a TLS alert", what, n, b[0])
		}
	}
	otherCert, err := tls.LoadX509KeyPair(tlsconf.CertFile(other, "admin"), tlsconf.KeyFile(other, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		certs []tls.Certificate
	}{{"no client certificate", nil}, {"a certificate of another CA", []tls.Certificate{otherCert}}} {
		refused(c.name, func() (net.Conn, error) {
			return tls.Dial("tcp", batcher, &tls.Config{InsecureSkipVerify: true, Certificates: c.certs})
		})
	}
	refused("plain text", func() (net.Conn, error) { return net.Dial("tcp", batcher) })
	if _, err := logCmd(admin, "get", dep, "intruder", "--timeout", "10s"); err == nil {
		t.Errorf("a refused client's put took effect")
	}

	// The roles' HTTP ports and the control endpoint of tide log up are
	// mutual TLS; on loopback they take plain text too, which reads but
	// does not change the log.
	tide, err := tlsconf.Load(tlsconf.NodeFiles(certs, "admin"), nil)
	if err != nil {
		t.Fatal(err)
	}
	httpDo := func(c *http.Client, method, url string) (int, string, error) {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b)), nil
	}
	withCert, plain := tide.HTTPClient(30*time.Second), &http.Client{Timeout: 30 * time.Second}
	noCert := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	otherCA := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{otherCert}}}}
	roleHTTP := d.HTTP[batcher]
	for _, path := range []string{"/status", "/deployment", "/metrics"} {
		if code, body, err := httpDo(withCert, http.MethodGet, "http://"+roleHTTP+path); err != nil || code != http.StatusOK || body == "" {
			t.Errorf("GET %s over mutual TLS: %d %v", path, code, err)
		}
	}
	if code, _, err := httpDo(plain, http.MethodGet, "http://"+roleHTTP+"/metrics"); err != nil || code != http.StatusOK {
		t.Errorf("plain GET /metrics on loopback: %d %v (a scraper on the machine reads it)", code, err)
	}
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"no client certificate", noCert}, {"a certificate of another CA", otherCA}} {
		for _, addr := range []string{roleHTTP, d.Control} {
			if code, _, err := httpDo(c.client, http.MethodGet, "https://"+addr+"/healthz"); err == nil {
				t.Errorf("TLS with %s at %s was served: %d", c.name, addr, code)
			}
		}
	}
	if code, body, err := httpDo(plain, http.MethodPost, "http://"+d.Control+"/scale?role=proxy-leaders&n=3"); err != nil || code != http.StatusForbidden || !strings.Contains(body, "only over mutual TLS") {
		t.Errorf("plain POST /scale to the control endpoint: %d %q %v, want 403", code, body, err)
	}
	if code, _, err := httpDo(withCert, http.MethodGet, "http://"+d.Control+"/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("GET /healthz of the control endpoint over mutual TLS: %d %v", code, err)
	}
	if got, err := logCmd(admin, "status", dep, "--json"); err != nil || !strings.Contains(got, `"up":true`) {
		t.Errorf("tide log status with a certificate: %v: %s", err, got)
	}

	// An acceptor replaced by a new process: it starts with the TLS
	// flags, joins, and the reconfiguration runs over TLS. Without a
	// certificate the control endpoint is not asked.
	acc := d.Log.Groups[0].Acceptors[0]
	if got, err := logCmd(nil, "replace", dep, acc); err == nil || !strings.Contains(got, "speaks mutual TLS") {
		t.Errorf("replace without a certificate: %v: %q, want an error that says the log speaks mutual TLS", err, got)
	}
	if got, err := logCmd(admin, "replace", dep, acc); err != nil {
		t.Fatalf("replace acceptor %s: %v: %s", acc, err, got)
	}
	putGet("after-replace", "still here")
	if got, err := logCmd(admin, "get", dep, "greeting", "--timeout", "30s"); err != nil || got != "hello" {
		t.Fatalf("get greeting after the replacement: %v: %q", err, got)
	}
	if _, err := os.Stat(dep); err != nil {
		t.Fatal(err)
	}
}

// startLogUp runs `tide log up args`, waits up to start for it to say the
// log is up, and stops it (SIGTERM, then SIGKILL after stop) at the end of
// the test, logging its output if the test failed.
func startLogUp(t *testing.T, start, stop time.Duration, args ...string) {
	t.Helper()
	up := exec.Command(tideBin, append([]string{"log", "up"}, args...)...)
	out := &syncBuffer{}
	up.Stdout, up.Stderr = out, out
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { up.Wait(); close(done) }()
	t.Cleanup(func() {
		up.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(stop):
			up.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("tide log up:\n%s", out.String())
		}
	})
	waitFor(t, "tide log up to start its roles", start, func() error {
		select {
		case <-done:
			t.Fatalf("tide log up exited:\n%s", out.String())
		default:
		}
		if !strings.Contains(out.String(), "log is up") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
}

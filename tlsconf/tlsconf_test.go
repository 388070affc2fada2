package tlsconf

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

var loopback = []net.IP{net.ParseIP("127.0.0.1")}

func newCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := InitCA(dir, "test CA", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	return dir
}

func issue(t *testing.T, dir string, nc NodeCert) Files {
	t.Helper()
	if nc.IPs == nil {
		nc.IPs = loopback
	}
	if _, err := IssueNode(dir, nc); err != nil {
		t.Fatal(err)
	}
	return NodeFiles(dir, nc.Name)
}

func mustLoad(t *testing.T, f Files) *Config {
	t.Helper()
	c, err := Load(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// echoServer serves ln, answering each line with "ok verified=<bool>".
func echoServer(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := br.ReadString('\n'); err != nil {
						return
					}
					if tc, ok := c.(*tls.Conn); ok {
						tc.Handshake()
					}
					io.WriteString(c, "ok verified="+map[bool]string{true: "true", false: "false"}[Verified(c)]+"\n")
				}
			}()
		}
	}()
}

// roundTrip dials addr with c, sends a line and returns the answer or the
// error (with TLS 1.3 a refused client certificate shows on the first read).
func roundTrip(c *Config, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "hi\n"); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestMutualTLS(t *testing.T) {
	dir := newCA(t)
	srv := mustLoad(t, issue(t, dir, NodeCert{Name: "server"}))
	good := mustLoad(t, issue(t, dir, NodeCert{Name: "good"}))
	ln := srv.Listen(listen(t))
	echoServer(t, ln)
	addr := ln.Addr().String()

	if got, err := roundTrip(good, addr); err != nil || got != "ok verified=true\n" {
		t.Fatalf("a certificate from the CA: %q, %v", got, err)
	}

	other := newCA(t)
	stranger := mustLoad(t, issue(t, other, NodeCert{Name: "stranger"}))
	if _, err := roundTrip(stranger, addr); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	} else if !strings.Contains(err.Error(), "not signed by our --tls-ca") {
		// The stranger does not trust the server's CA either: it refuses first.
		t.Fatalf("another CA: unclear error %v", err)
	}

	// A client that trusts the server but holds a certificate of another
	// CA: the server refuses it.
	mixedFiles := Files{CA: NodeFiles(dir, "x").CA, Cert: CertFile(other, "stranger"), Key: KeyFile(other, "stranger")}
	if _, err := Load(mixedFiles, nil); err == nil || !strings.Contains(err.Error(), "not signed by the CA") {
		t.Fatalf("Load of a certificate from another CA: %v", err)
	}
	m, _ := load(Files{CA: NodeFiles(other, "x").CA, Cert: CertFile(other, "stranger"), Key: KeyFile(other, "stranger")})
	m.pool = srv.cur.Load().pool // trust the server, present the stranger's certificate
	forged := &Config{files: mixedFiles, log: srv.log}
	forged.cur.Store(m)
	if _, err := roundTrip(forged, addr); err == nil {
		t.Fatal("the server accepted a client certificate from another CA")
	} else if !strings.Contains(err.Error(), "tls") {
		t.Fatalf("refusal of another CA's client certificate: %v", err)
	}

	// An expired client certificate: the server refuses it.
	expiredFiles := issue(t, dir, NodeCert{Name: "expired", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if _, err := Load(expiredFiles, nil); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Load of an expired certificate: %v", err)
	}
	em, err := loadUnchecked(expiredFiles)
	if err != nil {
		t.Fatal(err)
	}
	expired := &Config{files: expiredFiles, log: srv.log}
	expired.cur.Store(em)
	if _, err := roundTrip(expired, addr); err == nil {
		t.Fatal("the server accepted an expired client certificate")
	} else if !strings.Contains(err.Error(), "expired") && !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("refusal of an expired client certificate: %v", err)
	}

	// No certificate at all, and plain text: refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nocert := tls.Client(raw, &tls.Config{RootCAs: srv.cur.Load().pool, ServerName: "127.0.0.1"})
	nocert.SetDeadline(time.Now().Add(10 * time.Second))
	if err := nocert.Handshake(); err == nil {
		io.WriteString(nocert, "hi\n")
		if _, err := bufio.NewReader(nocert).ReadString('\n'); err == nil {
			t.Fatal("the server accepted a client without a certificate")
		}
	}
	nocert.Close()
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(plain, "GET / HTTP/1.0\r\n\r\n") // not a TLS record
	if b, err := io.ReadAll(plain); len(b) > 0 && strings.Contains(string(b), "ok") {
		t.Fatalf("the server answered plain text: %q, %v", b, err)
	}
}

// loadUnchecked is load without the expiry check, to present an expired
// certificate.
func loadUnchecked(f Files) (*material, error) {
	c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	good, err := load(Files{CA: f.CA, Cert: f.Cert, Key: f.Key})
	if err == nil {
		return good, nil
	}
	ca, _ := os.ReadFile(f.CA)
	m := &material{cert: c}
	m.pool = newPool(ca)
	return m, nil
}

func TestHostnameChecked(t *testing.T) {
	dir := newCA(t)
	srv := mustLoad(t, issue(t, dir, NodeCert{Name: "server", IPs: []net.IP{net.ParseIP("10.9.9.9")}}))
	cl := mustLoad(t, issue(t, dir, NodeCert{Name: "client"}))
	ln := srv.Listen(listen(t))
	echoServer(t, ln)
	_, err := roundTrip(cl, ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "--ip or --dns") {
		t.Fatalf("a server certificate without the dialed IP: %v", err)
	}
}

func TestReload(t *testing.T) {
	dir := newCA(t)
	f := issue(t, dir, NodeCert{Name: "server"})
	srv := mustLoad(t, f)
	cl := mustLoad(t, issue(t, dir, NodeCert{Name: "client"}))
	ln := srv.Listen(listen(t))
	echoServer(t, ln)
	first := srv.Leaf().SerialNumber

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Watch(ctx, 20*time.Millisecond)
	// Rotate: a new certificate under the same file names.
	time.Sleep(20 * time.Millisecond) // a distinct modification time on coarse file systems
	if _, err := IssueNode(dir, NodeCert{Name: "server", IPs: loopback}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for srv.Leaf().SerialNumber.Cmp(first) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the rotated certificate was not loaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := cl.Dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
	if got.Cmp(srv.Leaf().SerialNumber) != 0 {
		t.Fatalf("server presented serial %v after rotation, want %v", got, srv.Leaf().SerialNumber)
	}

	// A broken file keeps the old material.
	if err := os.WriteFile(f.Cert, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := srv.Reload(); err == nil {
		t.Fatal("Reload of a broken certificate succeeded")
	}
	if _, err := roundTrip(cl, ln.Addr().String()); err != nil {
		t.Fatalf("after a failed reload: %v", err)
	}
}

func TestMixed(t *testing.T) {
	dir := newCA(t)
	srv := mustLoad(t, issue(t, dir, NodeCert{Name: "server"}))
	cl := mustLoad(t, issue(t, dir, NodeCert{Name: "client"}))
	ln := srv.Mixed(listen(t), srv.ServerOptional())
	echoServer(t, ln)
	if got, err := roundTrip(cl, ln.Addr().String()); err != nil || got != "ok verified=true\n" {
		t.Fatalf("TLS on a mixed port: %q, %v", got, err)
	}
	if got, err := roundTrip(nil, ln.Addr().String()); err != nil || got != "ok verified=false\n" {
		t.Fatalf("plain text on a mixed port: %q, %v", got, err)
	}
}

func TestFilesValidate(t *testing.T) {
	if err := (Files{CA: "a"}).Validate(); err == nil {
		t.Fatal("a CA alone was accepted")
	}
	if c, err := Load(Files{}, nil); c != nil || err != nil {
		t.Fatalf("no files: %v, %v", c, err)
	}
	dir := newCA(t)
	if err := InitCA(dir, "again", time.Hour); err == nil {
		t.Fatal("InitCA overwrote a CA")
	}
}

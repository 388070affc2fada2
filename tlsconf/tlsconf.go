// Package tlsconf loads a node's TLS material (a CA, a certificate and its
// key), keeps it current when the files change or the process gets SIGHUP,
// and builds the tls.Configs of mutual TLS: every tide process presents a
// certificate signed by the cluster's CA and accepts only peers that do the
// same.
//
// A nil *Config means TLS is off: its Dial dials plain TCP and its Listen
// returns the listener unchanged, so callers need no branches.
package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// Files names a node's TLS material in PEM files.
type Files struct {
	// CA is the cluster's CA certificate: peers must present a certificate
	// it signed.
	CA string
	// Cert is this process's certificate, signed by CA, and Key its
	// private key.
	Cert, Key string
}

// Enabled reports whether any file is named.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate checks that the files are given all together or not at all.
func (f Files) Validate() error {
	if !f.Enabled() {
		return nil
	}
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return errors.New("--tls-ca, --tls-cert and --tls-key go together: give all three (tide cert init and tide cert node make them)")
	}
	return nil
}

// material is one loaded generation of the files.
type material struct {
	pool  *x509.CertPool
	cert  tls.Certificate
	leaf  *x509.Certificate
	mtime [3]time.Time
}

// Config is loaded TLS material that can be reloaded while in use: every
// new connection uses the latest generation.
type Config struct {
	files Files
	log   *slog.Logger
	cur   atomic.Pointer[material]
	// Reloads counts successful reloads after the first load.
	Reloads atomic.Int64
}

// Load reads the files. An empty Files gives a nil *Config (TLS off).
func Load(f Files, log *slog.Logger) (*Config, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, nil
	}
	if log == nil {
		log = slog.Default()
	}
	c := &Config{files: f, log: log}
	m, err := load(f)
	if err != nil {
		return nil, err
	}
	c.cur.Store(m)
	return c, nil
}

func load(f Files) (*material, error) {
	var m material
	for i, p := range []string{f.CA, f.Cert, f.Key} {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		m.mtime[i] = st.ModTime()
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("tls: read CA: %w", err)
	}
	m.pool = x509.NewCertPool()
	if !m.pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("tls: CA file %s holds no PEM certificate", f.CA)
	}
	m.cert, err = tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: load certificate %s and key %s: %w", f.Cert, f.Key, err)
	}
	m.leaf = m.cert.Leaf
	if m.leaf == nil {
		if m.leaf, err = x509.ParseCertificate(m.cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: parse certificate %s: %w", f.Cert, err)
		}
	}
	now := time.Now()
	if now.After(m.leaf.NotAfter) {
		return nil, fmt.Errorf("tls: certificate %s expired at %s: issue a new one (tide cert node)", f.Cert, m.leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if _, err := m.leaf.Verify(x509.VerifyOptions{Roots: m.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("tls: certificate %s is not signed by the CA in %s: %w", f.Cert, f.CA, err)
	}
	return &m, nil
}

// Reload reads the files again and, if they load, uses them for every new
// connection; on an error the previous material stays.
func (c *Config) Reload() error {
	m, err := load(c.files)
	if err != nil {
		return err
	}
	c.cur.Store(m)
	c.Reloads.Add(1)
	c.log.Info("tls: certificates reloaded", "cert", c.files.Cert, "not_after", m.leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// Leaf is the certificate this process presents now.
func (c *Config) Leaf() *x509.Certificate { return c.cur.Load().leaf }

// Watch reloads the files on SIGHUP and whenever one of them changes
// (checked every interval; 0 means 2s), until ctx ends.
func (c *Config) Watch(ctx context.Context, interval time.Duration) {
	if c == nil {
		return
	}
	if interval <= 0 {
		interval = 2 * time.Second
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := c.Reload(); err != nil {
				c.log.Error("tls: reload on SIGHUP failed; keeping the old certificates", "err", err)
			}
		case <-t.C:
			if c.changed() {
				if err := c.Reload(); err != nil {
					c.log.Warn("tls: files changed but do not load (yet); keeping the old certificates", "err", err)
				}
			}
		}
	}
}

func (c *Config) changed() bool {
	old := c.cur.Load()
	for i, p := range []string{c.files.CA, c.files.Cert, c.files.Key} {
		st, err := os.Stat(p)
		if err == nil && !st.ModTime().Equal(old.mtime[i]) {
			return true
		}
	}
	return false
}

func (c *Config) server(auth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := c.cur.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{m.cert},
				ClientCAs:    m.pool,
				ClientAuth:   auth,
			}, nil
		},
	}
}

// Server is the tls.Config of a listener only tide processes use: a client
// must present a certificate the CA signed.
func (c *Config) Server() *tls.Config { return c.server(tls.RequireAndVerifyClientCert) }

// ServerOptional is the tls.Config of a listener that clients without a
// certificate may use too (a node's HTTP port): a certificate, if given,
// must verify, and marks the client as a tide process (Verified).
func (c *Config) ServerOptional() *tls.Config { return c.server(tls.VerifyClientCertIfGiven) }

// Client is the tls.Config to reach serverName (a host name or an IP
// address the server's certificate must name) with this process's
// certificate.
func (c *Config) Client(serverName string) *tls.Config {
	m := c.cur.Load()
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      m.pool,
		Certificates: []tls.Certificate{m.cert},
		ServerName:   serverName,
	}
}

// DialTimeout bounds a dial and its handshake when the context has no
// deadline.
const DialTimeout = 5 * time.Second

// Dial connects to addr: plain TCP on a nil Config, else mutual TLS, the
// handshake done before it returns. Errors say what failed, and where.
func (c *Config) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: DialTimeout}
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil || c == nil {
		return raw, err
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	tc := tls.Client(raw, c.Client(host))
	hctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, DialTimeout)
		defer cancel()
	}
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", addr, explain(err))
	}
	return tc, nil
}

// explain adds what to check to the usual TLS failures.
func explain(err error) error {
	var unk x509.UnknownAuthorityError
	var inv x509.CertificateInvalidError
	var host x509.HostnameError
	var alert tls.AlertError
	switch {
	case errors.As(err, &unk):
		return fmt.Errorf("%w (the peer's certificate is not signed by our --tls-ca)", err)
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return fmt.Errorf("%w (the peer's certificate has expired)", err)
	case errors.As(err, &host):
		return fmt.Errorf("%w (issue the peer's certificate with this --ip or --dns)", err)
	case errors.As(err, &alert):
		return fmt.Errorf("%w (the peer refused our certificate: is it signed by the peer's CA, and unexpired?)", err)
	}
	return err
}

// Listen wraps ln so that every connection is mutual TLS (Server). A nil
// Config returns ln.
func (c *Config) Listen(ln net.Listener) net.Listener {
	if c == nil {
		return ln
	}
	return tls.NewListener(ln, c.Server())
}

// Verified reports whether conn is a TLS connection whose peer presented
// a certificate the CA signed (handshake done).
func Verified(conn net.Conn) bool {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return false
	}
	return StateVerified(tc.ConnectionState())
}

// StateVerified is Verified for a connection state (an http.Request's TLS).
func StateVerified(st tls.ConnectionState) bool {
	return st.HandshakeComplete && len(st.VerifiedChains) > 0
}

// IsLoopback reports whether addr (host:port, or a host) is on a loopback
// interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// pemBlock encodes der as PEM of the given type.
func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newPool(caPEM []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(caPEM)
	return p
}

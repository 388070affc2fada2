package store

import (
	"bufio"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"tide/resp"
	"tide/tlsconf"
)

// nodeDialer dials other nodes' HTTP ports: plain TCP without TLS, else
// mutual TLS with this node's certificate. The URLs stay http://: the
// connection the transport is handed is already encrypted, and the node's
// port tells TLS from plain text by its first byte (tlsconf.Mixed).
func nodeDialer(t *tlsconf.Config, timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if t == nil {
		return (&net.Dialer{Timeout: timeout}).DialContext
	}
	return t.Dial
}

// plainOK reports whether a listener may take plain-text clients: on
// loopback, or when the operator said --insecure.
func (n *Node) plainOK(ln net.Listener) bool {
	return n.cfg.Insecure || tlsconf.IsLoopback(ln.Addr().String())
}

// ErrInsecure refuses to serve plain text on an interface other than
// loopback without Insecure.
var ErrInsecure = errors.New("refusing to serve without TLS on an interface other than loopback: give --tls-ca, --tls-cert and --tls-key (tide cert), or --insecure to accept that anyone who reaches it can read and change everything")

// checkPlain refuses listen addresses (name to host:port; "" for none)
// on other interfaces than loopback that would serve plain text to
// anyone (no TLS; for RESP, no password), unless Insecure; with Insecure
// it warns. Start runs it before a joining node claims a token, so that a
// refused start leaves nothing behind in the ring.
func (n *Node) checkPlain(addrs map[string]string) error {
	for _, name := range []string{"chord", "http", "resp"} {
		addr := addrs[name]
		if addr == "" || tlsconf.IsLoopback(addr) {
			continue
		}
		open := n.cfg.TLS == nil
		if name == "resp" {
			open = n.cfg.RESPACL == nil
		}
		if !open && !n.cfg.Insecure {
			continue
		}
		if !n.cfg.Insecure {
			return fmt.Errorf("%s address %s: %w", name, addr, ErrInsecure)
		}
		what := "without TLS or client credentials"
		if !open {
			what = "plain text beside TLS (--insecure)"
		}
		n.log.Warn("serving "+what+" on an interface other than loopback: anyone who can reach it can use it", "listener", name, "addr", addr)
	}
	return nil
}

// secure puts TLS on the Chord and HTTP listeners. With TLS each port
// takes TLS from every client, and plain text too where plainOK: the
// seed's msgpack-rpc scripts and curl keep working on loopback. Without
// TLS, a listener on another interface needs Insecure (checkPlain).
func (n *Node) secure(chordLn, httpLn net.Listener) (net.Listener, net.Listener) {
	t := n.cfg.TLS
	if t == nil {
		return chordLn, httpLn
	}
	if n.plainOK(chordLn) {
		chordLn = t.Mixed(chordLn, t.Server())
	} else {
		chordLn = t.Listen(chordLn)
	}
	if n.plainOK(httpLn) {
		httpLn = t.Mixed(httpLn, t.ServerOptional())
	} else {
		httpLn = tls.NewListener(httpLn, t.ServerOptional())
	}
	return chordLn, httpLn
}

// Scope is what an HTTP bearer token allows; each includes the ones
// below it.
type Scope int

const (
	// ScopeNone is an anonymous client where tokens are required.
	ScopeNone Scope = iota
	// ScopeRead reads files, keys, the ring and the node's info.
	ScopeRead
	// ScopeWrite also uploads, writes and deletes files and keys.
	ScopeWrite
	// ScopeAdmin also changes the ring (add_node, remove_node, POST
	// /hash_ring, clear_cache, leave) and reaches /internal/ and
	// /debug/ routes.
	ScopeAdmin
)

var scopeNames = map[string]Scope{"read": ScopeRead, "write": ScopeWrite, "admin": ScopeAdmin}

func (s Scope) String() string {
	for k, v := range scopeNames {
		if v == s {
			return k
		}
	}
	return "none"
}

// Tokens maps bearer tokens to their scopes.
type Tokens map[string]Scope

// LoadTokens reads a tokens file: one "SCOPE TOKEN" a line (scope read,
// write or admin); blank lines and lines starting with # are skipped.
func LoadTokens(path string) (Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	t := Tokens{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		fields := strings.Fields(s)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s:%d: want SCOPE TOKEN (scope read, write or admin)", path, line)
		}
		sc, ok := scopeNames[fields[0]]
		if !ok {
			return nil, fmt.Errorf("%s:%d: scope %q: want read, write or admin", path, line, fields[0])
		}
		if len(fields[1]) < 16 {
			return nil, fmt.Errorf("%s:%d: token shorter than 16 characters", path, line)
		}
		t[fields[1]] = sc
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	if len(t) == 0 {
		return nil, fmt.Errorf("tokens file %s holds no token", path)
	}
	return t, nil
}

// SetTokens replaces the HTTP bearer tokens of a node started with some
// (a reloaded tokens file): every request from now on is checked against
// t. A node started without tokens, or an empty t, is refused.
func (n *Node) SetTokens(t Tokens) error {
	if len(t) == 0 {
		return errors.New("no tokens: an empty tokens file would lock every client out")
	}
	if n.tokens.Load() == nil {
		return errors.New("this node was started without --http-tokens")
	}
	n.tokens.Store(&t)
	return nil
}

// SetRESPACL replaces the users of the node's Redis-protocol server (a
// reloaded --acl-file or a new --requirepass): see resp.Server.SetACL.
func (n *Node) SetRESPACL(a *resp.ACL) error {
	srv := n.respSrv.Load()
	if srv == nil {
		return errors.New("this node serves no Redis protocol")
	}
	return srv.SetACL(a)
}

// scopeOf is the scope a bearer token gives, compared in constant time.
func (t Tokens) scopeOf(token string) Scope {
	best := ScopeNone
	for k, s := range t {
		if subtle.ConstantTimeCompare([]byte(k), []byte(token)) == 1 && s > best {
			best = s
		}
	}
	return best
}

// need is the scope a request needs: none for /metrics and /healthz.
func need(r *http.Request) Scope {
	p := r.URL.Path
	switch {
	case p == "/metrics" || p == "/healthz":
		return ScopeNone
	case p == "/internal/info":
		return ScopeRead
	case strings.HasPrefix(p, "/internal/") || strings.HasPrefix(p, "/debug/") ||
		strings.HasPrefix(p, "/add_node/") || strings.HasPrefix(p, "/remove_node/") || p == "/clear_cache" ||
		(p == "/hash_ring" && r.Method != http.MethodGet && r.Method != http.MethodHead):
		return ScopeAdmin
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		return ScopeRead
	}
	return ScopeWrite
}

// guard checks every request against what it needs: a node of the
// cluster (a client certificate of its CA, with TLS on) may do anything;
// with tokens, others need a token of the scope the route needs; with TLS
// and without tokens, only /internal/ routes other than /internal/info
// are closed to clients without a certificate.
func (n *Node) guard(h http.Handler) http.Handler {
	if n.cfg.TLS == nil && n.cfg.Tokens == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && tlsconf.StateVerified(*r.TLS) {
			h.ServeHTTP(w, r)
			return
		}
		want := need(r)
		tokens := n.tokens.Load()
		if tokens == nil {
			if want == ScopeAdmin && strings.HasPrefix(r.URL.Path, "/internal/") {
				n.m.authFailures.WithLabelValues("http").Inc()
				http.Error(w, "forbidden: "+r.URL.Path+" takes requests only from tide nodes (a client certificate of the cluster's CA)", http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
			return
		}
		if want == ScopeNone {
			h.ServeHTTP(w, r)
			return
		}
		auth := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || tok == "" {
			n.m.authFailures.WithLabelValues("http").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="tide"`)
			http.Error(w, "unauthorized: this node needs a bearer token (Authorization: Bearer TOKEN) of scope "+want.String(), http.StatusUnauthorized)
			return
		}
		got := tokens.scopeOf(tok)
		if got == ScopeNone {
			n.m.authFailures.WithLabelValues("http").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="tide", error="invalid_token"`)
			http.Error(w, "unauthorized: unknown bearer token", http.StatusUnauthorized)
			return
		}
		if got < want {
			n.m.authFailures.WithLabelValues("http").Inc()
			http.Error(w, fmt.Sprintf("forbidden: %s %s needs a token of scope %s; this one has %s", r.Method, r.URL.Path, want, got), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

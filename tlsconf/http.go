package tlsconf

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// ListenTide wraps ln for a port that tide's own clients reach over mutual
// TLS (Server: a client presents a certificate of the CA). With
// plainOnLoopback and ln on a loopback interface, the port also takes
// plain text (Mixed), so that curl or a metrics scraper on the machine
// keeps working; callers that change anything check Verified (or
// StateVerified of an http.Request's TLS). Elsewhere it takes mutual TLS
// only. A nil Config returns ln.
func (c *Config) ListenTide(ln net.Listener, plainOnLoopback bool) net.Listener {
	if c == nil {
		return ln
	}
	if plainOnLoopback && IsLoopback(ln.Addr().String()) {
		return c.Mixed(ln, c.Server())
	}
	return c.Listen(ln)
}

// httpTransports holds each Config's HTTP transport, so that its
// connections (and their handshakes) are reused across clients.
var httpTransports sync.Map // *Config -> *http.Transport

// HTTPTransport is an HTTP transport whose connections are mutual TLS
// with c's material, made in the dial: tide's clients keep "http://" URLs,
// as they do to a node's HTTP port. A nil Config gives plain TCP
// (http.DefaultTransport). Every call on one Config returns the same
// transport.
func (c *Config) HTTPTransport() http.RoundTripper {
	if c == nil {
		return http.DefaultTransport
	}
	if t, ok := httpTransports.Load(c); ok {
		return t.(*http.Transport)
	}
	t, _ := httpTransports.LoadOrStore(c, &http.Transport{
		DialContext:         c.Dial,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
	})
	return t.(*http.Transport)
}

// HTTPClient is an http.Client on HTTPTransport with the given timeout (0:
// none).
func (c *Config) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Transport: c.HTTPTransport(), Timeout: timeout}
}

// RequireVerified wraps h so that requests of the methods named (all when
// none is named) are answered 403 unless they come over mutual TLS with
// a certificate of the CA: on a ListenTide port that takes plain text on
// loopback, a plain-text client may read but not change anything. A nil
// Config returns h.
func (c *Config) RequireVerified(h http.Handler, what string, methods ...string) http.Handler {
	if c == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		guarded := len(methods) == 0
		for _, m := range methods {
			if r.Method == m {
				guarded = true
			}
		}
		if guarded && (r.TLS == nil || !StateVerified(*r.TLS)) {
			http.Error(w, "refused: "+what+" takes changes only over mutual TLS: give --tls-ca, --tls-cert and --tls-key, a certificate of the cluster's CA", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

package tlsconf

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestListenTide serves HTTP on a ListenTide port behind RequireVerified
// for POST: a client with a certificate of the CA reads and changes; on
// loopback with plain text allowed, a plain client reads and is refused
// changes; a TLS client without a certificate, or plain text where plain
// is not allowed, is refused outright.
func TestListenTide(t *testing.T) {
	dir := newCA(t)
	srv := mustLoad(t, issue(t, dir, NodeCert{Name: "server"}))
	cl := mustLoad(t, issue(t, dir, NodeCert{Name: "client"}))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Method+" ok") })
	serve := func(plain bool) string {
		ln := srv.ListenTide(listen(t), plain)
		hs := &http.Server{Handler: srv.RequireVerified(h, "this endpoint", http.MethodPost), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close() })
		return "http://" + ln.Addr().String() + "/"
	}
	do := func(c *http.Client, method, url string) (int, string, error) {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	tide := cl.HTTPClient(10 * time.Second)
	plain := (*Config)(nil).HTTPClient(10 * time.Second)
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

	mixed := serve(true)
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		if code, body, err := do(tide, m, mixed); err != nil || code != http.StatusOK || body != m+" ok" {
			t.Errorf("%s with a certificate, plain allowed on loopback: %d %q %v", m, code, body, err)
		}
	}
	if code, body, err := do(plain, http.MethodGet, mixed); err != nil || code != http.StatusOK {
		t.Errorf("plain GET on loopback: %d %q %v", code, body, err)
	}
	if code, body, err := do(plain, http.MethodPost, mixed); err != nil || code != http.StatusForbidden || !strings.Contains(body, "only over mutual TLS") {
		t.Errorf("plain POST on loopback: %d %q %v, want 403", code, body, err)
	}
	if code, _, err := do(noCert, http.MethodGet, strings.Replace(mixed, "http://", "https://", 1)); err == nil {
		t.Errorf("TLS without a client certificate was served: %d", code)
	}

	strict := serve(false)
	if code, body, err := do(tide, http.MethodPost, strict); err != nil || code != http.StatusOK {
		t.Errorf("POST with a certificate, TLS only: %d %q %v", code, body, err)
	}
	// Go's TLS server answers plain HTTP with a 400 and closes.
	if code, body, err := do(plain, http.MethodGet, strict); err == nil && code == http.StatusOK {
		t.Errorf("plain text where plain is not allowed was served: %d %q", code, body)
	}
	if code, _, err := do(noCert, http.MethodGet, strings.Replace(strict, "http://", "https://", 1)); err == nil {
		t.Errorf("TLS without a client certificate was served: %d", code)
	}
	if srv.HTTPTransport() != srv.HTTPTransport() {
		t.Errorf("HTTPTransport is not reused")
	}
}

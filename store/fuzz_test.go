package store

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzUpload throws arbitrary multipart bodies at the upload handler of a
// real single-node ring. Whatever arrives, the node answers with a status
// from the contract, never panics, and never stores past its capacity.
func FuzzUpload(f *testing.F) {
	f.Add([]byte("--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.txt\"\r\n\r\nhello\r\n--B--\r\n"))
	f.Add([]byte("--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"../a\"\r\n\r\nx\r\n--B--\r\n"))
	f.Add([]byte("--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a\"\r\n\r\nx\r\n--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"b\"\r\n\r\ny\r\n--B--\r\n"))
	f.Add([]byte("--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"t\"\r\n\r\ntrunc"))
	f.Add([]byte(""))
	n := startTestNode(f, "", 1, func(c *Config) { c.Capacity = 1 << 20; c.MaxFileSize = 4096 })
	h := n.routes()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/upload", bytes.NewReader(body))
		req.Header.Set("Content-Type", "multipart/form-data; boundary=B")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusNoContent, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusInsufficientStorage:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if used, _ := n.files.Disk(); used > 1<<20 {
			t.Fatalf("node stored %d bytes past its capacity", used)
		}
	})
}

// FuzzKVHTTP throws arbitrary keys, values and query strings at the KV and
// seed routes of a real single-node ring: every answer is a status from
// the contract, never a panic.
func FuzzKVHTTP(f *testing.F) {
	f.Add("key", "value", "w=1")
	f.Add("\xff\xfe", "", "r=0")
	f.Add("a/b", "x", "w=abc")
	n := startTestNode(f, "", 1, func(c *Config) { c.KV.MaxValue = 4096 })
	h := n.routes()
	f.Fuzz(func(t *testing.T, key, value, query string) {
		query = rawQuery(query)
		for _, req := range []*http.Request{
			httptest.NewRequest(http.MethodPut, "/kv/"+url.PathEscape(key)+"?"+query, strings.NewReader(value)),
			httptest.NewRequest(http.MethodGet, "/kv/"+url.PathEscape(key)+"?"+query, nil),
			httptest.NewRequest(http.MethodPost, "/route", strings.NewReader(url.Values{"key": {key}, "val": {value}}.Encode())),
			httptest.NewRequest(http.MethodGet, "/route?key="+url.QueryEscape(key), nil),
			httptest.NewRequest(http.MethodGet, "/route_test?"+query, nil),
			httptest.NewRequest(http.MethodGet, "/add_node/"+url.PathEscape(key)+"/"+url.PathEscape(value), nil),
		} {
			if req.Method == http.MethodPost {
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 && rec.Code != http.StatusBadGateway && rec.Code != http.StatusServiceUnavailable {
				t.Fatalf("%s %s: %d %s", req.Method, req.URL, rec.Code, rec.Body)
			}
		}
	})
}

// rawQuery escapes the bytes that cannot appear in a request line, keeping
// '=' and '&' so the fuzzer still explores parameters.
func rawQuery(q string) string {
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c <= 0x20 || c >= 0x7f || c == '#' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

package store

import (
	"bufio"
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
		if used, _ := n.Disk(); used > 1<<20 {
			t.Fatalf("node stored %d bytes past its capacity", used)
		}
	})
}

// FuzzRESP feeds arbitrary bytes to the RESP reader: it returns a command,
// an error, or asks for more input, and never panics or allocates past its
// bounds.
func FuzzRESP(f *testing.F) {
	f.Add([]byte("*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n"))
	f.Add([]byte("PING\r\n"))
	f.Add([]byte("*1\r\n$-1\r\n"))
	f.Add([]byte("*99999999999\r\n"))
	f.Add([]byte("*2\r\n$3\r\nGET\r\n$100000000\r\nx"))
	f.Add([]byte("*2\r\n$3\r\nGET\r\n$3\r\nabc\r\n*3\r\n$3\r\nSET\r\n$3\r\nabc\r\n$70\r\n0123456789012345678901234567890123456789012345678901234567890123456789\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// A small buffer, so that lines longer than it are gathered too.
		r := bufio.NewReaderSize(bytes.NewReader(b), 64)
		// One arena for every command, as a connection has: what earlier
		// commands read must stay intact (writes may outlive their reply).
		var arena respArena
		var kept, copies [][]byte
		defer func() {
			for i := range kept {
				if !bytes.Equal(kept[i], copies[i]) {
					t.Fatalf("argument %d changed from %q to %q after later commands", i, copies[i], kept[i])
				}
			}
		}()
		for range 8 {
			args, err := arena.readCommand(r, 1<<16)
			if err != nil {
				return
			}
			for _, a := range args {
				if len(a) > 1<<16 {
					t.Fatalf("argument of %d bytes passed the bound", len(a))
				}
				kept = append(kept, a)
				copies = append(copies, bytes.Clone(a))
			}
			arena.reset()
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

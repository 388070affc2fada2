package store

import (
	"bytes"
	"net/http"
	"net/http/httptest"
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

package files

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tide/chord"
)

// TestRelayGivesUpOnStalledSender: a node relaying another's answer
// stops once the sender sends nothing more for stallTimeout (it was
// paused mid-answer), and its client gets the bytes sent so far rather
// than a read that hangs.
func TestRelayGivesUpOnStalledSender(t *testing.T) {
	defer func(d time.Duration) { stallTimeout = d }(stallTimeout)
	stallTimeout = 200 * time.Millisecond
	release := make(chan struct{})
	sender := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		w.Write(bytes.Repeat([]byte{'x'}, 100))
		w.(http.Flusher).Flush()
		<-release // paused
	}))
	defer sender.Close()
	defer close(release) // before the server's Close, which waits for it
	resp, err := http.Get(sender.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var logs bytes.Buffer
	n := &Service{log: slog.New(slog.NewTextHandler(&logs, nil))}
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		n.relay(rec, resp, "f.bin", chord.Ref{})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the relay of a stalled sender's answer did not end")
	}
	if rec.Body.Len() != 100 {
		t.Fatalf("relayed %d bytes, want the 100 sent", rec.Body.Len())
	}
	if !bytes.Contains(logs.Bytes(), []byte("stalled")) {
		t.Fatalf("no warning of the stall in the log: %s", logs.String())
	}
}

// TestFetchOfFrozenHolderEnds: a node that said it holds the newest copy
// and then froze before answering the read of it (paused, cut off) fails
// the read within copyAnswerTimeout, not the transport's far longer
// ResponseHeaderTimeout.
func TestFetchOfFrozenHolderEnds(t *testing.T) {
	defer func(d time.Duration) { copyAnswerTimeout = d }(copyAnswerTimeout)
	copyAnswerTimeout = 200 * time.Millisecond
	release := make(chan struct{})
	holder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // frozen
	}))
	defer holder.Close()
	defer close(release)
	addr := strings.TrimPrefix(holder.URL, "http://")
	n := &Service{hc: &http.Client{}, cfg: Config{HTTPAddrOf: func(context.Context, chord.Ref) (string, error) { return addr, nil }}}
	done := make(chan bool)
	go func() {
		r := httptest.NewRequest(http.MethodGet, "/files/f.bin", nil)
		done <- n.tryGet(context.Background(), httptest.NewRecorder(), r, chord.Ref{}, "/internal/file/", "f.bin", false)
	}()
	select {
	case ok := <-done:
		if ok {
			t.Fatal("a read of a frozen holder's copy succeeded")
		}
	case <-time.After(time.Minute):
		t.Fatal("a read of a frozen holder's copy waited past a minute")
	}
}

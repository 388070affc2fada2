package files

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tide/chord"
	"tide/store/engine"
)

// relayNode is a Service alone in its ring, with a real engine holding
// name with body (none if body is nil), for the relay's tests.
func relayNode(t *testing.T, name string, body []byte) (*Service, *bytes.Buffer) {
	t.Helper()
	eng, err := engine.Open(t.TempDir(), func(b []byte) uint32 { return uint32(len(b)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	if body != nil {
		w, err := eng.Create()
		if err != nil {
			t.Fatal(err)
		}
		w.Write(body)
		if _, _, err := w.Commit(name, 7); err != nil {
			t.Fatal(err)
		}
	}
	ring, err := chord.NewNode(chord.Config{Self: chord.Ref{IP: "127.0.0.1", Port: 1, ID: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	return &Service{log: slog.New(slog.NewTextHandler(&logs, nil)), eng: eng, ring: ring,
		m: metrics{resumed: prometheus.NewCounter(prometheus.CounterOpts{Name: "resumed"})}}, &logs
}

// stallingSender answers with the first sent bytes of body, as a copy
// whose ETag is etag, then stalls until the test ends.
func stallingSender(t *testing.T, body []byte, sent int, etag string) *http.Response {
	t.Helper()
	release := make(chan struct{})
	sender := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Header().Set("ETag", etag)
		w.WriteHeader(http.StatusOK)
		w.Write(body[:sent])
		w.(http.Flusher).Flush()
		<-release // paused
	}))
	t.Cleanup(sender.Close)
	t.Cleanup(func() { close(release) }) // before the server's Close, which waits for it
	resp, err := http.Get(sender.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// relayWithin runs n.relay of resp, failing the test if it has not ended
// within a minute.
func relayWithin(t *testing.T, n *Service, resp *http.Response, name string) *httptest.ResponseRecorder {
	t.Helper()
	defer func(d time.Duration) { relayStallTimeout = d }(relayStallTimeout)
	relayStallTimeout = 200 * time.Millisecond
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		n.relay(context.Background(), rec, resp, name, chord.Ref{})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the relay of a stalled sender's answer did not end")
	}
	return rec
}

// TestRelayGivesUpOnStalledSender: a node relaying another's answer
// stops once the sender sends nothing more for relayStallTimeout (it
// was paused mid-answer) and no other node holds the copy: its client
// gets the bytes sent so far, short of the Content-Length, rather than
// a read that hangs.
func TestRelayGivesUpOnStalledSender(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 100)
	n, logs := relayNode(t, "f.bin", nil)
	rec := relayWithin(t, n, stallingSender(t, body, 100, `"abc"`), "f.bin")
	if rec.Body.Len() != 100 {
		t.Fatalf("relayed %d bytes, want the 100 sent", rec.Body.Len())
	}
	if !bytes.Contains(logs.Bytes(), []byte("cut short")) {
		t.Fatalf("no warning of the answer cut short in the log: %s", logs.String())
	}
}

// TestRelayResumesFromAnotherCopy: when the sender stops part way and
// another node (here the relaying node itself) holds the same copy, the
// relay reads the rest from it, and the client gets the whole file. A
// copy with another ETag is not used.
func TestRelayResumesFromAnotherCopy(t *testing.T) {
	body := make([]byte, 300<<10)
	rand.Read(body)
	sum := md5.Sum(body)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	n, logs := relayNode(t, "f.bin", body)
	rec := relayWithin(t, n, stallingSender(t, body, 100<<10, etag), "f.bin")
	if !bytes.Equal(rec.Body.Bytes(), body) {
		t.Fatalf("relayed %d bytes, not the whole file of %d; log: %s", rec.Body.Len(), len(body), logs.String())
	}
	other, _ := relayNode(t, "f.bin", body[1:])
	rec = relayWithin(t, other, stallingSender(t, body, 100<<10, etag), "f.bin")
	if rec.Body.Len() != 100<<10 {
		t.Fatalf("relayed %d bytes with only another copy to resume from, want the %d sent", rec.Body.Len(), 100<<10)
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
		done <- n.tryGet(context.Background(), httptest.NewRecorder(), r, chord.Ref{}, "f.bin")
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

// A node reading past a silent owner counts itself among the owner's
// replicas only when it knows every node between them, and is not
// leaving. Ring (ids): o 100, p 200, q 300, a 400; N = 3, so o's set is
// o, p, q.
func TestLikelyReplicas(t *testing.T) {
	ref := func(id uint32) chord.Ref { return chord.Ref{IP: "127.0.0.1", Port: int(id), ID: chord.ID(id)} }
	o, p, q, a := ref(100), ref(200), ref(300), ref(400)
	for _, tc := range []struct {
		what    string
		self    chord.Ref
		pred    chord.Ref
		leaving bool
		cands   []chord.Ref // what self knows, ordered after o
		want    []chord.Ref
	}{
		// a knows o and p (its successors) and itself: q, its predecessor,
		// stands between p and a unseen, so a is not in o's set.
		{"a view short of the ring", a, q, false, []chord.Ref{p, a}, []chord.Ref{p}},
		// In a ring of three (o, p, a), a follows p: its view is whole.
		{"a whole view", a, p, false, []chord.Ref{p, a}, []chord.Ref{p, a}},
		// q's predecessor is p, which it knows: q is o's second successor.
		{"a node in the set", q, p, false, []chord.Ref{p, q, a}, []chord.Ref{p, q}},
		{"the same node leaving", q, p, true, []chord.Ref{p, q, a}, []chord.Ref{p, a}},
		// p follows o directly.
		{"the owner's successor", p, o, false, []chord.Ref{p, q}, []chord.Ref{p, q}},
		{"a node that knows others only", a, q, false, []chord.Ref{p, q}, []chord.Ref{p, q}},
		// p directly after a silent o forgets its predecessor o.
		{"a predecessor lost", p, chord.Ref{}, false, []chord.Ref{p, q}, []chord.Ref{p, q}},
		// In a ring of three (o, p, a), a takes p for its successor once o
		// is silent, and p takes a for its predecessor: p took over o's
		// range, and knows every node between o and itself.
		{"the owner's predecessor took over", p, a, false, []chord.Ref{p, a}, []chord.Ref{p, a}},
	} {
		got := likelyReplicas(tc.self, tc.pred, tc.leaving, o, tc.cands, 2)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.what, got, tc.want)
		}
	}
}

// Package postnotify is a small post-notification service pair that uses
// antipode: a writer service stores posts in Redis (region A's primary)
// and notifies a reader service over HTTP; the reader (region B) reads the
// post from its Redis replica. The notification's lineage crosses in the
// Antipode-Lineage header, and the lines marked "antipode:" are all that
// adopting it takes.
//
// Run the pair with ./writer and ./reader (see their -help), or see
// postnotify_test.go, which runs both against a real primary and a
// replica lagging 500ms behind.
package postnotify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"tide/antipode"
	"tide/antipode/redisshim"
)

// Writer serves POST /posts: it stores the body as a new post and
// notifies the reader service.
type Writer struct {
	Posts     *redis.Client // region A's primary
	ReaderURL string        // the reader service, e.g. http://127.0.0.1:8081
	HTTP      *http.Client
	next      atomic.Int64
}

// Notification is what the writer sends the reader.
type Notification struct {
	PostID string `json:"post_id"`
}

func (w *Writer) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/posts" {
		http.Error(rw, "POST /posts", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	id := fmt.Sprintf("post-%d-%d", time.Now().UnixNano(), w.next.Add(1))
	ctx := r.Context()

	store := &redisshim.Writer{Client: w.Posts, Store: "posts"}
	write, err := store.Set(ctx, id, body, 0)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusServiceUnavailable)
		return
	}
	ctx = antipode.Write(ctx, write) // antipode: record the write in the request's lineage

	note, _ := json.Marshal(Notification{PostID: id})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.ReaderURL+"/notify", bytes.NewReader(note))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	antipode.Inject(ctx, req.Header) // antipode: the lineage goes with the notification
	resp, err := w.HTTP.Do(req)
	if err != nil {
		http.Error(rw, "notify reader: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(resp.StatusCode)
	io.Copy(rw, resp.Body) // the reader's answer: did it find the post?
}

// Reader serves POST /notify: it reads the notified post from its replica
// and answers whether it found it.
type Reader struct {
	Posts *redis.Client // region B's replica
	// Barrier, if set, waits for the notification's lineage (nil: read at
	// once, as a service without antipode would).
	Barrier func(ctx context.Context) error
}

// Answer is the reader's reply.
type Answer struct {
	PostID string `json:"post_id"`
	Found  bool   `json:"found"`
	Body   string `json:"body,omitempty"`
}

func (rd *Reader) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/notify" {
		http.Error(rw, "POST /notify", http.StatusNotFound)
		return
	}
	var n Notification
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&n); err != nil || n.PostID == "" {
		http.Error(rw, "want {\"post_id\": ...}", http.StatusBadRequest)
		return
	}
	ctx, err := antipode.Extract(r.Context(), r.Header) // antipode: the lineage the notification carries
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	if rd.Barrier != nil {
		bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := rd.Barrier(bctx) // antipode: wait until the post is in this region's replica
		cancel()
		if err != nil {
			http.Error(rw, err.Error(), http.StatusGatewayTimeout)
			return
		}
	}
	body, err := rd.Posts.Get(ctx, n.PostID).Result()
	a := Answer{PostID: n.PostID, Found: err == nil, Body: body}
	if err != nil && err != redis.Nil {
		http.Error(rw, err.Error(), http.StatusServiceUnavailable)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(a)
}

// NewReplicaBarrier registers the replica's waiter for "posts" in a
// registry of the reader's own and returns its Barrier.
func NewReplicaBarrier(replica *redis.Client) func(context.Context) error {
	reg := antipode.NewRegistry()
	reg.Register("posts", redisshim.NewWaiter(replica, antipode.Backoff{})) // antipode: this region's replica of "posts"
	return reg.Barrier
}

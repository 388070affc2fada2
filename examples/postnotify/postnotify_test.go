package postnotify_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"tide/antipode/regions"
	"tide/examples/postnotify"
)

// The pair against a real Redis primary and a replica 500ms behind: with
// the barrier every notified post is found; without it, posts are missed.
func TestServicePair(t *testing.T) {
	r, err := regions.StartRedis(t.Context(), t.TempDir(), 500*time.Millisecond)
	if errors.Is(err, regions.ErrNotInstalled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	primary, replica := r.Client(r.Primary), r.Client(r.Replica)
	defer primary.Close()
	defer replica.Close()
	for _, withAntipode := range []bool{true, false} {
		reader := &postnotify.Reader{Posts: replica}
		if withAntipode {
			reader.Barrier = postnotify.NewReplicaBarrier(replica)
		}
		rs := httptest.NewServer(reader)
		ws := httptest.NewServer(&postnotify.Writer{Posts: primary, ReaderURL: rs.URL, HTTP: &http.Client{Timeout: 30 * time.Second}})
		found := 0
		const n = 10
		for i := range n {
			resp, err := http.Post(ws.URL+"/posts", "text/plain", strings.NewReader(fmt.Sprint("hello ", i)))
			if err != nil {
				t.Fatal(err)
			}
			var a postnotify.Answer
			err = json.NewDecoder(resp.Body).Decode(&a)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("POST /posts: %d %v", resp.StatusCode, err)
			}
			if a.Found {
				found++
				if a.Body != fmt.Sprint("hello ", i) {
					t.Fatalf("post %s has body %q", a.PostID, a.Body)
				}
			}
		}
		ws.Close()
		rs.Close()
		t.Logf("antipode %v: %d of %d notified posts found", withAntipode, found, n)
		if withAntipode && found != n {
			t.Errorf("with antipode, %d of %d notified posts were not found", n-found, n)
		}
		if !withAntipode && found == n {
			t.Errorf("without antipode every post was found despite 500ms of lag: the test cannot fail")
		}
	}
}

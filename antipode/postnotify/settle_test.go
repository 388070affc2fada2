package postnotify

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestTideSettle: Settle returns once region A's node reports nothing
// pending for any region, and not before.
func TestTideSettle(t *testing.T) {
	var pending atomic.Int64
	pending.Store(3)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "# HELP tide_kv_region_pending x\ntide_kv_region_pending{region=\"B\"} %d\ntide_kv_region_pending{region=\"C\"} 0\ntide_kv_region_lag_seconds{region=\"B\"} 0.5\n", pending.Load())
	}))
	defer srv.Close()
	p := &tidePosts{a: strings.TrimPrefix(srv.URL, "http://")}
	done := make(chan error, 1)
	go func() { done <- p.Settle(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("settled with 3 pending: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	pending.Store(0)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("not settled 30 s after the outbox emptied")
	}
}

package tideshim_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"tide/antipode"
	"tide/antipode/internal/shimtest"
	"tide/antipode/regions"
	"tide/antipode/tideshim"
)

// TestBarrierTideRegions: two regions of two tide nodes each, in this
// process; A holds its writes for the lag before replicating them to B.
func TestBarrierTideRegions(t *testing.T) {
	const lag = time.Second // large against queueing on a loaded machine
	ctx := context.Background()
	r, err := regions.StartTide(ctx, t.TempDir(), "", 2, lag)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w := &tideshim.Writer{Addr: r.A[0], Store: "posts"}
	// A Waiter follows B[0]'s watermarks: its waits end with no request
	// once the stream passes them.
	follower := tideshim.NewWaiter(r.B[0], antipode.Backoff{})
	// Its first waits go to the node while the stream connects; once B[0]
	// has a mark of A[0] (A finds B's nodes as its ring walks do), the
	// stream ends them.
	warm, cancelWarm := context.WithTimeout(ctx, time.Minute)
	for i := 0; follower.MarkWaits() == 0; i++ {
		id, err := w.Put(warm, fmt.Sprintf("warm-%d", i), []byte("x"))
		if err == nil {
			err = follower.Wait(warm, id)
		}
		if err != nil {
			t.Fatalf("warming the mark stream up: %v", err)
		}
	}
	cancelWarm()
	warmed := follower.MarkWaits()
	// run checks the barrier through waiter, reading at node.
	run := func(waiter *tideshim.Waiter, node string) {
		t.Helper()
		shimtest.Run(t, shimtest.Store{
			Name: "posts",
			Write: func(ctx context.Context, key string) (antipode.WriteID, error) {
				return w.Put(ctx, key, []byte("body of "+key))
			},
			Read: func(ctx context.Context, key string) (bool, error) {
				_, found, _, err := tideshim.Get(ctx, nil, node, key)
				return found, err
			},
			Replica: waiter,
			Lag:     lag,
		}, 40)
	}
	run(follower, r.B[1])
	// The same through POST /kv-wait alone: the node waits by the marks.
	asks := tideshim.NewWaiter(r.B[0], antipode.Backoff{})
	asks.NoMarks = true
	run(asks, r.B[1])
	// Every wait asked for a tenth of the lag: the node answers "not
	// yet" several times before the write comes, and only its "yes" may
	// release a barrier.
	short := tideshim.NewWaiter(r.B[1], antipode.Backoff{})
	short.LongPoll = lag / 10
	run(short, r.B[0])

	// Every write named its origin, and B's nodes answered waits by A's
	// watermarks rather than by reads (a node A had not found in B's ring
	// yet when it waited reads instead); the followers' waits ended by
	// the marks they streamed.
	if n := waitsByMark(t, r.B[0]) + waitsByMark(t, r.B[1]); n == 0 {
		t.Errorf("region B answered no wait by a watermark")
	}
	if follower.MarkWaits() == warmed {
		t.Errorf("the mark stream ended none of the barriers' waits")
	}
	if asks.MarkWaits() != 0 {
		t.Errorf("a Waiter with NoMarks ended %d waits by the stream", asks.MarkWaits())
	}

	// Region A is a valid local region too: its own writes are visible
	// there at once.
	id, err := w.Put(ctx, "local", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if id.Origin == 0 {
		t.Fatalf("write %v names no origin", id)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := tideshim.NewWaiter(r.A[1], antipode.Backoff{}).Wait(wctx, id); err != nil {
		t.Fatal(err)
	}

	// GET /kv-marks: B's node streams the origin's mark, past the write
	// once it has replicated, then the empty line, and ends after wait.
	if err := follower.Wait(wctx, id); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + r.B[0] + "/kv-marks?wait=300ms")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /kv-marks: %s %v", resp.Status, err)
	}
	lines := strings.Split(string(body), "\n")
	var mark uint64
	blank := -1
	for i, l := range lines {
		if l == "" {
			if blank < 0 {
				blank = i
			}
			continue
		}
		o, v, _ := strings.Cut(l, " ")
		if o == strconv.FormatUint(id.Origin, 10) {
			mark, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	if mark < id.Version || blank < 0 {
		t.Fatalf("GET /kv-marks answered %q: want origin %d's mark at %d or above, and an empty line after the first marks", body, id.Origin, id.Version)
	}
	for _, bad := range []string{"", "0s", "x", "1h"} {
		resp, err := http.Get("http://" + r.B[0] + "/kv-marks?wait=" + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /kv-marks?wait=%s: %s, want 400", bad, resp.Status)
		}
	}
}

func TestBarrierTideUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connections are refused
	shimtest.Unreachable(t, "posts", tideshim.NewWaiter(addr, antipode.Backoff{}))
}

// waitsByMark reads tide_kv_waits_total{how="mark"} from the node at
// addr.
func waitsByMark(t *testing.T, addr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "tide_kv_waits") {
			t.Log(addr, sc.Text())
		}
		if v, ok := strings.CutPrefix(sc.Text(), `tide_kv_waits_total{how="mark"} `); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

package tideshim_test

import (
	"bufio"
	"context"
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
	shimtest.Run(t, shimtest.Store{
		Name: "posts",
		Write: func(ctx context.Context, key string) (antipode.WriteID, error) {
			return w.Put(ctx, key, []byte("body of "+key))
		},
		Read: func(ctx context.Context, key string) (bool, error) {
			_, found, _, err := tideshim.Get(ctx, nil, r.B[1], key)
			return found, err
		},
		Replica: tideshim.NewWaiter(r.B[0], antipode.Backoff{}),
		Lag:     lag,
	}, 40)
	// Every wait asked for a tenth of the lag: the node answers "not
	// yet" several times before the write comes, and only its "yes" may
	// release a barrier.
	short := tideshim.NewWaiter(r.B[1], antipode.Backoff{})
	short.LongPoll = lag / 10
	shimtest.Run(t, shimtest.Store{
		Name: "posts",
		Write: func(ctx context.Context, key string) (antipode.WriteID, error) {
			return w.Put(ctx, key, []byte("body of "+key))
		},
		Read: func(ctx context.Context, key string) (bool, error) {
			_, found, _, err := tideshim.Get(ctx, nil, r.B[0], key)
			return found, err
		},
		Replica: short,
		Lag:     lag,
	}, 40)

	// Every write named its origin, and B's nodes answered waits by A's
	// watermarks rather than by reads (a node A had not found in B's ring
	// yet when it waited reads instead).
	if n := waitsByMark(t, r.B[0]) + waitsByMark(t, r.B[1]); n == 0 {
		t.Errorf("region B answered no wait by a watermark")
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

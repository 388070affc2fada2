package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tide/autoscale"
	"tide/autoscale/provision"
	"tide/store"
)

func TestQuantile(t *testing.T) {
	bounds := []float64{0.001, 0.002, 0.004, math.Inf(1)}
	for _, c := range []struct {
		q    float64
		cum  []float64
		want float64
	}{
		{0.5, []float64{0, 0, 0, 0}, 0},          // no observations
		{0.5, []float64{10, 10, 10, 10}, 0.0005}, // all in the first bucket: interpolated from 0
		{0.5, []float64{0, 10, 10, 10}, 0.0015},  // all in the second
		{0.99, []float64{50, 100, 100, 100}, 0.00198},
		{0.99, []float64{0, 0, 0, 5}, 0.004}, // beyond the last bound: the last bound
	} {
		if got := quantile(c.q, bounds, c.cum); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v, %v) = %v, want %v", c.q, c.cum, got, c.want)
		}
	}
}

// fakeNode serves what the dashboard reads of a store node, with a
// request counter and latency histogram that grow by 100 requests of
// about 3 ms between samples.
type fakeNode struct {
	srv    *httptest.Server
	token  uint32
	ring   func() map[string]string
	scrape atomic.Int64
	state  string
}

func newFakeNode(t *testing.T, token uint32, ring func() map[string]string) *fakeNode {
	f := &fakeNode{token: token, ring: ring, state: "member"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hash_ring", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(hashRing{Ring: f.ring()})
	})
	mux.HandleFunc("GET /internal/info", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(store.Info{HTTPAddr: f.addr(), ChordAddr: "chord-" + f.addr(), Files: 2, KVKeys: 5,
			DiskUsed: 40, DiskCap: 100, DiskPercent: 40, State: f.state, RESPAddr: "resp-" + f.addr()})
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		n := f.scrape.Add(1) * 100
		fmt.Fprintf(w, "# TYPE tide_kv_requests_total counter\ntide_kv_requests_total %d\n", n)
		fmt.Fprintf(w, "# TYPE tide_request_duration_seconds histogram\n")
		fmt.Fprintf(w, "tide_request_duration_seconds_bucket{api=\"kv\",le=\"0.002\"} 0\n")
		fmt.Fprintf(w, "tide_request_duration_seconds_bucket{api=\"kv\",le=\"0.004\"} %d\n", n)
		fmt.Fprintf(w, "tide_request_duration_seconds_bucket{api=\"kv\",le=\"+Inf\"} %d\n", n)
		fmt.Fprintf(w, "tide_request_duration_seconds_sum{api=\"kv\"} %g\ntide_request_duration_seconds_count{api=\"kv\"} %d\n", float64(n)*0.003, n)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeNode) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

type events []autoscale.Event

func (e events) Since(seq uint64) []autoscale.Event {
	var out []autoscale.Event
	for _, ev := range e {
		if ev.Seq > seq {
			out = append(out, ev)
		}
	}
	return out
}

// TestSample reads a ring of fake nodes: members in token order with
// their ranges, a joining instance, rates and latency from two samples,
// events merged with their triggering metric, and the API's JSON.
func TestSample(t *testing.T) {
	var nodes []*fakeNode
	ring := func() map[string]string {
		m := map[string]string{}
		for _, n := range nodes[:2] {
			m[fmt.Sprint(n.token)] = n.addr()
		}
		return m
	}
	nodes = append(nodes, newFakeNode(t, 1<<31, ring), newFakeNode(t, 1<<30, ring), newFakeNode(t, 3<<30, ring))
	joining := nodes[2]
	d := &Dashboard{Src: Sources{
		StoreSeeds: func() []string { return []string{"127.0.0.1:1", nodes[0].addr()} }, // the first is dead
		Instances: func(context.Context) ([]provision.Instance, error) {
			return []provision.Instance{{ID: "node3", HTTPAddr: joining.addr(), State: provision.StateRunning}}, nil
		},
		Events: []EventSource{events{{Seq: 1, Time: time.Now(), System: "store", Action: autoscale.ActScaleOut, Outcome: "started",
			Reason: "disk", Metrics: map[string]autoscale.Observation{"node1": {DiskPercent: 75}, "node2": {DiskPercent: 71}}}}},
	}}
	ctx := context.Background()
	d.Sample(ctx)
	d.Sample(ctx)
	st := d.State()
	if st.Store.Members != 2 || len(st.Store.Nodes) != 3 {
		t.Fatalf("members %d, nodes %d: want 2 members and a joining node (%s)", st.Store.Members, len(st.Store.Nodes), st.Store.Error)
	}
	a, b, j := st.Store.Nodes[0], st.Store.Nodes[1], st.Store.Nodes[2]
	if a.Token != 1<<30 || b.Token != 1<<31 || a.RangeStart != 1<<31 || b.RangeStart != 1<<30 {
		t.Errorf("ring order or ranges wrong: %+v %+v", a, b)
	}
	if a.RangeFraction != 0.75 || b.RangeFraction != 0.25 {
		t.Errorf("range fractions %v and %v, want 0.75 and 0.25", a.RangeFraction, b.RangeFraction)
	}
	if j.State != "joining" || j.ID != "node3" || a.State != "member" {
		t.Errorf("states %q %q, want joining node3 and member", j.State, a.State)
	}
	if a.OpsPerSec <= 0 || a.P50Millis <= 2 || a.P50Millis > 4 || a.P99Millis < a.P50Millis {
		t.Errorf("rates %v/s, p50 %v ms, p99 %v ms: want requests between 2 and 4 ms", a.OpsPerSec, a.P50Millis, a.P99Millis)
	}
	if st.Store.Keys != 15 || a.RESP == "" {
		t.Errorf("keys %d (want 15), resp %q", st.Store.Keys, a.RESP)
	}
	if len(st.Events) != 1 || !strings.Contains(st.Events[0].Metric, "node1 disk 75.0%") {
		t.Errorf("events %+v: want the scale-out with node1's disk as its metric", st.Events)
	}
	if len(st.Series.Time) != 2 || len(st.Series.StoreOps) != 2 {
		t.Errorf("series of %d samples, want 2", len(st.Series.Time))
	}

	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	for path, want := range map[string]string{"/api/state": `"members":2`, "/api/events?since=0": `"action":"scale_out"`, "/": "<title>tide</title>", "/app.js": "api/state"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %s, want it to contain %s", path, resp.Status, want)
		}
	}
	if resp, _ := http.Get(srv.URL + "/api/events?since=x"); resp.StatusCode != 400 {
		t.Errorf("GET /api/events?since=x: %s, want 400", resp.Status)
	}

	// A member gone from the ring is shown as left for a while.
	nodes[0], nodes[1] = nodes[1], nodes[0]
	gone := nodes[1].addr()
	nodes = nodes[:1]
	ringOne := func() map[string]string { return map[string]string{fmt.Sprint(nodes[0].token): nodes[0].addr()} }
	nodes[0].ring = ringOne
	d.Src.StoreSeeds = func() []string { return []string{nodes[0].addr()} }
	d.Src.Instances = nil
	d.Sample(ctx)
	st = d.State()
	found := false
	for _, n := range st.Store.Nodes {
		if n.HTTP == gone {
			found = n.State == "left"
		}
	}
	if st.Store.Members != 1 || !found {
		t.Errorf("after a node left: %d members, left node shown: %v", st.Store.Members, found)
	}
}

package postnotify

import (
	"bytes"
	"encoding/csv"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	r := &Result{Config: RunConfig{Delay: 50 * ms, N: 4, Concurrency: 2, Antipode: true}, WriterS: 2, EndToEnd: 4}
	r.Traces = []Trace{
		{ID: 0, WriterLatency: 60 * ms, PostWrite: 5 * ms, Visibility: 510 * ms, Barrier: 440 * ms, NotificationBytes: 100, LineageBytes: 50, PostBytes: 300, Consistent: true, done: true},
		{ID: 1, WriterLatency: 70 * ms, PostWrite: 6 * ms, Visibility: 520 * ms, Barrier: 450 * ms, NotificationBytes: 100, LineageBytes: 50, PostBytes: 300, Consistent: true, done: true},
		{ID: 2, WriterLatency: 80 * ms, PostWrite: 7 * ms, Visibility: 90 * ms, NotificationBytes: 100, LineageBytes: 50, PostBytes: 300, Consistent: false, Err: "deadline", done: true},
		{ID: 3, WriterLatency: 90 * ms, PostWrite: 8 * ms, NotificationBytes: 100, LineageBytes: 50, PostBytes: 300, Err: "notification not received"},
	}
	s := Summarize(r, "redis", "tide-log", 500*ms)
	if s.Consistent != 2 || s.Inconsistent != 1 || s.Lost != 1 || s.BarrierErrors != 1 {
		t.Fatalf("counts %+v", s)
	}
	if s.InconsistencyPct != 33.333 || s.WriterThroughput != 2 || s.EndToEndThroughput != 0.75 {
		t.Fatalf("pct %v, writer %v, end to end %v", s.InconsistencyPct, s.WriterThroughput, s.EndToEndThroughput)
	}
	if s.LineageBytesPerMessage != 50 || s.StorageOverheadBytesPerRequest != 50 || s.PostBytesTotal != 1200 {
		t.Fatalf("bytes %+v", s)
	}
	if s.VisibilityLatencyMS.P50 != 510 || s.VisibilityLatencyMS.Max != 520 || s.VisibilityOverLagMS.Max != 20 {
		t.Fatalf("visibility %+v over lag %+v", s.VisibilityLatencyMS, s.VisibilityOverLagMS)
	}
	var buf bytes.Buffer
	if err := WriteTraces(&buf, r); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil || len(rows) != 5 || rows[3][11] != "false" || rows[4][12] != "notification not received" {
		t.Fatalf("traces: %v %v", rows, err)
	}
}

func TestParseConnect(t *testing.T) {
	c, err := ParseConnect([]string{"redis-primary=127.0.0.1:6379", "pg-standby=host=/tmp user=postgres"})
	if err != nil || c["redis-primary"] != "127.0.0.1:6379" || c["pg-standby"] != "host=/tmp user=postgres" {
		t.Fatalf("%v %v", c, err)
	}
	for _, bad := range []string{"redis", "mysql=1", "nats="} {
		if _, err := ParseConnect([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := (Connect{"redis-primary": "x"}).need("redis-primary", "redis-replica"); err == nil {
		t.Error("missing redis-replica not reported")
	}
}

package postnotify

import (
	"bytes"
	"encoding/csv"
	"strings"
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

func TestParseProcStat(t *testing.T) {
	// comm with a space and a parenthesis; utime 150, stime 50, cutime 7, cstime 3 ticks.
	line := []byte("4242 (tide (x) y) S 17 4242 4242 0 -1 4194560 1000 0 0 0 150 50 7 3 20 0 12 0 100 1000000 500 18446744073709551615\n")
	p, err := parseProcStat(line)
	if err != nil || p.ppid != 17 || p.name != "tide (x) y" || p.cpu != 2100*time.Millisecond {
		t.Fatalf("%+v %v", p, err)
	}
	for _, bad := range []string{"", "1 (x S 1", "1 (x) S 1 2 3", "1 (x) S z 1 1 0 -1 0 0 0 0 0 1 1 1 1 20"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	busy, total, err := parseHostStat([]byte("cpu  100 5 50 800 40 1 2 3 9 9\ncpu0 1 1 1 1\n"))
	if err != nil || busy != 161 || total != 1001 {
		t.Fatalf("busy %d total %d %v", busy, total, err)
	}
	if _, _, err := parseHostStat([]byte("intr 1 2 3\n")); err == nil {
		t.Error("a /proc/stat without its cpu line accepted")
	}
}

func TestSampleCPU(t *testing.T) {
	a := sampleCPU()
	deadline := time.Now().Add(200 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x // burn CPU in this process
	}
	u := cpuUse(a, sampleCPU(), 10)
	if u == nil || u.ClientMSPerRequest <= 0 || u.HostCores < 1 {
		t.Fatalf("%+v", u)
	}
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("4242 (tide) S 17 4242 4242 0 -1 4194560 1000 0 0 0 150 50 7 3 20 0 12 0 100 1000000 500 1\n"))
	f.Add([]byte("cpu  100 5 50 800 40 1 2 3 9 9\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := parseProcStat(b); err == nil && p.cpu < 0 {
			t.Fatalf("negative CPU %v", p.cpu)
		}
		if busy, total, err := parseHostStat(b); err == nil && busy > total {
			t.Fatalf("busy %d > total %d", busy, total)
		}
	})
}

func TestTideName(t *testing.T) {
	for args, want := range map[string]string{
		"tide node --data-dir d --region B --replicas 2": "tide node B",
		"tide node --region=A":                           "tide node A",
		"tide log serve --role leader":                   "tide log",
		"tide":                                           "tide",
	} {
		if got := tideName(strings.Fields(args)); got != want {
			t.Errorf("tideName(%q) = %q, want %q", args, got, want)
		}
	}
}

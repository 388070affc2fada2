package postnotify

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// Percentiles summarizes a latency in milliseconds.
type Percentiles struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	ms := make([]float64, len(ds))
	sum := 0.0
	for i, d := range ds {
		ms[i] = float64(d) / float64(time.Millisecond)
		sum += ms[i]
	}
	slices.Sort(ms)
	at := func(q float64) float64 { return round3(ms[min(len(ms)-1, int(math.Ceil(q*float64(len(ms))))-1)]) }
	return Percentiles{Mean: round3(sum / float64(len(ms))), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: round3(ms[len(ms)-1])}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// Summary is summary.json: one run's figures.
type Summary struct {
	PostStore   string `json:"post_store"`
	Notify      string `json:"notify"`
	DelayMS     int64  `json:"delay_ms"`
	LagMS       int64  `json:"lag_ms"`
	Antipode    bool   `json:"antipode"`
	Requests    int    `json:"requests"`
	Concurrency int    `json:"concurrency"`

	// Reads that found the post, and those that did not.
	Consistent       int     `json:"consistent"`
	Inconsistent     int     `json:"inconsistent"`
	InconsistencyPct float64 `json:"inconsistency_pct"`
	// Lost: notifications that never reached the reader (not counted above).
	Lost int `json:"lost"`
	// BarrierErrors: barriers that ended in an error (a deadline).
	BarrierErrors int `json:"barrier_errors"`

	// Writer throughput: requests per second until the last writer
	// finished (the seed's client throughput). End to end: until the last
	// read finished.
	WriterThroughput   float64 `json:"writer_throughput_rps"`
	EndToEndThroughput float64 `json:"end_to_end_throughput_rps"`

	WriterLatencyMS       Percentiles `json:"writer_latency_ms"`
	PostWriteMS           Percentiles `json:"post_write_ms"`
	VisibilityLatencyMS   Percentiles `json:"visibility_latency_ms"`
	NotificationLatencyMS Percentiles `json:"notification_latency_ms"`
	BarrierMS             Percentiles `json:"barrier_ms"`
	// VisibilityOverLagMS is the visibility latency minus the injected
	// lag: with antipode at delay 0, what the barrier and the read cost
	// beyond the replication lag itself.
	VisibilityOverLagMS Percentiles `json:"visibility_over_lag_ms"`

	// Bytes: the lineage each notification carried (its header value),
	// whole notifications, and posts (key and body).
	LineageBytesPerMessage      float64 `json:"lineage_bytes_per_message"`
	NotificationBytesPerMessage float64 `json:"notification_bytes_per_message"`
	NotificationBytesTotal      int64   `json:"notification_bytes_total"`
	PostBytesPerRequest         float64 `json:"post_bytes_per_request"`
	PostBytesTotal              int64   `json:"post_bytes_total"`
	// StorageOverheadBytesPerRequest is what antipode adds to what the
	// stores keep: the lineage, where the channel stores its messages
	// (the tide log); nothing in the post stores, whose versions are their
	// own replication positions.
	StorageOverheadBytesPerRequest float64 `json:"storage_overhead_bytes_per_request"`

	// CPU is the CPU time per request, the benchmark's and its servers',
	// over the whole run (writers and readers), and how busy the machine
	// was.
	CPU *CPUUse `json:"cpu,omitempty"`
}

// Summarize computes a run's summary.
func Summarize(r *Result, postStore, notify string, lag time.Duration) Summary {
	c := r.Config
	s := Summary{PostStore: postStore, Notify: notify, DelayMS: c.Delay.Milliseconds(), LagMS: lag.Milliseconds(),
		Antipode: c.Antipode, Requests: c.N, Concurrency: c.Concurrency, CPU: r.CPU}
	var writer, post, vis, note, barrier, over []time.Duration
	for _, t := range r.Traces {
		if t.WriterLatency > 0 {
			writer = append(writer, t.WriterLatency)
			post = append(post, t.PostWrite)
			s.NotificationBytesTotal += int64(t.NotificationBytes)
			s.PostBytesTotal += int64(t.PostBytes)
			s.LineageBytesPerMessage += float64(t.LineageBytes)
		}
		if !t.done {
			s.Lost++
			continue
		}
		if t.Consistent {
			s.Consistent++
		} else {
			s.Inconsistent++
		}
		if t.Err != "" && c.Antipode {
			s.BarrierErrors++
		}
		vis = append(vis, t.Visibility)
		note = append(note, t.NotificationLatency)
		over = append(over, t.Visibility-lag)
		if c.Antipode {
			barrier = append(barrier, t.Barrier)
		}
	}
	if n := s.Consistent + s.Inconsistent; n > 0 {
		s.InconsistencyPct = round3(100 * float64(s.Inconsistent) / float64(n))
	}
	if w := len(writer); w > 0 {
		s.LineageBytesPerMessage = round3(s.LineageBytesPerMessage / float64(w))
		s.NotificationBytesPerMessage = round3(float64(s.NotificationBytesTotal) / float64(w))
		s.PostBytesPerRequest = round3(float64(s.PostBytesTotal) / float64(w))
	}
	if notify == "tide-log" {
		s.StorageOverheadBytesPerRequest = s.LineageBytesPerMessage
	}
	if r.WriterS > 0 {
		s.WriterThroughput = round3(float64(len(writer)) / r.WriterS)
	}
	if r.EndToEnd > 0 {
		s.EndToEndThroughput = round3(float64(s.Consistent+s.Inconsistent) / r.EndToEnd)
	}
	s.WriterLatencyMS, s.PostWriteMS = percentiles(writer), percentiles(post)
	s.VisibilityLatencyMS, s.NotificationLatencyMS = percentiles(vis), percentiles(note)
	s.BarrierMS, s.VisibilityOverLagMS = percentiles(barrier), percentiles(over)
	return s
}

// TraceColumns are traces.csv's columns, the original benchmark's
// per-request fields (times in milliseconds).
var TraceColumns = []string{"request_id", "delay_ms", "antipode", "writer_latency_ms", "post_write_ms",
	"visibility_latency_ms", "notification_latency_ms", "barrier_ms", "notification_bytes", "lineage_bytes",
	"post_bytes", "consistent", "error"}

// WriteTraces writes traces.csv.
func WriteTraces(w io.Writer, r *Result) error {
	cw := csv.NewWriter(w)
	cw.Write(TraceColumns)
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
	}
	for _, t := range r.Traces {
		if !t.done {
			cw.Write([]string{strconv.Itoa(t.ID), strconv.FormatInt(r.Config.Delay.Milliseconds(), 10), strconv.FormatBool(r.Config.Antipode),
				ms(t.WriterLatency), ms(t.PostWrite), "", "", "", strconv.Itoa(t.NotificationBytes), strconv.Itoa(t.LineageBytes),
				strconv.Itoa(t.PostBytes), "", t.Err})
			continue
		}
		cw.Write([]string{strconv.Itoa(t.ID), strconv.FormatInt(r.Config.Delay.Milliseconds(), 10), strconv.FormatBool(r.Config.Antipode),
			ms(t.WriterLatency), ms(t.PostWrite), ms(t.Visibility), ms(t.NotificationLatency), ms(t.Barrier),
			strconv.Itoa(t.NotificationBytes), strconv.Itoa(t.LineageBytes), strconv.Itoa(t.PostBytes),
			strconv.FormatBool(t.Consistent), t.Err})
	}
	cw.Flush()
	return cw.Error()
}

// WriteRun writes traces.csv and summary.json into dir.
func WriteRun(dir string, r *Result, s Summary) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "traces.csv"))
	if err != nil {
		return err
	}
	if err := WriteTraces(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, "summary.json"), s)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// RunDir names a sweep run's directory.
func RunDir(delay time.Duration, antipodeOn bool) string {
	mode := "without-antipode"
	if antipodeOn {
		mode = "with-antipode"
	}
	return fmt.Sprintf("delay-%dms-%s", delay.Milliseconds(), mode)
}

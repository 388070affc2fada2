package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Outcome is how an operation ended for its client.
type Outcome int

const (
	// Acked: the store acknowledged it.
	Acked Outcome = iota
	// Failed: the store answered with an error, or refused the connection:
	// the client knows the operation did not happen, or may retry it.
	Failed
	// Unanswered: the client gave up waiting (its request timeout) or the
	// connection broke mid-request; the operation may have happened.
	Unanswered
)

func (o Outcome) String() string {
	switch o {
	case Acked:
		return "acknowledged"
	case Failed:
		return "failed"
	case Unanswered:
		return "unanswered"
	}
	return fmt.Sprintf("outcome %d", int(o))
}

// classify tells a clear failure from an unanswered request.
func classify(err error) Outcome {
	if err == nil {
		return Acked
	}
	var se *statusErr
	if errors.As(err, &se) {
		return Failed
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Unanswered
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Unanswered
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return Failed // refused or unreachable: nothing was sent
	}
	return Unanswered
}

// notApplied reports whether a failed write certainly did not take
// effect: its request never reached a node (a refused dial), or the
// node refused it unstored because its own disk is full. A refusal by
// replicas says "outcome unknown": the coordinator stored it.
func notApplied(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var se *statusErr
	return errors.As(err, &se) && strings.Contains(se.msg, "disk full") && !strings.Contains(se.msg, "outcome unknown")
}

// statusErr is an error the store answered with.
type statusErr struct {
	code int
	msg  string
}

func (e *statusErr) Error() string { return e.msg }

// Counts are one workload's operations.
type Counts struct {
	Attempted    int `json:"attempted"`
	Acknowledged int `json:"acknowledged"`
	// Failed were answered with an error (or refused): the client knew.
	Failed int `json:"failed"`
	// Unanswered timed out or broke off: the outcome was unknown.
	Unanswered int `json:"unanswered"`
	// Lost are acknowledged writes that the end of the run did not find.
	Lost int `json:"lost"`
	// LongestFailure is the longest time one client saw nothing but
	// failed or unanswered requests.
	LongestFailure time.Duration `json:"longest_failure_ns"`
	// LongestFailureAt is when that run of failures began, from the start
	// of the workload: which fault it follows.
	LongestFailureAt time.Duration `json:"longest_failure_at_ns"`
	// LongestFailureTrail is that run's first failures: when, through
	// what, and the error.
	LongestFailureTrail []string `json:"longest_failure_trail,omitempty"`
	// Others is the latency of requests through the nodes no fault
	// named: whether a remaining node answers at normal latency while
	// others fail, leave or join.
	Others *Latency `json:"others,omitempty"`
}

// Latency sums up the time requests took, failed ones included.
type Latency struct {
	Nodes    []string      `json:"nodes"`
	Requests int           `json:"requests"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	Max      time.Duration `json:"max_ns"`
	// Slowest are the slowest requests that took over a second: when,
	// through what, how long, and how they ended.
	Slowest []string `json:"slowest,omitempty"`
}

func (l *Latency) String() string {
	if l == nil || l.Requests == 0 {
		return "-"
	}
	return fmt.Sprintf("%s / %s", roundLatency(l.P99), roundLatency(l.Max))
}

func roundLatency(d time.Duration) time.Duration {
	if d < 10*time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// tally counts a workload's operations as its clients finish them.
type tally struct {
	origin   time.Time // the workload's start
	mu       sync.Mutex
	c        Counts
	runStart map[int]time.Time          // per client: when its current run of failures began
	trail    map[int][]string           // per client: its current run's first failures
	errs     map[string]int             // failure messages, counted
	lat      map[string][]time.Duration // by node: every request's time
	slow     []slowReq                  // requests that took over a second
}

// slowReq is a request that took over a second.
type slowReq struct {
	node string
	took time.Duration
	desc string
}

func newTally() *tally {
	return &tally{origin: time.Now(), runStart: map[int]time.Time{}, trail: map[int][]string{}, errs: map[string]int{}, lat: map[string][]time.Duration{}}
}

// trailLen is how many failures of the longest run the report keeps.
const trailLen = 12

// failureRun ends client's run of failures, which began at start.
func (t *tally) failureRun(client int, start, end time.Time) {
	if d := end.Sub(start); d > t.c.LongestFailure {
		t.c.LongestFailure, t.c.LongestFailureAt = d, start.Sub(t.origin)
		t.c.LongestFailureTrail = t.trail[client]
	}
	delete(t.runStart, client)
	delete(t.trail, client)
}

// record counts one operation of client, which went through via (a node's
// name, or how a log client sent it).
func (t *tally) record(client int, via string, start, end time.Time, out Outcome, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.c.Attempted++
	if node := via[strings.LastIndexByte(via, ' ')+1:]; node != "" {
		t.lat[node] = append(t.lat[node], end.Sub(start))
		if d := end.Sub(start); d > time.Second {
			how := "acknowledged"
			if err != nil {
				how = shorten(err.Error(), 160)
			}
			t.slow = append(t.slow, slowReq{node, d, fmt.Sprintf("%s+%s c%d via %s: %s", start.Sub(t.origin).Round(100*time.Millisecond),
				d.Round(100*time.Millisecond), client, via, how)})
		}
	}
	switch out {
	case Acked:
		t.c.Acknowledged++
		if s, ok := t.runStart[client]; ok {
			t.failureRun(client, s, end)
		}
		return
	case Failed:
		t.c.Failed++
	case Unanswered:
		t.c.Unanswered++
	}
	if _, ok := t.runStart[client]; !ok {
		t.runStart[client] = start
	}
	if err != nil && len(t.trail[client]) < trailLen {
		t.trail[client] = append(t.trail[client], fmt.Sprintf("%s+%s c%d via %s: %s", start.Sub(t.origin).Round(100*time.Millisecond),
			end.Sub(start).Round(100*time.Millisecond), client, via, shorten(err.Error(), 160)))
	}
	if err != nil && len(t.errs) < 64 {
		t.errs[shorten(digits.ReplaceAllString(err.Error(), "N"), 160)]++
	}
}

// close ends every client's run of failures at end.
func (t *tally) close(end time.Time) Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c, s := range t.runStart {
		t.failureRun(c, s, end)
	}
	return t.c
}

// others sums up the latency of the requests through nodes, those of
// them that took any.
func (t *tally) others(nodes []string) *Latency {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := &Latency{}
	var all []time.Duration
	for _, n := range nodes {
		if d := t.lat[n]; len(d) > 0 {
			l.Nodes = append(l.Nodes, n)
			all = append(all, d...)
		}
	}
	if len(all) == 0 {
		return nil
	}
	slices.Sort(all)
	in := map[string]bool{}
	for _, n := range nodes {
		in[n] = true
	}
	var slow []slowReq
	for _, r := range t.slow {
		if in[r.node] {
			slow = append(slow, r)
		}
	}
	slices.SortStableFunc(slow, func(a, b slowReq) int { return int(b.took - a.took) })
	for _, r := range slow[:min(len(slow), 5)] {
		l.Slowest = append(l.Slowest, r.desc)
	}
	l.Requests = len(all)
	l.P50, l.P99, l.Max = all[len(all)/2], all[len(all)*99/100], all[len(all)-1]
	return l
}

// digits are replaced in error messages, so that messages differing only
// in addresses, sizes and versions count as one.
var digits = regexp.MustCompile(`[0-9]+`)

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// recorder is a workload's history as its clients add to it: the
// operations, a line per operation saying how it went, and the highest
// acknowledged write per key.
type recorder struct {
	origin  time.Time // the workload's start
	mu      sync.Mutex
	history []porcupine.Operation
	via     []string
	acked   map[string]int
}

func newRecorder() *recorder { return &recorder{origin: time.Now(), acked: map[string]int{}} }

// ns is t in nanoseconds since the workload's start.
func (r *recorder) ns(t time.Time) int64 { return t.Sub(r.origin).Nanoseconds() }

func (r *recorder) add(op porcupine.Operation, via string) {
	r.mu.Lock()
	r.history = append(r.history, op)
	r.via = append(r.via, via)
	r.mu.Unlock()
}

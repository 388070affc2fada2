package autoscale

import (
	"bufio"
	"encoding/json"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Event is one decision the controller acted on, or a change in why it
// did not act: what it saw, what it did and how that ended.
type Event struct {
	Seq      uint64                 `json:"seq"`
	Time     time.Time              `json:"time"`
	System   string                 `json:"system"`
	Action   Action                 `json:"action"`
	Reason   string                 `json:"reason"`
	Metrics  map[string]Observation `json:"metrics,omitempty"`
	Instance string                 `json:"instance,omitempty"`
	// Outcome: "decided" (no action), "started", "succeeded", "failed",
	// "resumed".
	Outcome string  `json:"outcome"`
	Error   string  `json:"error,omitempty"`
	Seconds float64 `json:"seconds,omitempty"`
}

// Events keeps the latest events in memory, appends every event to a
// JSON-lines file if one is set, and counts them in metrics.
type Events struct {
	mu     sync.Mutex
	seq    uint64
	buf    []Event
	keep   int
	file   *os.File
	count  *prometheus.CounterVec
	notify []func(Event)
}

// NewEvents keeps the last keep events; path (optional) is a JSON-lines
// file that every event is appended to.
func NewEvents(keep int, path string, reg prometheus.Registerer) (*Events, error) {
	e := &Events{keep: keep}
	if path != "" {
		// Continue the sequence of an earlier controller.
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for sc.Scan() {
				var ev Event
				if json.Unmarshal(sc.Bytes(), &ev) == nil {
					e.seq = max(e.seq, ev.Seq)
					e.push(ev)
				}
			}
			f.Close()
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		e.file = f
	}
	e.count = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tide_autoscale_events_total", Help: "Autoscaler events, by system, action and outcome.",
	}, []string{"system", "action", "outcome"})
	if reg != nil {
		reg.MustRegister(e.count)
	}
	return e, nil
}

func (e *Events) push(ev Event) {
	e.buf = append(e.buf, ev)
	if len(e.buf) > e.keep {
		e.buf = e.buf[len(e.buf)-e.keep:]
	}
}

// Add records an event and returns it with its sequence number.
func (e *Events) Add(ev Event) Event {
	e.mu.Lock()
	e.seq++
	ev.Seq = e.seq
	e.push(ev)
	if e.file != nil {
		b, _ := json.Marshal(ev)
		e.file.Write(append(b, '\n'))
	}
	fns := e.notify
	e.mu.Unlock()
	e.count.WithLabelValues(ev.System, string(ev.Action), ev.Outcome).Inc()
	for _, f := range fns {
		f(ev)
	}
	return ev
}

// OnEvent calls f for every event added from now on.
func (e *Events) OnEvent(f func(Event)) {
	e.mu.Lock()
	e.notify = append(e.notify, f)
	e.mu.Unlock()
}

// Since returns the events after sequence number seq, oldest first.
func (e *Events) Since(seq uint64) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.buf {
		if ev.Seq > seq {
			out = append(out, ev)
		}
	}
	return out
}

// Close closes the events file.
func (e *Events) Close() error {
	if e.file != nil {
		return e.file.Close()
	}
	return nil
}

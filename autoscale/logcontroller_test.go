package autoscale

import (
	"context"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"
)

// fakeLog is a log whose roles receive a set total rate, spread evenly
// over their instances, on a fake clock.
type fakeLog struct {
	now     time.Time
	counts  map[string]int
	total   map[string]float64 // messages/s across the role
	counter map[string]float64 // cumulative, per role (split evenly)
	scaled  []string
	// cpuPerMsg, if set, gives every instance a 0.25 CPU limit and this
	// many CPU seconds per message received.
	cpuPerMsg map[string]float64
}

func (f *fakeLog) advance(d time.Duration) {
	for role, r := range f.total {
		f.counter[role] += r * d.Seconds()
	}
	f.now = f.now.Add(d)
}

func (f *fakeLog) Sample(context.Context) (map[string]map[string]LogCounters, error) {
	out := map[string]map[string]LogCounters{}
	for role, n := range f.counts {
		out[role] = map[string]LogCounters{}
		for i := range n {
			c := LogCounters{Messages: f.counter[role] / float64(n)}
			if f.cpuPerMsg != nil {
				c.CPUSeconds, c.CPULimit = c.Messages*f.cpuPerMsg[role], 0.25
			}
			out[role][fmt.Sprint(role, i)] = c
		}
	}
	return out, nil
}

func (f *fakeLog) Scale(_ context.Context, role string, n int, _ io.Writer) error {
	f.scaled = append(f.scaled, fmt.Sprintf("%s %d->%d", role, f.counts[role], n))
	f.counts[role] = n
	f.counter[role] = 0 // new instances start from zero; the controller starts over anyway
	return nil
}

// Under a rising load on proxy leaders, the controller grows them; when
// the load stops it shrinks them again, one change at a time, after the
// cooldown; other roles are left alone.
func TestLogControllerFollowsLoad(t *testing.T) {
	f := &fakeLog{now: t0, counts: baseCounts(), total: map[string]float64{"batchers": 5000, "proxy-leaders": 40000, "acceptor-groups": 15000, "replicas": 60000, "unbatchers": 5000},
		counter: map[string]float64{}}
	events, err := NewEvents(100, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &LogController{Target: f, Policy: LogPolicy{Cfg: LogConfig{Capacity: testCapacity}}, Events: events, now: func() time.Time { return f.now }}
	step := func(n int) {
		for range n {
			f.advance(5 * time.Second)
			c.Step(context.Background())
		}
	}
	step(6)
	if len(f.scaled) != 0 {
		t.Fatalf("scaled %v at 40%% load", f.scaled)
	}
	f.total["proxy-leaders"] = 95000 // 2 proxy leaders at 95%
	step(6)
	if len(f.scaled) != 1 || f.scaled[0] != "proxy-leaders 2->4" {
		t.Fatalf("scaled %v, want proxy-leaders 2->4 (95k / (50k * 0.6))", f.scaled)
	}
	f.total["proxy-leaders"] = 1000
	step(6) // within the scale-in cooldown
	if len(f.scaled) != 1 {
		t.Fatalf("scaled %v within the scale-in cooldown", f.scaled)
	}
	step(12)
	if len(f.scaled) != 2 || f.scaled[1] != "proxy-leaders 4->2" {
		t.Fatalf("scaled %v, want proxy-leaders 4->2 next (at most half at a time)", f.scaled)
	}
	step(20)
	if len(f.scaled) != 3 || f.scaled[2] != "proxy-leaders 2->1" {
		t.Fatalf("scaled %v, want proxy-leaders 2->1 last", f.scaled)
	}
	var started, succeeded int
	for _, ev := range events.Since(0) {
		switch ev.Outcome {
		case "started":
			started++
		case "succeeded":
			succeeded++
		}
	}
	if started != 3 || succeeded != 3 {
		t.Fatalf("%d started and %d succeeded events, want 3 and 3", started, succeeded)
	}
}

// Instances limited to a quarter of a CPU that spend 100 µs a message:
// at 3000 msgs/s over 2 proxy leaders (15% of the profile's capacity) they
// are at 60% of their CPU each: the controller grows them on CPU, and
// grows replicas, which have no capacity at all, on CPU alone.
func TestLogControllerScalesOnCPU(t *testing.T) {
	f := &fakeLog{now: t0, counts: baseCounts(), total: map[string]float64{"proxy-leaders": 3000, "replicas": 2000},
		counter: map[string]float64{}, cpuPerMsg: map[string]float64{"proxy-leaders": 100e-6, "replicas": 200e-6}}
	c := &LogController{Target: f, Policy: LogPolicy{Cfg: LogConfig{Capacity: map[string]float64{"proxy-leaders": 10000}, Periods: 2}}, now: func() time.Time { return f.now }}
	for range 12 {
		f.advance(5 * time.Second)
		c.Step(context.Background())
	}
	// proxy leaders: 1500 msgs/s each = 0.15 CPU = 60% of 0.25 -> below
	// High (80%): left alone. Replicas: 1000 msgs/s each = 0.2 CPU = 80%
	// -> grow to ceil(2 * 0.8 / 0.6) = 3.
	if len(f.scaled) == 0 || f.scaled[0] != "replicas 2->3" {
		t.Fatalf("changes %v, want replicas grown 2->3 first", f.scaled)
	}
	f.total["proxy-leaders"] = 4000 // 2000 each = 0.2 CPU = 80%
	for range 12 {
		f.advance(5 * time.Second)
		c.Step(context.Background())
	}
	if !slices.Contains(f.scaled, "proxy-leaders 2->3") {
		t.Fatalf("changes %v, want proxy leaders grown on CPU (40%% of their message capacity)", f.scaled)
	}
}

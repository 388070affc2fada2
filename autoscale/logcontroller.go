package autoscale

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// LogTarget is the running log the log controller scales: how many
// instances each role has, a sample of every instance's cumulative
// message count, and the means to resize a role (for a local log,
// cluster.LogControl).
type LogTarget interface {
	// Sample returns, for each role of LogRoles, each instance's (for
	// acceptor-groups: each group's busiest acceptor's) cumulative
	// counters, by instance.
	Sample(ctx context.Context) (map[string]map[string]LogCounters, error)
	// Scale makes role have n instances, reporting progress to out.
	Scale(ctx context.Context, role string, n int, out io.Writer) error
}

// LogCounters are one role instance's cumulative counters: messages
// received, and its process's CPU seconds with its CPU limit in CPUs (0:
// none).
type LogCounters struct {
	Messages   float64 `json:"messages"`
	CPUSeconds float64 `json:"cpu_seconds"`
	CPULimit   float64 `json:"cpu_limit,omitempty"`
}

// LogController runs the log policy against a log: every Period it
// samples each role instance's message counter, turns two samples into
// rates, asks the policy, and carries out its decision, one change at a
// time. Each decision, and each change's outcome, is an event.
type LogController struct {
	Target LogTarget
	Policy LogPolicy
	Period time.Duration // default 5s
	Events *Events       // optional
	Log    *slog.Logger  // optional

	history      []LogRound
	prev         map[string]map[string]LogCounters
	prevAt       time.Time
	lastOut      time.Time
	lastIn       time.Time
	lastReason   string
	keepHistory  int
	now          func() time.Time
	scaleTimeout time.Duration
}

func (c *LogController) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// Run evaluates every Period until ctx ends.
func (c *LogController) Run(ctx context.Context) error {
	period := c.Period
	if period <= 0 {
		period = 5 * time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		c.Step(ctx)
	}
}

// Step runs one period: sample, decide, act.
func (c *LogController) Step(ctx context.Context) LogDecision {
	now := c.clock()
	sample, err := c.Target.Sample(ctx)
	if err != nil {
		c.note(LogDecision{Reason: "no sample: " + err.Error()})
		c.prev = nil
		return LogDecision{Reason: err.Error()}
	}
	if c.prev != nil {
		secs := now.Sub(c.prevAt).Seconds()
		round := LogRound{Time: now, Rates: map[string][]float64{}, CPU: map[string][]float64{}}
		for role, insts := range sample {
			before, ok := c.prev[role]
			if !ok || secs <= 0 {
				continue
			}
			var rates, cpu []float64
			complete, limited := true, true
			for id, v := range insts {
				b, ok := before[id]
				if !ok || v.Messages < b.Messages || v.CPUSeconds < b.CPUSeconds {
					complete = false // a new or restarted instance: next period
					break
				}
				rates = append(rates, (v.Messages-b.Messages)/secs)
				if v.CPULimit > 0 {
					cpu = append(cpu, (v.CPUSeconds-b.CPUSeconds)/secs/v.CPULimit)
				} else {
					limited = false
				}
			}
			if complete {
				round.Rates[role] = rates
				if limited {
					round.CPU[role] = cpu
				}
			}
		}
		c.history = append(c.history, round)
		if keep := max(c.keepHistory, 32); len(c.history) > keep {
			c.history = c.history[len(c.history)-keep:]
		}
	}
	c.prev, c.prevAt = sample, now
	counts := map[string]int{}
	for role, insts := range sample {
		counts[role] = len(insts)
	}
	d := c.Policy.Decide(LogView{Now: now, Counts: counts, History: c.history, LastScaleOut: c.lastOut, LastScaleIn: c.lastIn})
	if d.Role == "" {
		c.note(d)
		return d
	}
	action := ActScaleOut
	if d.To < d.From {
		action = ActScaleIn
	}
	c.event(Event{System: "log", Action: action, Reason: d.Reason, Instance: d.Role, Outcome: "started"})
	if c.Log != nil {
		c.Log.Info("autoscale: resizing a log role", "role", d.Role, "from", d.From, "to", d.To, "reason", d.Reason)
	}
	start := c.clock()
	timeout := c.scaleTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	err = c.Target.Scale(sctx, d.Role, d.To, io.Discard)
	cancel()
	ev := Event{System: "log", Action: action, Reason: fmt.Sprintf("%s %d -> %d: %s", d.Role, d.From, d.To, d.Reason), Instance: d.Role,
		Outcome: "succeeded", Seconds: c.clock().Sub(start).Seconds()}
	if err != nil {
		ev.Outcome, ev.Error = "failed", err.Error()
		if c.Log != nil {
			c.Log.Warn("autoscale: resizing a log role failed", "role", d.Role, "to", d.To, "err", err)
		}
	}
	c.event(ev)
	// Rates measured across a change mix two shapes: start over.
	c.prev, c.history = nil, nil
	if action == ActScaleOut {
		c.lastOut = c.clock()
	} else {
		c.lastIn = c.clock()
	}
	return d
}

// note records a decision not to act when its reason changes.
func (c *LogController) note(d LogDecision) {
	if d.Reason == c.lastReason {
		return
	}
	c.lastReason = d.Reason
	c.event(Event{System: "log", Action: ActNone, Reason: d.Reason, Outcome: "decided"})
}

func (c *LogController) event(ev Event) {
	ev.Time = c.clock()
	if c.Events != nil {
		c.Events.Add(ev)
	}
}

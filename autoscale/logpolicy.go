package autoscale

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// LogRoles are the compartments of the tide log the log policy sizes, in
// the order it considers them. Leaders (one active, the rest standby) and
// matchmakers do not scale with load.
var LogRoles = []string{"batchers", "proxy-leaders", "acceptor-groups", "replicas", "unbatchers"}

// LogConfig is the log policy's settings. Zero fields take the defaults
// documented on each.
type LogConfig struct {
	// Capacity is what one instance of each role handles at full speed,
	// in messages received per second, as `tide bench component` measures
	// it (for acceptor-groups: what each acceptor of a group receives).
	// Where role instances have a CPU limit (containers), their CPU use
	// over it is a second utilization, and the higher one counts; a role
	// with neither a capacity nor a CPU limit is never scaled on load.
	Capacity map[string]float64 `yaml:"capacity" json:"capacity"`
	// Target is the utilization (rate / capacity) a change sizes a role
	// for. Default 0.6.
	Target float64 `yaml:"target"`
	// High: a role whose utilization is at or above this for Periods
	// consecutive periods grows. Default 0.8.
	High float64 `yaml:"high"`
	// Low: a role whose utilization is at or below this for Periods
	// consecutive periods shrinks. Default 0.25.
	Low float64 `yaml:"low"`
	// Periods is K, the consecutive periods a threshold must hold. Default 3.
	Periods int `yaml:"periods"`
	// Min and Max bound each role's instances. Defaults: batchers 0-8,
	// proxy-leaders 1-16, acceptor-groups 1-4, replicas 2-8, unbatchers
	// 0-8 (a role at 0 is bypassed: clients send to the leader, replicas
	// reply to clients).
	Min map[string]int `yaml:"min"`
	Max map[string]int `yaml:"max"`
	// ScaleOutCooldown is the least time after any change before a role
	// grows. Default 10s.
	ScaleOutCooldown Duration `yaml:"scale_out_cooldown"`
	// ScaleInCooldown is the least time after any change before a role
	// shrinks. Default 60s.
	ScaleInCooldown Duration `yaml:"scale_in_cooldown"`
}

var (
	logMinDefault = map[string]int{"batchers": 0, "proxy-leaders": 1, "acceptor-groups": 1, "replicas": 2, "unbatchers": 0}
	logMaxDefault = map[string]int{"batchers": 8, "proxy-leaders": 16, "acceptor-groups": 4, "replicas": 8, "unbatchers": 8}
)

// WithDefaults fills zero fields.
func (c LogConfig) WithDefaults() LogConfig {
	if c.Target == 0 {
		c.Target = 0.6
	}
	if c.High == 0 {
		c.High = 0.8
	}
	if c.Low == 0 {
		c.Low = 0.25
	}
	if c.Periods == 0 {
		c.Periods = 3
	}
	fill := func(m map[string]int, def map[string]int) map[string]int {
		out := map[string]int{}
		for k, v := range def {
			out[k] = v
		}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	c.Min, c.Max = fill(c.Min, logMinDefault), fill(c.Max, logMaxDefault)
	if c.ScaleOutCooldown == 0 {
		c.ScaleOutCooldown = Duration(10 * time.Second)
	}
	if c.ScaleInCooldown == 0 {
		c.ScaleInCooldown = Duration(60 * time.Second)
	}
	return c
}

// Validate reports settings that cannot work.
func (c LogConfig) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Target <= 0 || c.Target >= 1:
		return fmt.Errorf("log.target %v: want a utilization in (0, 1)", c.Target)
	case c.High <= c.Target || c.High > 1:
		return fmt.Errorf("log.high %v must be above log.target %v and at most 1", c.High, c.Target)
	case c.Low < 0 || c.Low >= c.Target:
		return fmt.Errorf("log.low %v must be below log.target %v (the gap is the hysteresis)", c.Low, c.Target)
	case c.Periods < 1:
		return fmt.Errorf("log.periods %d: need at least 1", c.Periods)
	}
	for role, v := range c.Capacity {
		if !slices.Contains(LogRoles, role) {
			return fmt.Errorf("log.capacity: unknown role %q (want one of %v)", role, LogRoles)
		}
		if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("log.capacity.%s %v: want a positive rate", role, v)
		}
	}
	for _, role := range LogRoles {
		lo, hi := c.Min[role], c.Max[role]
		if lo < logMinDefault[role] && logMinDefault[role] > 0 {
			return fmt.Errorf("log.min.%s %d: need at least %d", role, lo, logMinDefault[role])
		}
		if lo < 0 || hi < lo {
			return fmt.Errorf("log.max.%s %d is below log.min.%s %d", role, hi, role, lo)
		}
	}
	return nil
}

// Needed is how many instances of role the capacity profile says carry
// rate messages per second at the Target utilization, within Min and
// Max; -1 if the role has no capacity.
func (c LogConfig) Needed(role string, rate float64) int {
	c = c.WithDefaults()
	capacity, ok := c.Capacity[role]
	if !ok || capacity <= 0 {
		return -1
	}
	n := int(math.Ceil(rate / (capacity * c.Target)))
	return min(max(n, c.Min[role], 1), c.Max[role])
}

// LogRound is one period's load on the log: for each role, the messages
// per second each of its instances received (for acceptor-groups, each
// group's busiest acceptor). A role that could not be scraped is absent.
type LogRound struct {
	Time  time.Time            `json:"time"`
	Rates map[string][]float64 `json:"rates"`
	// CPU is, for roles whose instances all have a CPU limit, each
	// instance's CPU use as a fraction of its limit.
	CPU map[string][]float64 `json:"cpu,omitempty"`
}

// LogView is everything the log policy may look at.
type LogView struct {
	Now time.Time
	// Counts is each role's current number of instances.
	Counts  map[string]int
	History []LogRound // oldest first
	// LastScaleOut and LastScaleIn are when the last completed change of
	// each kind finished (zero: never).
	LastScaleOut, LastScaleIn time.Time
	// InFlight is set while a reconfiguration is being carried out.
	InFlight bool
}

// LogDecision is the log policy's answer: resize Role from From to To
// instances, or nothing (Role empty), with the reason either way.
type LogDecision struct {
	Role   string `json:"role,omitempty"`
	From   int    `json:"from,omitempty"`
	To     int    `json:"to,omitempty"`
	Reason string `json:"reason"`
}

// LogPolicy sizes each compartment of the tide log from its load and its
// measured capacity, one change at a time, as the store policy does for
// nodes: a role grows when its utilization has stayed at or above High
// for Periods periods, to the count that brings it to Target; it shrinks
// when utilization has stayed at or below Low, by at most half at a time.
// Of several roles past a threshold, the most (or least) loaded goes
// first: in a pipeline, the saturated stage caps every other.
type LogPolicy struct {
	Cfg LogConfig
}

// utilization is a role's load in one round: its messages over its
// capacity (if it has one), or its instances' mean CPU use over their
// limit (if they have one), whichever is higher. ok is false when the
// round has neither for the role's count instances.
func utilization(r LogRound, role string, count int, capacity float64) (total, util float64, ok bool) {
	rates, measured := r.Rates[role]
	if !measured || len(rates) != count || count == 0 {
		return 0, 0, false
	}
	for _, x := range rates {
		total += x
	}
	if capacity > 0 {
		util, ok = total/(float64(count)*capacity), true
	}
	if cpu := r.CPU[role]; len(cpu) == count {
		mean := 0.0
		for _, x := range cpu {
			mean += x / float64(count)
		}
		util, ok = max(util, mean), true
	}
	return total, util, ok
}

// Decide returns the change to make now, if any.
func (p LogPolicy) Decide(v LogView) LogDecision {
	c := p.Cfg.WithDefaults()
	none := func(format string, a ...any) LogDecision {
		return LogDecision{Reason: fmt.Sprintf(format, a...)}
	}
	if v.InFlight {
		return none("a reconfiguration is in flight")
	}
	for _, role := range LogRoles {
		if n := v.Counts[role]; n < c.Min[role] {
			return LogDecision{Role: role, From: n, To: c.Min[role], Reason: fmt.Sprintf("%d %s, below min %d", n, role, c.Min[role])}
		}
		if n := v.Counts[role]; n > c.Max[role] {
			return LogDecision{Role: role, From: n, To: c.Max[role], Reason: fmt.Sprintf("%d %s, above max %d", n, role, c.Max[role])}
		}
	}
	changed := v.LastScaleOut
	if v.LastScaleIn.After(changed) {
		changed = v.LastScaleIn
	}
	fresh := 0
	for i := len(v.History) - 1; i >= 0 && v.History[i].Time.After(changed); i-- {
		fresh++
	}
	if fresh < c.Periods {
		return none("%d of %d periods observed since the last change", fresh, c.Periods)
	}
	recent := v.History[len(v.History)-c.Periods:]
	since := func(t time.Time) time.Duration {
		if t.IsZero() {
			return time.Duration(math.MaxInt64)
		}
		return v.Now.Sub(t)
	}
	lastChange := min(since(v.LastScaleOut), since(v.LastScaleIn))

	type load struct {
		role        string
		n           int
		least, most float64 // utilization over the recent rounds
		total       float64 // the newest round's total rate
		util        float64 // the newest round's utilization
	}
	var loads []load
	for _, role := range LogRoles {
		n := v.Counts[role]
		if n == 0 {
			continue // bypassed: nothing to size
		}
		l := load{role: role, n: n, least: math.Inf(1), most: math.Inf(-1)}
		complete := true
		for _, r := range recent {
			total, u, ok := utilization(r, role, n, c.Capacity[role])
			if !ok {
				complete = false // no capacity or CPU limit, or missing or stale: not acted on
				break
			}
			l.least, l.most, l.total, l.util = min(l.least, u), max(l.most, u), total, u
		}
		if complete {
			loads = append(loads, l)
		}
	}
	if len(loads) == 0 {
		return none("no role with a capacity or a CPU limit and complete metrics for %d periods", c.Periods)
	}
	// The count that brings the newest round's utilization to Target.
	want := func(l load) int {
		return int(math.Ceil(float64(l.n) * l.util / c.Target))
	}
	// Grow the most loaded role that stayed above High.
	out := slices.Clone(loads)
	slices.SortStableFunc(out, func(a, b load) int { return cmpFloat(b.least, a.least) })
	for _, l := range out {
		if l.least < c.High || l.n >= c.Max[l.role] {
			continue
		}
		if lastChange < time.Duration(c.ScaleOutCooldown) {
			return none("%s at %.0f%% of capacity, but the last change was %s ago (scale-out cooldown %s)", l.role, 100*l.least, lastChange.Round(time.Second), time.Duration(c.ScaleOutCooldown))
		}
		to := min(max(want(l), l.n+1), c.Max[l.role])
		return LogDecision{Role: l.role, From: l.n, To: to,
			Reason: fmt.Sprintf("%s at %.0f%% or more of capacity for %d periods (%.0f msgs/s over %d); %d would bring it to %.0f%% (max %d)", l.role, 100*l.least, c.Periods, l.total, l.n, want(l), 100*c.Target, c.Max[l.role])}
	}
	// Shrink the least loaded role that stayed below Low.
	in := slices.Clone(loads)
	slices.SortStableFunc(in, func(a, b load) int { return cmpFloat(a.most, b.most) })
	for _, l := range in {
		if l.most > c.Low || l.n <= c.Min[l.role] || l.n <= 1 {
			continue
		}
		if lastChange < time.Duration(c.ScaleInCooldown) {
			return none("%s at %.0f%% of capacity, but the last change was %s ago (scale-in cooldown %s)", l.role, 100*l.most, lastChange.Round(time.Second), time.Duration(c.ScaleInCooldown))
		}
		to := max(want(l), (l.n+1)/2, c.Min[l.role], 1)
		if to >= l.n {
			continue
		}
		return LogDecision{Role: l.role, From: l.n, To: to,
			Reason: fmt.Sprintf("%s at %.0f%% or less of capacity for %d periods (%.0f msgs/s over %d)", l.role, 100*l.most, c.Periods, l.total, l.n)}
	}
	return none("every role within %.0f%%-%.0f%% of capacity", 100*c.Low, 100*c.High)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

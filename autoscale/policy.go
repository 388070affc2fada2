// Package autoscale is tide's autoscaling controller: it reads every node's
// metrics, asks a policy what to do, and carries the answer out through a
// provisioner (autoscale/provision), one membership change at a time.
//
// Policies are pure functions of a View: the metrics history, the current
// instances and the time. They hold no state of their own, so they are
// tested by building Views, and the controller that feeds them is tested
// with a fake clock.
package autoscale

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"tide/autoscale/provision"
)

// Observation is one instance's metrics from one scrape.
type Observation struct {
	Time        time.Time `json:"time"`
	DiskUsed    float64   `json:"disk_used_bytes"`
	DiskCap     float64   `json:"disk_capacity_bytes"`
	DiskPercent float64   `json:"disk_used_percent"`
	// Ops is the instance's cumulative request count (files and KV);
	// OpsPerSec is its rate since the previous scrape (0 on the first).
	Ops       float64 `json:"ops_total"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// RingViews is how many ring views the node's KV layer keeps in
	// force (tide_kv_ring_views): above 1 while data still moves after a
	// membership change, 0 when the node does not say.
	RingViews float64 `json:"ring_views,omitempty"`
}

// Round is one evaluation period's observations, by instance ID. An
// instance that could not be scraped is absent.
type Round struct {
	Time time.Time              `json:"time"`
	Obs  map[string]Observation `json:"observations"`
}

// RingMember is one node of a ring as its /hash_ring reports it.
type RingMember struct {
	Token    uint32 `json:"token"`
	HTTPAddr string `json:"http_addr"`
}

// View is everything a policy may look at.
type View struct {
	Now       time.Time
	Instances []provision.Instance // what the provisioner runs
	History   []Round              // oldest first; the last is the newest
	Ring      []RingMember         // token order
	// LastScaleOut and LastScaleIn are when the last completed change of
	// each kind finished (zero: never).
	LastScaleOut, LastScaleIn time.Time
	// InFlight is set while a membership change is being carried out.
	InFlight bool
}

// Action is what a policy asks for.
type Action string

// Actions.
const (
	ActNone     Action = "none"
	ActScaleOut Action = "scale_out"
	ActScaleIn  Action = "scale_in"
)

// Decision is a policy's answer, with its reason.
type Decision struct {
	Action Action `json:"action"`
	Reason string `json:"reason"`
	// Scale out: the token for the new node (decimal; empty lets the node
	// choose) and the instance whose range it relieves.
	Token   string `json:"token,omitempty"`
	Relieve string `json:"relieve,omitempty"`
	// Scale in: the instance to drain and then terminate.
	Victim string `json:"victim,omitempty"`
}

// Policy decides for one system.
type Policy interface {
	// System names the system the policy scales ("store").
	System() string
	Decide(v View) Decision
}

// StoreConfig is the store policy's settings. Zero fields take the
// defaults documented on each.
type StoreConfig struct {
	// Min and Max bound the number of nodes. Defaults 3 and 16.
	Min int `yaml:"min"`
	Max int `yaml:"max"`
	// High: scale out when any node's disk use is at or above this
	// percentage for Periods consecutive periods. Default 70.
	High float64 `yaml:"high"`
	// Low: scale in when every node is below this percentage for Periods
	// consecutive periods. Default 30.
	Low float64 `yaml:"low"`
	// Periods is K, the consecutive periods a threshold must hold. Default 3.
	Periods int `yaml:"periods"`
	// OpsHigh: scale out when any node serves at least this many requests
	// per second for Periods periods. 0 (default) turns it off.
	OpsHigh float64 `yaml:"ops_high"`
	// OpsLow: scale in only when every node serves fewer requests per
	// second than this. Default OpsHigh/4.
	OpsLow float64 `yaml:"ops_low"`
	// ScaleOutCooldown is the least time after any change before a scale
	// out. Default 10s.
	ScaleOutCooldown Duration `yaml:"scale_out_cooldown"`
	// ScaleInCooldown is the least time after any change before a scale
	// in. Default 60s.
	ScaleInCooldown Duration `yaml:"scale_in_cooldown"`
}

// Duration is a time.Duration that YAML reads as "30s".
type Duration time.Duration

// UnmarshalText parses a duration such as "30s" or "2m".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as "30s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// WithDefaults fills zero fields.
func (c StoreConfig) WithDefaults() StoreConfig {
	if c.Min == 0 {
		c.Min = 3
	}
	if c.Max == 0 {
		c.Max = 16
	}
	if c.High == 0 {
		c.High = 70
	}
	if c.Low == 0 {
		c.Low = 30
	}
	if c.Periods == 0 {
		c.Periods = 3
	}
	if c.OpsLow == 0 {
		c.OpsLow = c.OpsHigh / 4
	}
	if c.ScaleOutCooldown == 0 {
		c.ScaleOutCooldown = Duration(10 * time.Second)
	}
	if c.ScaleInCooldown == 0 {
		c.ScaleInCooldown = Duration(60 * time.Second)
	}
	return c
}

// Validate reports settings that cannot work.
func (c StoreConfig) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Min < 1:
		return fmt.Errorf("store.min %d: need at least 1", c.Min)
	case c.Max < c.Min:
		return fmt.Errorf("store.max %d is below store.min %d", c.Max, c.Min)
	case c.High <= 0 || c.High > 100:
		return fmt.Errorf("store.high %v: want a percentage in (0, 100]", c.High)
	case c.Low < 0 || c.Low >= c.High:
		return fmt.Errorf("store.low %v must be below store.high %v (the gap is the hysteresis)", c.Low, c.High)
	case c.Periods < 1:
		return fmt.Errorf("store.periods %d: need at least 1", c.Periods)
	case c.OpsHigh < 0 || c.OpsLow < 0 || (c.OpsHigh > 0 && c.OpsLow >= c.OpsHigh):
		return fmt.Errorf("store.ops_low %v must be below store.ops_high %v", c.OpsLow, c.OpsHigh)
	}
	return nil
}

// StorePolicy scales the storage ring on disk use and request rate.
type StorePolicy struct {
	Cfg StoreConfig
	// StaleAfter: an observation older than this is not acted on.
	StaleAfter time.Duration
}

// System implements Policy.
func (p StorePolicy) System() string { return "store" }

// Decide implements Policy.
func (p StorePolicy) Decide(v View) Decision {
	c := p.Cfg.WithDefaults()
	none := func(format string, a ...any) Decision {
		return Decision{Action: ActNone, Reason: fmt.Sprintf(format, a...)}
	}
	if v.InFlight {
		return none("a membership change is in flight")
	}
	var live []provision.Instance
	for _, in := range v.Instances {
		if in.State == provision.StateRunning || in.State == provision.StatePending {
			live = append(live, in)
		}
	}
	n := len(live)
	if n < c.Min {
		return Decision{Action: ActScaleOut, Reason: fmt.Sprintf("%d nodes, below min %d", n, c.Min)}
	}
	// Every running instance must have a fresh observation in the newest
	// round: no decision on stale data.
	if len(v.History) == 0 {
		return none("no metrics yet")
	}
	last := v.History[len(v.History)-1]
	for _, in := range live {
		if in.State != provision.StateRunning {
			return none("%s is still starting", in.ID)
		}
		o, ok := last.Obs[in.ID]
		if !ok {
			return none("no metrics from %s: not acting on stale data", in.ID)
		}
		if age := v.Now.Sub(o.Time); p.StaleAfter > 0 && age > p.StaleAfter {
			return none("metrics from %s are %s old (limit %s): not acting on stale data", in.ID, age.Round(time.Millisecond), p.StaleAfter)
		}
	}
	// Only periods observed after the last change count: the ring needs
	// time to move data after a change, and the same condition must not
	// trigger twice.
	changed := v.LastScaleOut
	if v.LastScaleIn.After(changed) {
		changed = v.LastScaleIn
	}
	fresh := 0
	for i := len(v.History) - 1; i >= 0 && v.History[i].Time.After(changed); i-- {
		fresh++
	}
	if fresh < c.Periods {
		if !changed.IsZero() && fresh < len(v.History) {
			return none("%d of %d periods observed since the last change", fresh, c.Periods)
		}
		return none("%d of %d periods observed", fresh, c.Periods)
	}
	recent := v.History[len(v.History)-c.Periods:]
	since := func(t time.Time) time.Duration {
		if t.IsZero() {
			return time.Duration(math.MaxInt64)
		}
		return v.Now.Sub(t)
	}
	lastChange := min(since(v.LastScaleOut), since(v.LastScaleIn))

	// held reports the instances for which cond held in each recent round.
	held := func(cond func(Observation) bool) []string {
		var ids []string
		for _, in := range live {
			all := true
			for _, r := range recent {
				o, ok := r.Obs[in.ID]
				if !ok || !cond(o) {
					all = false
					break
				}
			}
			if all {
				ids = append(ids, in.ID)
			}
		}
		return ids
	}
	cur := func(id string) Observation { return last.Obs[id] }

	full := held(func(o Observation) bool { return o.DiskPercent >= c.High })
	busy := []string(nil)
	if c.OpsHigh > 0 {
		busy = held(func(o Observation) bool { return o.OpsPerSec >= c.OpsHigh })
	}
	if len(full) > 0 || len(busy) > 0 {
		var target, why string
		if len(full) > 0 {
			sort.Slice(full, func(i, j int) bool { return cur(full[i]).DiskPercent > cur(full[j]).DiskPercent })
			target = full[0]
			why = fmt.Sprintf("%s disk %.1f%% >= %.0f%% for %d periods", target, cur(target).DiskPercent, c.High, c.Periods)
		} else {
			sort.Slice(busy, func(i, j int) bool { return cur(busy[i]).OpsPerSec > cur(busy[j]).OpsPerSec })
			target = busy[0]
			why = fmt.Sprintf("%s serves %.0f ops/s >= %.0f for %d periods", target, cur(target).OpsPerSec, c.OpsHigh, c.Periods)
		}
		if n >= c.Max {
			return none("%s, but already at max %d nodes", why, c.Max)
		}
		if d := time.Duration(c.ScaleOutCooldown); lastChange < d {
			return none("%s, but in scale-out cooldown (%s of %s)", why, lastChange.Round(time.Millisecond), d)
		}
		d := Decision{Action: ActScaleOut, Reason: why, Relieve: target}
		if tok, ok := halveRange(v.Ring, instanceAddr(live, target)); ok {
			d.Token = fmt.Sprint(tok)
			d.Reason += fmt.Sprintf("; new token %d halves its range", tok)
		}
		return d
	}

	idle := held(func(o Observation) bool {
		return o.DiskPercent < c.Low && (c.OpsHigh == 0 || o.OpsPerSec < c.OpsLow)
	})
	if len(idle) == n && n > c.Min {
		why := fmt.Sprintf("every node below %.0f%% disk for %d periods", c.Low, c.Periods)
		if c.OpsHigh > 0 {
			why += fmt.Sprintf(" and %.0f ops/s", c.OpsLow)
		}
		if d := time.Duration(c.ScaleInCooldown); lastChange < d {
			return none("%s, but in scale-in cooldown (%s of %s)", why, lastChange.Round(time.Millisecond), d)
		}
		// A ring still in transition (a join, a leave, or a node that
		// crashed: older views stay in force until every member has
		// settled) counts on every replica of the views in force: a
		// drain now, whose node acknowledges no writes while it hands
		// off, can leave a key without a quorum in one of them.
		for _, in := range live {
			if v := cur(in.ID).RingViews; v > 1 {
				return none("%s, but %s still keeps %.0f ring views in force (data still moving after a membership change): no scale in until they retire", why, in.ID, v)
			}
		}
		// Hysteresis: the data of the ring must fit on one node fewer
		// without crossing the midpoint between low and high, or the
		// removal would cause the next scale out.
		var used, capacity float64
		for _, in := range live {
			used += cur(in.ID).DiskUsed
			capacity += cur(in.ID).DiskCap
		}
		if capacity > 0 {
			after := 100 * used / (capacity * float64(n-1) / float64(n))
			if mid := (c.Low + c.High) / 2; after >= mid {
				return none("%s, but without one node the ring would be %.1f%% full (>= %.0f%%)", why, after, mid)
			}
		}
		victim := leastLoaded(live, cur)
		return Decision{Action: ActScaleIn, Victim: victim,
			Reason: fmt.Sprintf("%s; draining the least loaded, %s (%.1f%%)", why, victim, cur(victim).DiskPercent)}
	}
	var hi Observation
	for _, in := range live {
		if o := cur(in.ID); o.DiskPercent >= hi.DiskPercent {
			hi = o
		}
	}
	if len(idle) == n {
		// Every node is below the low mark: only the minimum keeps them.
		return none("%d nodes, fullest at %.1f%%, below %.0f%%, but already at min %d nodes", n, hi.DiskPercent, c.Low, c.Min)
	}
	return none("%d nodes, fullest at %.1f%%, within [%.0f%%, %.0f%%)", n, hi.DiskPercent, c.Low, c.High)
}

func leastLoaded(live []provision.Instance, cur func(string) Observation) string {
	ids := make([]string, 0, len(live))
	for _, in := range live {
		ids = append(ids, in.ID)
	}
	// Ties break toward the newest-named instance, so a scale in undoes
	// the last scale out when loads are equal.
	slices.SortFunc(ids, func(a, b string) int {
		oa, ob := cur(a), cur(b)
		if oa.DiskUsed != ob.DiskUsed {
			if oa.DiskUsed < ob.DiskUsed {
				return -1
			}
			return 1
		}
		if oa.OpsPerSec != ob.OpsPerSec {
			if oa.OpsPerSec < ob.OpsPerSec {
				return -1
			}
			return 1
		}
		return -strings.Compare(a, b)
	})
	return ids[0]
}

func instanceAddr(live []provision.Instance, id string) string {
	for _, in := range live {
		if in.ID == id {
			return in.HTTPAddr
		}
	}
	return ""
}

// halveRange returns the token halfway through the range the node at
// httpAddr owns: (predecessor's token, its token].
func halveRange(ring []RingMember, httpAddr string) (uint32, bool) {
	if len(ring) < 1 || httpAddr == "" {
		return 0, false
	}
	for i, m := range ring {
		if m.HTTPAddr != httpAddr {
			continue
		}
		pred := ring[(i+len(ring)-1)%len(ring)].Token
		width := uint64(m.Token - pred) // wraps
		if len(ring) == 1 {
			width = 1 << 32
		}
		if width < 2 {
			return 0, false
		}
		return pred + uint32(width/2), true
	}
	return 0, false
}

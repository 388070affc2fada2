package autoscale

import (
	"strings"
	"testing"
	"time"
)

// logView builds a view of `periods` rounds ending at now, in which each
// role's instances each receive the given rate.
func logView(now time.Time, counts map[string]int, perInstance map[string]float64, periods int) LogView {
	v := LogView{Now: now, Counts: counts}
	for i := periods; i >= 1; i-- {
		r := LogRound{Time: now.Add(-time.Duration(i-1) * 10 * time.Second), Rates: map[string][]float64{}}
		for role, n := range counts {
			rates := make([]float64, n)
			for j := range rates {
				rates[j] = perInstance[role]
			}
			r.Rates[role] = rates
		}
		v.History = append(v.History, r)
	}
	return v
}

var testCapacity = map[string]float64{"batchers": 100000, "proxy-leaders": 50000, "acceptor-groups": 40000, "replicas": 80000, "unbatchers": 100000}

func baseCounts() map[string]int {
	return map[string]int{"batchers": 1, "proxy-leaders": 2, "acceptor-groups": 1, "replicas": 2, "unbatchers": 1}
}

// A saturated role grows to the count that brings it to the target while
// an idle one is left alone (it is at its minimum).
func TestLogPolicySaturatedRoleGrows(t *testing.T) {
	p := LogPolicy{Cfg: LogConfig{Capacity: testCapacity}}
	rates := map[string]float64{"batchers": 20000, "proxy-leaders": 45000, "acceptor-groups": 10000, "replicas": 20000, "unbatchers": 10000}
	d := p.Decide(logView(t0, baseCounts(), rates, 3))
	// 2 proxy leaders at 45k of 50k (90%): 90k / (50k * 0.6) = 3.
	if d.Role != "proxy-leaders" || d.From != 2 || d.To != 3 {
		t.Fatalf("decision %+v, want proxy-leaders 2 -> 3", d)
	}
}

// Of two saturated roles the more loaded goes first.
func TestLogPolicyMostLoadedFirst(t *testing.T) {
	p := LogPolicy{Cfg: LogConfig{Capacity: testCapacity}}
	rates := map[string]float64{"proxy-leaders": 42000, "acceptor-groups": 39000, "replicas": 10000}
	d := p.Decide(logView(t0, baseCounts(), rates, 3))
	if d.Role != "acceptor-groups" || d.To != 2 {
		t.Fatalf("decision %+v, want acceptor-groups (97%%) before proxy-leaders (84%%)", d)
	}
}

// Hysteresis: a role between Low and High stays; a spike in one period
// of K does not count.
func TestLogPolicyHysteresis(t *testing.T) {
	p := LogPolicy{Cfg: LogConfig{Capacity: testCapacity}}
	v := logView(t0, baseCounts(), map[string]float64{"proxy-leaders": 30000, "replicas": 40000}, 3)
	if d := p.Decide(v); d.Role != "" {
		t.Fatalf("decision %+v at 60%% and 50%%, want none", d)
	}
	v.History[1].Rates["proxy-leaders"] = []float64{49000, 49000}
	if d := p.Decide(v); d.Role != "" {
		t.Fatalf("decision %+v after a one-period spike, want none", d)
	}
}

// Cooldowns hold changes back, and only periods observed after the last
// change count.
func TestLogPolicyCooldownsAndFreshPeriods(t *testing.T) {
	p := LogPolicy{Cfg: LogConfig{Capacity: testCapacity}}
	v := logView(t0, baseCounts(), map[string]float64{"proxy-leaders": 48000, "replicas": 20000}, 3)
	v.LastScaleOut = t0.Add(-15 * time.Second) // after the first of the three rounds
	if d := p.Decide(v); d.Role != "" || !strings.Contains(d.Reason, "periods observed since the last change") {
		t.Fatalf("decision %+v, want none for want of fresh periods", d)
	}
	v.LastScaleOut = t0.Add(-25 * time.Hour)
	v.LastScaleIn = t0.Add(-5 * time.Second)
	v.History = v.History[:0]
	for i := 3; i >= 1; i-- {
		v.History = append(v.History, LogRound{Time: t0.Add(-time.Duration(i) * time.Second), Rates: map[string][]float64{"proxy-leaders": {48000, 48000}}})
	}
	if d := p.Decide(v); d.Role != "" || !strings.Contains(d.Reason, "cooldown") {
		t.Fatalf("decision %+v 5s after a change, want none (cooldown)", d)
	}
	v.Now = t0.Add(10 * time.Second)
	if d := p.Decide(v); d.Role != "proxy-leaders" {
		t.Fatalf("decision %+v after the cooldown, want proxy-leaders", d)
	}
}

// A role that stays idle shrinks, by at most half, never below its
// minimum, and only after the scale-in cooldown.
func TestLogPolicyShrinks(t *testing.T) {
	p := LogPolicy{Cfg: LogConfig{Capacity: testCapacity}}
	counts := baseCounts()
	counts["proxy-leaders"] = 8
	v := logView(t0, counts, map[string]float64{"proxy-leaders": 1000, "replicas": 20000, "acceptor-groups": 20000}, 3)
	v.LastScaleOut = t0.Add(-30 * time.Second)
	v.History[0].Time = t0.Add(-20 * time.Second)
	if d := p.Decide(v); d.Role != "" || !strings.Contains(d.Reason, "scale-in cooldown") {
		t.Fatalf("decision %+v 30s after a change, want none (scale-in cooldown)", d)
	}
	v.LastScaleOut = time.Time{}
	d := p.Decide(v)
	if d.Role != "proxy-leaders" || d.From != 8 || d.To != 4 {
		t.Fatalf("decision %+v, want proxy-leaders 8 -> 4 (at most half)", d)
	}
	counts["proxy-leaders"] = 1
	v = logView(t0, counts, map[string]float64{"proxy-leaders": 10, "replicas": 20000, "acceptor-groups": 20000}, 3)
	if d := p.Decide(v); d.Role == "proxy-leaders" {
		t.Fatalf("decision %+v below the minimum", d)
	}
}

// No decision on missing or stale metrics, or while a change is in flight;
// a role below its minimum is restored first.
func TestLogPolicyGuards(t *testing.T) {
	p := LogPolicy{Cfg: LogConfig{Capacity: testCapacity}}
	v := logView(t0, baseCounts(), map[string]float64{"proxy-leaders": 49000}, 3)
	v.InFlight = true
	if d := p.Decide(v); d.Role != "" {
		t.Fatalf("decision %+v while in flight", d)
	}
	v.InFlight = false
	v.History[2].Rates["proxy-leaders"] = []float64{49000} // one of two proxy leaders not scraped
	if d := p.Decide(v); d.Role == "proxy-leaders" {
		t.Fatalf("decision %+v on incomplete metrics", d)
	}
	counts := baseCounts()
	counts["replicas"] = 1
	if d := p.Decide(logView(t0, counts, nil, 0)); d.Role != "replicas" || d.To != 2 {
		t.Fatalf("decision %+v with 1 replica, want replicas -> 2 (the minimum)", d)
	}
	if d := (LogPolicy{}).Decide(logView(t0, baseCounts(), map[string]float64{"proxy-leaders": 1e9}, 3)); d.Role != "" {
		t.Fatalf("decision %+v without capacities", d)
	}
}

func TestLogConfigValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  LogConfig
		want string
	}{
		{LogConfig{}, ""},
		{LogConfig{Capacity: testCapacity}, ""},
		{LogConfig{Target: 0.9, High: 0.8}, "log.high"},
		{LogConfig{Low: 0.7}, "log.low"},
		{LogConfig{Capacity: map[string]float64{"leaders": 5}}, "unknown role"},
		{LogConfig{Capacity: map[string]float64{"replicas": -1}}, "positive"},
		{LogConfig{Min: map[string]int{"proxy-leaders": 0}}, "need at least 1"},
		{LogConfig{Min: map[string]int{"batchers": 5}, Max: map[string]int{"batchers": 2}}, "below"},
	} {
		err := c.cfg.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestLogConfigNeeded(t *testing.T) {
	c := LogConfig{Capacity: map[string]float64{"proxy-leaders": 1000}}
	for _, tc := range []struct {
		rate float64
		want int
	}{{0, 1}, {600, 1}, {601, 2}, {3000, 5}, {1e9, 16}} {
		if got := c.Needed("proxy-leaders", tc.rate); got != tc.want {
			t.Errorf("Needed(proxy-leaders, %v) = %d, want %d", tc.rate, got, tc.want)
		}
	}
	if got := c.Needed("replicas", 100); got != -1 {
		t.Errorf("Needed of a role without capacity = %d, want -1", got)
	}
}

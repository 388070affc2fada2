package autoscale

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"tide/autoscale/provision"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func running(n int) []provision.Instance {
	var out []provision.Instance
	for i := range n {
		out = append(out, provision.Instance{ID: fmt.Sprintf("node%d", i+1), HTTPAddr: fmt.Sprintf("10.0.0.%d:5058", i+1), State: provision.StateRunning})
	}
	return out
}

// rounds builds k rounds, one second apart ending at now, in which node i
// has disk percentage pct[i] (of 100 bytes capacity).
func rounds(k int, now time.Time, pct ...float64) []Round {
	var out []Round
	for r := range k {
		at := now.Add(time.Duration(r-k+1) * time.Second)
		obs := map[string]Observation{}
		for i, p := range pct {
			obs[fmt.Sprintf("node%d", i+1)] = Observation{Time: at, DiskPercent: p, DiskUsed: p, DiskCap: 100}
		}
		out = append(out, Round{Time: at, Obs: obs})
	}
	return out
}

// withViews sets node id's ring views in the last round.
func withViews(rs []Round, id string, views float64) []Round {
	o := rs[len(rs)-1].Obs[id]
	o.RingViews = views
	rs[len(rs)-1].Obs[id] = o
	return rs
}

func ring(ins []provision.Instance, tokens ...uint32) []RingMember {
	var out []RingMember
	for i, t := range tokens {
		out = append(out, RingMember{Token: t, HTTPAddr: ins[i].HTTPAddr})
	}
	return out
}

func TestStorePolicy(t *testing.T) {
	p := StorePolicy{StaleAfter: 5 * time.Second}
	ins := running(3)
	long := t0.Add(-time.Hour)
	cases := []struct {
		name   string
		v      View
		action Action
		want   string // a piece of the reason, or the victim/token
	}{
		{"below min scales out", View{Now: t0, Instances: running(2)}, ActScaleOut, "below min"},
		{"no metrics", View{Now: t0, Instances: ins}, ActNone, "no metrics"},
		{"one node missing from the last round", View{Now: t0, Instances: ins, History: rounds(3, t0, 90, 90)}, ActNone, "stale"},
		{"stale observations", View{Now: t0.Add(time.Minute), Instances: ins, History: rounds(3, t0, 90, 90, 90)}, ActNone, "stale"},
		{"full for fewer than K periods", View{Now: t0, Instances: ins, History: append(rounds(2, t0.Add(-2*time.Second), 10, 10, 10), rounds(2, t0, 10, 80, 10)...)}, ActNone, "within"},
		{"full for K periods", View{Now: t0, Instances: ins, History: rounds(3, t0, 10, 80, 75), Ring: ring(ins, 1000, 2000, 4000)}, ActScaleOut, "node2 disk 80.0%"},
		{"full at max", View{Now: t0, Instances: running(16), History: rounds(3, t0, 80, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)}, ActNone, "max"},
		{"full in cooldown", View{Now: t0, Instances: ins, History: rounds(3, t0, 80, 80, 80), LastScaleOut: t0.Add(-3 * time.Second)}, ActNone, "cooldown"},
		{"full after cooldown", View{Now: t0, Instances: ins, History: rounds(3, t0, 80, 80, 80), LastScaleOut: t0.Add(-time.Minute)}, ActScaleOut, "disk"},
		{"in flight", View{Now: t0, Instances: ins, History: rounds(3, t0, 80, 80, 80), InFlight: true}, ActNone, "in flight"},
		{"empty at min", View{Now: t0, Instances: ins, History: rounds(3, t0, 1, 1, 1)}, ActNone, "below 30%, but already at min 3 nodes"},
		{"empty above min", View{Now: t0, Instances: running(4), History: rounds(3, t0, 5, 2, 9, 4), LastScaleOut: long}, ActScaleIn, "node2"},
		{"empty but in scale-in cooldown", View{Now: t0, Instances: running(4), History: rounds(3, t0, 5, 2, 9, 4), LastScaleOut: t0.Add(-10 * time.Second)}, ActNone, "cooldown"},
		{"one node above low blocks scale in", View{Now: t0, Instances: running(4), History: rounds(3, t0, 5, 5, 35, 5), LastScaleOut: long}, ActNone, "within"},
		{"a ring in transition blocks scale in", View{Now: t0, Instances: running(4), History: withViews(rounds(3, t0, 5, 2, 9, 4), "node3", 2), LastScaleOut: long}, ActNone, "node3 still keeps 2 ring views"},
		{"pending instance blocks decisions", View{Now: t0, Instances: append(running(3), provision.Instance{ID: "node4", State: provision.StatePending}), History: rounds(3, t0, 80, 80, 80)}, ActNone, "starting"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := p.Decide(c.v)
			if d.Action != c.action {
				t.Fatalf("action %s (%s), want %s", d.Action, d.Reason, c.action)
			}
			if !strings.Contains(d.Reason+" "+d.Victim, c.want) {
				t.Fatalf("reason %q / victim %q lacks %q", d.Reason, d.Victim, c.want)
			}
		})
	}
}

// Removing a node must not push the rest past the midpoint of low and
// high, or the removal would cause the next scale out.
// Periods observed before the last change do not count toward K.
func TestPolicyCountsPeriodsSinceLastChange(t *testing.T) {
	p := StorePolicy{Cfg: StoreConfig{ScaleOutCooldown: Duration(time.Second)}}
	v := View{Now: t0, Instances: running(3), History: rounds(3, t0, 80, 80, 80), LastScaleOut: t0.Add(-1500 * time.Millisecond)}
	if d := p.Decide(v); d.Action != ActNone || !strings.Contains(d.Reason, "2 of 3 periods observed since the last change") {
		t.Fatalf("decision %+v: want none, 2 fresh periods", d)
	}
	v.History = rounds(4, t0.Add(time.Second), 80, 80, 80)
	v.Now = t0.Add(time.Second)
	if d := p.Decide(v); d.Action != ActScaleOut {
		t.Fatalf("decision %+v: want scale out after 3 fresh periods", d)
	}
}

func TestScaleInHysteresis(t *testing.T) {
	p := StorePolicy{Cfg: StoreConfig{Min: 1}}
	d := p.Decide(View{Now: t0, Instances: running(2), History: rounds(3, t0, 29, 29), LastScaleOut: t0.Add(-time.Hour)})
	if d.Action != ActNone || !strings.Contains(d.Reason, "would be 58.0%") {
		t.Fatalf("decision %+v: want none, the ring would be 58%% full", d)
	}
	d = p.Decide(View{Now: t0, Instances: running(2), History: rounds(3, t0, 20, 20), LastScaleOut: t0.Add(-time.Hour)})
	if d.Action != ActScaleIn {
		t.Fatalf("decision %+v: want scale in at 20%% each (40%% after)", d)
	}
}

func TestScaleOutTokenHalvesFullestRange(t *testing.T) {
	ins := running(3)
	d := StorePolicy{}.Decide(View{Now: t0, Instances: ins, History: rounds(3, t0, 10, 95, 75), Ring: ring(ins, 1000, 3000, 4000)})
	if d.Action != ActScaleOut || d.Relieve != "node2" {
		t.Fatalf("decision %+v: want scale out relieving node2", d)
	}
	// node2 owns (1000, 3000]; halfway is 2000.
	if d.Token != "2000" {
		t.Fatalf("token %q, want 2000", d.Token)
	}
	// The first node's range wraps around zero: (4000, 1000].
	d = StorePolicy{}.Decide(View{Now: t0, Instances: ins, History: rounds(3, t0, 95, 10, 10), Ring: ring(ins, 1000, 3000, 4000)})
	want := uint32(4000) + uint32((uint64(1000-4000+(1<<32)))/2)
	if d.Token != fmt.Sprint(want) {
		t.Fatalf("wrapping range: token %q, want %d", d.Token, want)
	}
}

func TestOpsPolicy(t *testing.T) {
	ins := running(3)
	p := StorePolicy{Cfg: StoreConfig{OpsHigh: 1000}}
	h := rounds(3, t0, 10, 10, 10)
	for _, r := range h {
		o := r.Obs["node3"]
		o.OpsPerSec = 5000
		r.Obs["node3"] = o
	}
	d := p.Decide(View{Now: t0, Instances: ins, History: h, Ring: ring(ins, 10, 20, 30)})
	if d.Action != ActScaleOut || d.Relieve != "node3" || !strings.Contains(d.Reason, "ops/s") {
		t.Fatalf("decision %+v: want scale out for node3's ops", d)
	}
	// Busy nodes do not scale in even when disks are empty.
	h = rounds(3, t0, 1, 1, 1, 1)
	for _, r := range h {
		o := r.Obs["node1"]
		o.OpsPerSec = 600 // above ops_low = 250
		r.Obs["node1"] = o
	}
	d = p.Decide(View{Now: t0, Instances: running(4), History: h, LastScaleOut: t0.Add(-time.Hour)})
	if d.Action != ActNone {
		t.Fatalf("decision %+v: a busy ring must not scale in", d)
	}
}

func TestStoreConfigValidate(t *testing.T) {
	for _, c := range []StoreConfig{{Min: 5, Max: 2}, {High: 40, Low: 50}, {High: 140}, {OpsHigh: 10, OpsLow: 20}, {Periods: -1}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v validated", c)
		}
	}
	if err := (StoreConfig{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestDefaultConfigIsTheDefault(t *testing.T) {
	path := filepath.Join(t.TempDir(), "autoscale.yaml")
	if err := os.WriteFile(path, []byte(DefaultConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := LoadConfig("")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DefaultConfig reads as\n%+v\nbut the defaults are\n%+v", got, want)
	}
	os.WriteFile(path, []byte("store:\n  hihg: 50\n"), 0o644)
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "hihg") {
		t.Fatalf("a misspelt key: %v", err)
	}
	os.WriteFile(path, []byte("store:\n  high: 20\n  low: 30\n"), 0o644)
	if _, err := LoadConfig(path); err == nil {
		t.Fatal("low above high was accepted")
	}
}

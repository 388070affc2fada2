package main

import (
	"strings"
	"testing"
	"time"

	"tide/autoscale"
	"tide/autoscale/provision"
)

// TestFormatStatus checks that the controller's status reads as text:
// events that never happened say "never", not a zero time, and each
// instance shows its last metrics.
func TestFormatStatus(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	st := autoscale.Status{System: "store", Provision: "local", Leader: true,
		Instances: []provision.Instance{{ID: "node1", State: "running", HTTPAddr: "127.0.0.1:5058", Started: now.Add(-time.Minute)}},
		Ring:      []autoscale.RingMember{{Token: 1}},
		LastOut:   now.Add(-90 * time.Second),
		Last:      &autoscale.Round{Obs: map[string]autoscale.Observation{"node1": {DiskPercent: 42.5, OpsPerSec: 12}}}}
	out := formatStatus(st, now)
	for _, want := range []string{"leader", "last scale-in: never", "(1m30s ago)", "node1", "42.5%", "ring members: 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "0001") {
		t.Errorf("status shows a zero time:\n%s", out)
	}
}

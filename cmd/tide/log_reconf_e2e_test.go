package main

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"
)

// TestLogReconfiguresUnderLoad runs the log as real processes under a
// client load and changes every compartment while it runs: proxy leaders,
// batchers, unbatchers, replicas and leaders grow and shrink (the leaving
// ones drain first), every acceptor of the group is replaced one by one,
// then a second group is added and the first removed. Every client
// history must be linearizable, so no acknowledged command was lost or
// applied twice.
func TestLogReconfiguresUnderLoad(t *testing.T) {
	d, _, ctl := startTestLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ld := startLoad(t, d, 4)
	ld.waitProgress("initial load", 100)
	var out bytes.Buffer
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, out.String())
		}
		ld.waitProgress("progress after "+what, 50)
		t.Logf("%s: done, %d operations so far", what, ld.completed.Load())
	}
	for _, sc := range []struct {
		role string
		n    int
	}{
		{"proxy-leaders", 4}, {"proxy-leaders", 1}, {"batchers", 3}, {"batchers", 1},
		{"unbatchers", 2}, {"unbatchers", 0}, {"replicas", 3}, {"replicas", 2}, {"leaders", 3}, {"leaders", 2},
	} {
		step("scale "+sc.role, ctl.Scale(ctx, sc.role, sc.n, &out))
	}
	// Remove the active leader: it hands leadership to one that stays.
	active := activeLeader(t, d)
	cur, err := ctl.Current()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cur.Log.Leaders, active) {
		active = activeLeader(t, cur)
	}
	step("remove the active leader "+active, ctl.Remove(ctx, active, &out))
	if cur, err = ctl.Current(); err != nil {
		t.Fatal(err)
	}
	if now := activeLeader(t, cur); now == active {
		t.Fatalf("%s still active after its removal", active)
	}
	for _, a := range slices.Clone(cur.Log.Groups[0].Acceptors) {
		step("replace acceptor "+a, ctl.Replace(ctx, a, &out))
	}
	step("add a second acceptor group", ctl.Scale(ctx, "acceptor-groups", 2, &out))
	step("remove the first acceptor group", ctl.RemoveGroup(ctx, 0, &out))
	ld.check()
	final, err := ctl.Current()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cur.Log.Groups[0].Acceptors {
		if final.Log.Has(a) {
			t.Errorf("acceptor %s still in epoch %d", a, final.Log.Epoch)
		}
	}
	t.Logf("final epoch %d:\n%s", final.Log.Epoch, out.String())
}

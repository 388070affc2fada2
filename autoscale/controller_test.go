package autoscale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"tide/autoscale/provision"
)

// fakeProv is an in-memory provisioner for the controller's logic.
type fakeProv struct {
	mu         sync.Mutex
	ins        []provision.Instance
	failLaunch int // fail this many launches
	launches   int
	drained    []string
	terminated []string
	drainGate  chan struct{} // if set, Drain waits for it
	exitAfter  bool          // launched instances exit at once
	onLaunch   func()        // if set, runs inside Launch
}

func (f *fakeProv) Name() string { return "fake" }

func (f *fakeProv) Launch(ctx context.Context, s provision.Spec) (provision.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.launches++
	if f.onLaunch != nil {
		f.onLaunch()
	}
	if f.failLaunch > 0 {
		f.failLaunch--
		return provision.Instance{}, errors.New("no capacity in zone")
	}
	in := provision.Instance{ID: fmt.Sprintf("node%d", len(f.ins)+1), HTTPAddr: "127.0.0.1:1", State: provision.StateRunning, Started: time.Now()}
	f.ins = append(f.ins, in)
	if f.exitAfter {
		f.ins[len(f.ins)-1].State = provision.StateTerminated
	}
	return in, nil
}

func (f *fakeProv) Drain(ctx context.Context, in provision.Instance) error {
	if f.drainGate != nil {
		select {
		case <-f.drainGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drained = append(f.drained, in.ID)
	return nil
}

func (f *fakeProv) Terminate(ctx context.Context, in provision.Instance) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.terminated = append(f.terminated, in.ID)
	for i := range f.ins {
		if f.ins[i].ID == in.ID {
			f.ins = append(f.ins[:i], f.ins[i+1:]...)
			break
		}
	}
	return nil
}

func (f *fakeProv) List(ctx context.Context) ([]provision.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]provision.Instance(nil), f.ins...), nil
}

// fakeSource reports a disk percentage per instance; an instance without
// one is not reported (its metrics stopped arriving).
type fakeSource struct {
	mu  sync.Mutex
	pct map[string]float64
}

func (s *fakeSource) set(id string, p float64) {
	s.mu.Lock()
	s.pct[id] = p
	s.mu.Unlock()
}

func (s *fakeSource) drop(id string) {
	s.mu.Lock()
	delete(s.pct, id)
	s.mu.Unlock()
}

func (s *fakeSource) Collect(ctx context.Context, ins []provision.Instance) map[string]Observation {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]Observation{}
	for _, in := range ins {
		if p, ok := s.pct[in.ID]; ok {
			out[in.ID] = Observation{Time: time.Now(), DiskPercent: p, DiskUsed: p, DiskCap: 100}
		}
	}
	return out
}

func newTestController(t *testing.T, prov *fakeProv, src *fakeSource, cfg StoreConfig) *Controller {
	t.Helper()
	c := &Controller{Policy: StorePolicy{Cfg: cfg, StaleAfter: 3 * time.Second}, Prov: prov, Source: src,
		Log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Ready: func(context.Context, provision.Instance, int) error { return nil }}
	if err := c.Init(); err != nil {
		t.Fatal(err)
	}
	return c
}

func events(c *Controller, action Action, outcome string) []Event {
	var out []Event
	for _, ev := range c.Events.Since(0) {
		if ev.Action == action && ev.Outcome == outcome {
			out = append(out, ev)
		}
	}
	return out
}

// Metrics that stop arriving stop decisions: a node that was full is not
// acted on once its observations are stale.
func TestControllerIgnoresStaleMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		prov := &fakeProv{}
		for range 3 {
			prov.Launch(t.Context(), provision.Spec{})
		}
		src := &fakeSource{pct: map[string]float64{"node1": 10, "node2": 90, "node3": 10}}
		c := newTestController(t, prov, src, StoreConfig{Periods: 3})
		ctx := t.Context()
		c.Step(ctx)
		time.Sleep(time.Second)
		src.drop("node2") // node2's metrics stop arriving
		for range 10 {
			c.Step(ctx)
			time.Sleep(time.Second)
		}
		synctest.Wait()
		if n := len(events(c, ActScaleOut, "started")); n != 0 {
			t.Fatalf("%d scale outs on stale metrics", n)
		}
		var stale bool
		for _, ev := range events(c, ActNone, "decided") {
			stale = stale || strings.Contains(ev.Reason, "no metrics from node2")
		}
		if !stale {
			t.Fatalf("no event says node2's metrics are missing: %+v", c.Events.Since(0))
		}
		// Once they arrive again for K periods, the controller acts.
		src.set("node2", 90)
		for range 4 {
			c.Step(ctx)
			time.Sleep(time.Second)
		}
		synctest.Wait()
		if n := len(events(c, ActScaleOut, "succeeded")); n != 1 {
			t.Fatalf("%d scale outs once metrics are fresh, want 1: %+v", n, c.Events.Since(0))
		}
	})
}

// A launch that fails is retried with a growing backoff, and each failure
// event says why.
func TestControllerLaunchBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		prov := &fakeProv{failLaunch: 3}
		src := &fakeSource{pct: map[string]float64{}}
		c := newTestController(t, prov, src, StoreConfig{Min: 1})
		start := time.Now()
		for time.Since(start) < 20*time.Second && len(events(c, ActScaleOut, "succeeded")) == 0 {
			c.Step(t.Context())
			synctest.Wait()
			time.Sleep(100 * time.Millisecond)
		}
		fails := events(c, ActScaleOut, "failed")
		if len(fails) != 3 {
			t.Fatalf("%d failure events, want 3: %+v", len(fails), c.Events.Since(0))
		}
		for i, want := range []string{"retrying in 1s", "retrying in 2s", "retrying in 4s"} {
			if !strings.Contains(fails[i].Reason, want) || !strings.Contains(fails[i].Error, "no capacity in zone") {
				t.Fatalf("failure %d: reason %q error %q; want %q and the cause", i, fails[i].Reason, fails[i].Error, want)
			}
		}
		// The retries respected the backoff: 1+2+4 seconds at least.
		ok := events(c, ActScaleOut, "succeeded")
		if len(ok) != 1 || ok[0].Time.Sub(fails[0].Time) < 7*time.Second {
			t.Fatalf("success %+v came too early after the first failure at %v", ok, fails[0].Time)
		}
		if prov.launches != 4 {
			t.Fatalf("%d launches, want 4", prov.launches)
		}
	})
}

// tailingProv is a fakeProv whose instances have output to show.
type tailingProv struct{ fakeProv }

func (p *tailingProv) Logs(ctx context.Context, id string, tail int) (string, error) {
	return "level=ERROR msg=\"join 10.0.0.2:5057: connection refused\" node=" + id, nil
}

// A node that never joins is terminated, and the failure quotes the end of
// its output, which goes with it.
func TestControllerQuotesLogOfNodeThatDidNotJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		prov := &tailingProv{}
		src := &fakeSource{pct: map[string]float64{}}
		c := &Controller{Policy: StorePolicy{Cfg: StoreConfig{Min: 1}, StaleAfter: 3 * time.Second}, Prov: prov, Source: src,
			Log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
			ReadyTimeout: 5 * time.Second,
			Ready: func(ctx context.Context, in provision.Instance, n int) error {
				<-ctx.Done()
				return fmt.Errorf("not a ring member of %d: %w", n, ctx.Err())
			}}
		if err := c.Init(); err != nil {
			t.Fatal(err)
		}
		c.Step(t.Context())
		for len(events(c, ActScaleOut, "failed")) == 0 {
			time.Sleep(100 * time.Millisecond)
		}
		ev := events(c, ActScaleOut, "failed")[0]
		if ev.Instance != "node1" || !strings.Contains(ev.Error, "did not join") || !strings.Contains(ev.Error, "connection refused\" node=node1") {
			t.Fatalf("failure event %+v: want the instance, the cause and its last output", ev)
		}
		synctest.Wait()
		if len(prov.terminated) != 1 || prov.terminated[0] != "node1" {
			t.Fatalf("terminated %v, want [node1]", prov.terminated)
		}
	})
}

// A launched node that exits is noticed through the provisioner's list:
// the scale out fails within seconds, not after the whole ready timeout.
func TestControllerNoticesNodeThatExited(t *testing.T) {
	prov := &tailingProv{fakeProv{exitAfter: true}}
	src := &fakeSource{pct: map[string]float64{}}
	c := &Controller{Policy: StorePolicy{Cfg: StoreConfig{Min: 1}, StaleAfter: 3 * time.Second}, Prov: prov, Source: src,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), ReadyTimeout: 10 * time.Minute}
	if err := c.Init(); err != nil {
		t.Fatal(err)
	}
	c.Step(t.Context())
	deadline := time.Now().Add(2 * time.Minute)
	for len(events(c, ActScaleOut, "failed")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no failure event two minutes after launching a node that exited")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ev := events(c, ActScaleOut, "failed")[0]
	if !strings.Contains(ev.Error, "node1 exited before it joined") || !strings.Contains(ev.Error, "connection refused") {
		t.Fatalf("failure event error %q: want the exit and the node's last output", ev.Error)
	}
}

// Only one membership change is in flight: while a drain runs, nothing
// else starts.
func TestControllerOneChangeInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		prov := &fakeProv{drainGate: make(chan struct{})}
		for range 5 {
			prov.Launch(t.Context(), provision.Spec{})
		}
		src := &fakeSource{pct: map[string]float64{"node1": 1, "node2": 1, "node3": 1, "node4": 1, "node5": 1}}
		c := newTestController(t, prov, src, StoreConfig{Min: 3, Periods: 2, ScaleInCooldown: Duration(time.Second)})
		for range 10 {
			c.Step(t.Context())
			time.Sleep(time.Second)
		}
		synctest.Wait()
		if n := len(events(c, ActScaleIn, "started")); n != 1 {
			t.Fatalf("%d scale ins started while the first drain runs, want 1", n)
		}
		close(prov.drainGate)
		for range 10 {
			c.Step(t.Context())
			time.Sleep(time.Second)
		}
		synctest.Wait()
		if got := len(events(c, ActScaleIn, "succeeded")); got != 2 {
			t.Fatalf("%d scale ins, want 2 (5 nodes down to min 3)", got)
		}
		if len(prov.ins) != 3 {
			t.Fatalf("%d instances left, want 3", len(prov.ins))
		}
	})
}

// A drain interrupted by a controller crash is finished by the next
// controller, which finds it in the saved state.
func TestControllerResumesInterruptedDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		state := FileState{Path: filepath.Join(dir, "state.json")}
		prov := &fakeProv{drainGate: make(chan struct{})}
		for range 4 {
			prov.Launch(t.Context(), provision.Spec{})
		}
		src := &fakeSource{pct: map[string]float64{"node1": 1, "node2": 1, "node3": 1, "node4": 1}}
		lock := &FileLock{Path: filepath.Join(dir, "leader.lock")}
		first := newTestController(t, prov, src, StoreConfig{Periods: 2, ScaleInCooldown: Duration(time.Second)})
		first.State, first.Leader = state, lock
		ctx1, crash := context.WithCancel(t.Context())
		for range 4 {
			first.Step(ctx1)
			time.Sleep(time.Second)
		}
		synctest.Wait()
		p, err := state.Load(t.Context())
		if err != nil || p == nil || p.Action != ActScaleIn || p.Phase != "drain" {
			t.Fatalf("saved state %+v, %v: want a scale in draining", p, err)
		}
		victim := p.Instance
		// The first controller dies mid-drain: its lock goes with it.
		crash()
		lock.Release(t.Context())

		second := newTestController(t, prov, src, StoreConfig{Periods: 2, ScaleInCooldown: Duration(time.Hour)})
		second.State, second.Leader = state, &FileLock{Path: filepath.Join(dir, "leader.lock")}
		go func() { time.Sleep(2 * time.Second); close(prov.drainGate) }()
		for range 5 {
			second.Step(t.Context())
			time.Sleep(time.Second)
		}
		synctest.Wait()
		if len(events(second, ActScaleIn, "resumed")) != 1 {
			t.Fatalf("no resume event: %+v", second.Events.Since(0))
		}
		if !strings.Contains(strings.Join(prov.terminated, ","), victim) {
			t.Fatalf("terminated %v, want %s", prov.terminated, victim)
		}
		if p, _ := state.Load(t.Context()); p != nil {
			t.Fatalf("state %+v left after the resumed drain", p)
		}
	})
}

// Two controllers with one lock: only the holder acts.
func TestFileLockElectsOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leader.lock")
	a, b := &FileLock{Path: path}, &FileLock{Path: path}
	if ok, err := a.TryAcquire(t.Context()); !ok || err != nil {
		t.Fatalf("first acquire: %v %v", ok, err)
	}
	if ok, _ := b.TryAcquire(t.Context()); ok {
		t.Fatal("second controller acquired a held lock")
	}
	a.Release(t.Context())
	if ok, _ := b.TryAcquire(t.Context()); !ok {
		t.Fatal("lock not taken over after release")
	}
}

// An instance the platform put in draining (an Auto Scaling group's own
// choice) is drained and terminated.
func TestControllerFinishesPlatformDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		prov := &fakeProv{}
		for range 4 {
			prov.Launch(t.Context(), provision.Spec{})
		}
		prov.ins[2].State = provision.StateDraining
		src := &fakeSource{pct: map[string]float64{"node1": 50, "node2": 50, "node3": 50, "node4": 50}}
		c := newTestController(t, prov, src, StoreConfig{})
		c.Step(t.Context())
		synctest.Wait()
		if len(prov.drained) != 1 || prov.drained[0] != "node3" || len(prov.terminated) != 1 || prov.terminated[0] != "node3" {
			t.Fatalf("drained %v terminated %v, want node3", prov.drained, prov.terminated)
		}
		if evs := events(c, ActScaleIn, "succeeded"); len(evs) != 1 || !strings.Contains(evs[0].Reason, "reports node3 draining") {
			t.Fatalf("events %+v", c.Events.Since(0))
		}
	})
}

// The ring size a new node must reach is the one seen before its launch:
// a ring read during the launch that already holds the new node must not
// make the controller wait for one more member than will ever come.
func TestControllerWaitsForRingBeforeLaunch(t *testing.T) {
	prov := &fakeProv{}
	for range 2 {
		prov.Launch(t.Context(), provision.Spec{})
	}
	src := &fakeSource{pct: map[string]float64{"node1": 1, "node2": 1}}
	c := newTestController(t, prov, src, StoreConfig{Min: 3, Periods: 1})
	c.ring = []RingMember{{Token: 1, HTTPAddr: "a"}, {Token: 2, HTTPAddr: "b"}}
	prov.onLaunch = func() {
		c.mu.Lock()
		c.ring = append(c.ring, RingMember{Token: 3, HTTPAddr: "c"})
		c.mu.Unlock()
	}
	var got []int
	c.Ready = func(_ context.Context, _ provision.Instance, members int) error {
		got = append(got, members)
		return nil
	}
	c.scaleOut(t.Context(), "store", Decision{Reason: "below min"}, nil, nil)
	if len(got) != 1 || got[0] != 3 {
		t.Fatalf("Ready waited for rings of %v members, want [3]", got)
	}
}

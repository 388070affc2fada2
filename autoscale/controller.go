package autoscale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tide/autoscale/provision"
)

// VictimPicker is implemented by provisioners that decide themselves which
// instance a scale in removes (a StatefulSet removes its highest ordinal).
type VictimPicker interface {
	Victim(ctx context.Context) (provision.Instance, error)
}

// Controller runs one policy over one provisioner.
type Controller struct {
	Policy Policy
	Prov   provision.Provisioner
	Source Source
	// Leader elects the active controller; nil means this one always is.
	Leader Leader
	// State remembers a change in flight across controller crashes; nil
	// keeps it in memory only.
	State State
	// Events receives every event; if nil, Init makes one that keeps the
	// last 1000 and appends them to EventsPath (if set) as JSON lines.
	Events     *Events
	EventsPath string
	Log        *slog.Logger
	// Period between evaluations. Default 1s.
	Period time.Duration
	// Template is the Spec of new instances (capacity, replicas, flags).
	Template provision.Spec
	// Keep is how many rounds of history policies see. Default 32.
	Keep int
	// Launch failures are retried after Backoff, doubling up to
	// MaxBackoff. Defaults 1s and 1m.
	Backoff, MaxBackoff time.Duration
	// ReadyTimeout bounds how long a new node may take to serve and join
	// the ring. Default 2m.
	ReadyTimeout time.Duration
	// Ready waits until a launched instance serves and is one of at least
	// members ring members. Default: /healthz, then the node's /hash_ring.
	Ready func(ctx context.Context, in provision.Instance, members int) error
	HTTP  *http.Client

	// changes is the context membership changes run under: Run makes it
	// outlive its own context, so a clean shutdown lets a drain finish.
	changes context.Context

	mu         sync.Mutex
	history    []Round
	instances  []provision.Instance
	ring       []RingMember
	leader     bool
	inflight   bool
	lastOut    time.Time
	lastIn     time.Time
	backoff    time.Duration
	nextLaunch time.Time
	lastNone   string
	lastNoneAt time.Time
	mem        *Pending
	wg         sync.WaitGroup

	reg       *prometheus.Registry
	gLeader   prometheus.Gauge
	gInstance *prometheus.GaugeVec
}

// Init fills defaults and registers metrics; Run calls it.
func (c *Controller) Init() error {
	if c.Policy == nil || c.Prov == nil {
		return errors.New("autoscale: a policy and a provisioner are required")
	}
	if c.Source == nil {
		c.Source = &Scraper{}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Period == 0 {
		c.Period = time.Second
	}
	if c.Keep == 0 {
		c.Keep = 32
	}
	if c.Backoff == 0 {
		c.Backoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = time.Minute
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 2 * time.Minute
	}
	if c.HTTP == nil {
		c.HTTP = &http.Client{Timeout: 5 * time.Second}
	}
	if c.Ready == nil {
		c.Ready = func(ctx context.Context, in provision.Instance, members int) error {
			ctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			go c.watchExit(ctx, in, cancel)
			err := provision.WaitHealthy(ctx, c.HTTP, in.HTTPAddr)
			if err == nil {
				err = c.waitMember(ctx, in.HTTPAddr, members)
			}
			if cause := context.Cause(ctx); err != nil && errors.Is(cause, errExited) {
				return cause
			}
			return err
		}
	}
	if c.reg == nil {
		c.reg = prometheus.NewRegistry()
		c.gLeader = prometheus.NewGauge(prometheus.GaugeOpts{Name: "tide_autoscale_leader", Help: "1 while this controller is the active one."})
		c.gInstance = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tide_autoscale_instances", Help: "Instances by state, as the provisioner lists them."}, []string{"system", "state"})
		c.reg.MustRegister(c.gLeader, c.gInstance)
	}
	if c.Events == nil {
		ev, err := NewEvents(1000, c.EventsPath, c.reg)
		if err != nil {
			return err
		}
		c.Events = ev
	}
	return nil
}

// Registry is where the controller's metrics are; NewEvents should
// register on it too.
func (c *Controller) Registry() *prometheus.Registry {
	if c.reg == nil {
		c.Init()
	}
	return c.reg
}

// Run evaluates every Period until ctx ends, then waits for the change in
// flight to stop.
func (c *Controller) Run(ctx context.Context) error {
	if err := c.Init(); err != nil {
		return err
	}
	c.changes = context.WithoutCancel(ctx)
	t := time.NewTicker(c.Period)
	defer t.Stop()
	for {
		c.Step(ctx)
		select {
		case <-ctx.Done():
			c.wg.Wait()
			if c.Leader != nil {
				rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c.Leader.Release(rctx)
				cancel()
			}
			return nil
		case <-t.C:
		}
	}
}

// Step is one evaluation: leadership, metrics, decision, action.
func (c *Controller) Step(ctx context.Context) {
	sys := c.Policy.System()
	if c.Leader != nil {
		ok, err := c.Leader.TryAcquire(ctx)
		if err != nil {
			c.Log.Warn("autoscale: leadership check failed", "err", err)
		}
		c.mu.Lock()
		was := c.leader
		c.leader = ok && err == nil
		now := c.leader
		c.mu.Unlock()
		c.gLeader.Set(b2f(now))
		if !now {
			if was {
				c.Log.Warn("autoscale: lost leadership")
			}
			return
		}
		if !was {
			c.Log.Info("autoscale: this controller is the leader")
			c.resume(ctx)
		}
	} else {
		c.mu.Lock()
		first := !c.leader
		c.leader = true
		c.mu.Unlock()
		c.gLeader.Set(1)
		if first {
			c.resume(ctx)
		}
	}

	ins, err := c.Prov.List(ctx)
	if err != nil {
		c.Log.Warn("autoscale: listing instances failed", "err", err)
		return
	}
	counts := map[string]int{}
	for _, in := range ins {
		counts[in.State]++
	}
	for _, st := range []string{provision.StatePending, provision.StateRunning, provision.StateDraining, provision.StateTerminated} {
		c.gInstance.WithLabelValues(sys, st).Set(float64(counts[st]))
	}
	// An instance draining while no change of ours is in flight was chosen
	// by the platform (an Auto Scaling group's own scale in, waiting on its
	// lifecycle hook) or left by a controller that lost its state: finish
	// it before anything else.
	c.mu.Lock()
	busy := c.inflight
	c.mu.Unlock()
	if !busy {
		for _, in := range ins {
			if in.State != provision.StateDraining {
				continue
			}
			reason := fmt.Sprintf("the %s provisioner reports %s draining", c.Prov.Name(), in.ID)
			p := &Pending{System: sys, Action: ActScaleIn, Instance: in.ID, Phase: "drain", Reason: reason, Started: time.Now()}
			if err := c.save(ctx, p); err != nil {
				c.Log.Warn("autoscale: saving state failed", "err", err)
				return
			}
			c.start(ctx, func(ctx context.Context) { c.scaleIn(ctx, sys, reason, in, p, nil) })
			return
		}
	}
	obs := c.Source.Collect(ctx, ins)
	now := time.Now()
	c.mu.Lock()
	if n := len(c.history); n > 0 {
		prev := c.history[n-1].Obs
		for id, o := range obs {
			if p, ok := prev[id]; ok && o.Time.After(p.Time) && o.Ops >= p.Ops {
				o.OpsPerSec = (o.Ops - p.Ops) / o.Time.Sub(p.Time).Seconds()
				obs[id] = o
			}
		}
	}
	c.history = append(c.history, Round{Time: now, Obs: obs})
	if len(c.history) > c.Keep {
		c.history = c.history[len(c.history)-c.Keep:]
	}
	c.instances = ins
	c.mu.Unlock()
	ring := c.readRing(ctx, ins)
	c.mu.Lock()
	c.ring = ring
	v := View{Now: now, Instances: ins, History: append([]Round(nil), c.history...), Ring: ring,
		LastScaleOut: c.lastOut, LastScaleIn: c.lastIn, InFlight: c.inflight}
	backoffUntil := c.nextLaunch
	c.mu.Unlock()

	d := c.Policy.Decide(v)
	switch d.Action {
	case ActScaleOut:
		if now.Before(backoffUntil) {
			c.none(sys, fmt.Sprintf("%s, but the last launch failed; retrying in %s", d.Reason, backoffUntil.Sub(now).Round(time.Millisecond)), obs)
			return
		}
		c.start(ctx, func(ctx context.Context) { c.scaleOut(ctx, sys, d, obs, ins) })
	case ActScaleIn:
		victim, ok := findInstance(ins, d.Victim)
		if vp, isVP := c.Prov.(VictimPicker); isVP {
			pick, err := vp.Victim(ctx)
			if err != nil {
				c.none(sys, fmt.Sprintf("%s, but the provisioner could not pick a victim: %v", d.Reason, err), obs)
				return
			}
			if pick.ID != d.Victim {
				d.Reason += fmt.Sprintf("; the %s provisioner removes %s instead", c.Prov.Name(), pick.ID)
			}
			victim, ok, d.Victim = pick, true, pick.ID
		}
		if !ok {
			c.none(sys, fmt.Sprintf("%s, but %s is not listed", d.Reason, d.Victim), obs)
			return
		}
		p := &Pending{System: sys, Action: ActScaleIn, Instance: victim.ID, Phase: "drain", Reason: d.Reason, Started: now}
		if err := c.save(ctx, p); err != nil {
			c.none(sys, fmt.Sprintf("%s, but saving the controller state failed: %v", d.Reason, err), obs)
			return
		}
		c.start(ctx, func(ctx context.Context) { c.scaleIn(ctx, sys, d.Reason, victim, p, obs) })
	default:
		c.none(sys, d.Reason, obs)
	}
}

// none records a decision not to act when its reason differs from the
// last one's (numbers aside), or once a minute, so the event list stays
// readable.
func (c *Controller) none(sys, reason string, obs map[string]Observation) {
	c.mu.Lock()
	if reasonClass(reason) == reasonClass(c.lastNone) && time.Since(c.lastNoneAt) < time.Minute {
		c.mu.Unlock()
		return
	}
	c.lastNone, c.lastNoneAt = reason, time.Now()
	c.mu.Unlock()
	c.Log.Info("autoscale: no action", "system", sys, "reason", reason)
	c.Events.Add(Event{Time: time.Now(), System: sys, Action: ActNone, Reason: reason, Metrics: obs, Outcome: "decided"})
}

// reasonClass strips the numbers from a reason, so that "disk 41.2%" and
// "disk 41.3%" count as the same reason.
func reasonClass(r string) string {
	b := make([]byte, 0, len(r))
	for i := 0; i < len(r); i++ {
		if ch := r[i]; (ch >= '0' && ch <= '9') || ch == '.' {
			continue
		}
		b = append(b, r[i])
	}
	return string(b)
}

// start runs a membership change in the background. Under Run, a change
// runs to its end even when the controller is told to stop: Drain and
// Launch are not left half done by a clean shutdown. A change whose
// context ends (the controller is going away) leaves the saved state as it
// is, for the next controller to resume.
func (c *Controller) start(ctx context.Context, f func(ctx context.Context)) {
	if c.changes != nil {
		ctx = c.changes
	}
	c.mu.Lock()
	c.inflight = true
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f(ctx)
		c.mu.Lock()
		c.inflight = false
		c.mu.Unlock()
	}()
}

func (c *Controller) save(ctx context.Context, p *Pending) error {
	if c.State == nil {
		c.mu.Lock()
		c.mem = p
		c.mu.Unlock()
		return nil
	}
	return c.State.Save(ctx, p)
}

func (c *Controller) scaleOut(ctx context.Context, sys string, d Decision, obs map[string]Observation, ins []provision.Instance) {
	start := time.Now()
	spec := c.Template
	spec.Extra = append([]string(nil), c.Template.Extra...)
	spec.Token = d.Token
	// The join address comes from the platform's current list: the tick's
	// list may predate the end of the previous launch, and show the node
	// it started as pending, or not at all.
	if fresh, err := c.Prov.List(ctx); err == nil {
		ins = fresh
	}
	for _, in := range ins {
		if in.State == provision.StateRunning && in.ChordAddr != "" {
			spec.Join = in.ChordAddr
			break
		}
	}
	c.Log.Info("autoscale: scaling out", "system", sys, "reason", d.Reason, "token", d.Token)
	c.Events.Add(Event{Time: start, System: sys, Action: ActScaleOut, Reason: d.Reason, Metrics: obs, Outcome: "started"})
	fail := func(in string, err error) {
		c.mu.Lock()
		if c.backoff == 0 {
			c.backoff = c.Backoff
		} else {
			c.backoff = min(2*c.backoff, c.MaxBackoff)
		}
		c.nextLaunch = time.Now().Add(c.backoff)
		b := c.backoff
		c.mu.Unlock()
		c.Log.Warn("autoscale: scale out failed", "system", sys, "err", err, "retry_in", b)
		c.Events.Add(Event{Time: time.Now(), System: sys, Action: ActScaleOut, Reason: fmt.Sprintf("%s; retrying in %s", d.Reason, b),
			Instance: in, Outcome: "failed", Error: err.Error(), Seconds: time.Since(start).Seconds()})
	}
	// The ring it must join is the one seen before the launch: the
	// controller's loop keeps reading the ring while the launch runs, and
	// by the time it returns the ring may already hold the new node.
	want := len(c.ringOf(ins)) + 1
	c.save(ctx, &Pending{System: sys, Action: ActScaleOut, Phase: "launch", Reason: d.Reason, Started: start})
	defer func() {
		if ctx.Err() == nil {
			c.save(ctx, nil)
		}
	}()
	in, err := c.Prov.Launch(ctx, spec)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		fail("", fmt.Errorf("launch: %w", err))
		return
	}
	rctx, cancel := context.WithTimeout(ctx, c.ReadyTimeout)
	defer cancel()
	if err := c.Ready(rctx, in, want); err != nil {
		if ctx.Err() != nil {
			return
		}
		err = fmt.Errorf("%s did not join: %w; terminating it", in.ID, err)
		if lt, ok := c.Prov.(provision.LogTailer); ok {
			// Its output goes with it: keep the end of it in the log and
			// the event, where the operator looks first.
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			tail, lerr := lt.Logs(lctx, in.ID, 20)
			cancel()
			if lerr == nil && strings.TrimSpace(tail) != "" {
				c.Log.Warn("autoscale: the node that did not join printed", "instance", in.ID, "log", tail)
				err = fmt.Errorf("%w; its last output:\n%s", err, tail)
			}
		}
		fail(in.ID, err)
		tctx, cancel := context.WithTimeout(ctx, time.Minute)
		c.Prov.Terminate(tctx, in)
		cancel()
		return
	}
	c.mu.Lock()
	c.backoff, c.nextLaunch, c.lastOut = 0, time.Time{}, time.Now()
	c.mu.Unlock()
	secs := time.Since(start).Seconds()
	c.Log.Info("autoscale: scaled out", "system", sys, "instance", in.ID, "http", in.HTTPAddr, "seconds", secs)
	c.Events.Add(Event{Time: time.Now(), System: sys, Action: ActScaleOut, Reason: d.Reason, Instance: in.ID, Outcome: "succeeded", Seconds: secs})
}

func (c *Controller) scaleIn(ctx context.Context, sys, reason string, victim provision.Instance, p *Pending, obs map[string]Observation) {
	start := time.Now()
	if p.Phase == "drain" {
		c.Log.Info("autoscale: draining", "system", sys, "instance", victim.ID, "reason", reason)
		c.Events.Add(Event{Time: start, System: sys, Action: ActScaleIn, Reason: reason, Metrics: obs, Instance: victim.ID, Outcome: "started"})
		if err := c.Prov.Drain(ctx, victim); err != nil {
			if ctx.Err() != nil {
				return // the controller is going away; the next one resumes
			}
			// The node keeps its data when a hand-off fails; nothing was
			// lost, and the policy decides again.
			c.save(ctx, nil)
			c.mu.Lock()
			c.lastIn = time.Now() // a failed drain also waits out the cooldown
			c.mu.Unlock()
			c.Log.Warn("autoscale: drain failed", "instance", victim.ID, "err", err)
			c.Events.Add(Event{Time: time.Now(), System: sys, Action: ActScaleIn, Reason: reason, Instance: victim.ID,
				Outcome: "failed", Error: "drain: " + err.Error(), Seconds: time.Since(start).Seconds()})
			return
		}
		p.Phase = "terminate"
		if err := c.save(ctx, p); err != nil {
			c.Log.Warn("autoscale: saving state failed", "err", err)
		}
	}
	if err := c.Prov.Terminate(ctx, victim); err != nil {
		if ctx.Err() != nil {
			return
		}
		c.Log.Warn("autoscale: terminate failed; will retry", "instance", victim.ID, "err", err)
		c.Events.Add(Event{Time: time.Now(), System: sys, Action: ActScaleIn, Reason: reason, Instance: victim.ID,
			Outcome: "failed", Error: "terminate: " + err.Error(), Seconds: time.Since(start).Seconds()})
		// The state still says "terminate": the next resume retries it.
		c.mu.Lock()
		c.leader = false // forces a resume at the next step
		c.mu.Unlock()
		return
	}
	c.save(ctx, nil)
	c.mu.Lock()
	c.lastIn = time.Now()
	c.mu.Unlock()
	secs := time.Since(start).Seconds()
	c.Log.Info("autoscale: scaled in", "system", sys, "instance", victim.ID, "seconds", secs)
	c.Events.Add(Event{Time: time.Now(), System: sys, Action: ActScaleIn, Reason: reason, Instance: victim.ID, Outcome: "succeeded", Seconds: secs})
}

// resume finishes the change an earlier controller left in flight.
func (c *Controller) resume(ctx context.Context) {
	var p *Pending
	var err error
	if c.State != nil {
		p, err = c.State.Load(ctx)
	} else {
		c.mu.Lock()
		p = c.mem
		c.mu.Unlock()
	}
	if err != nil {
		c.Log.Warn("autoscale: reading controller state failed", "err", err)
		return
	}
	c.mu.Lock()
	busy := c.inflight
	c.mu.Unlock()
	if p == nil || busy || p.System != c.Policy.System() {
		return
	}
	sys := p.System
	switch p.Action {
	case ActScaleIn:
		ins, err := c.Prov.List(ctx)
		if err != nil {
			c.Log.Warn("autoscale: cannot resume: listing failed", "err", err)
			return
		}
		victim, ok := findInstance(ins, p.Instance)
		if !ok {
			// Already gone: the earlier controller got as far as terminating.
			c.save(ctx, nil)
			c.Events.Add(Event{Time: time.Now(), System: sys, Action: ActScaleIn, Reason: p.Reason, Instance: p.Instance, Outcome: "resumed",
				Error: "instance already gone; nothing left to do"})
			return
		}
		c.Log.Info("autoscale: resuming an interrupted scale in", "instance", p.Instance, "phase", p.Phase)
		c.Events.Add(Event{Time: time.Now(), System: sys, Action: ActScaleIn, Reason: p.Reason, Instance: p.Instance, Outcome: "resumed",
			Error: "interrupted in phase " + p.Phase})
		c.start(ctx, func(ctx context.Context) { c.scaleIn(ctx, sys, p.Reason, victim, p, nil) })
	case ActScaleOut:
		// A launch either happened (the instance is listed and counted) or
		// did not; the policy decides again with what it sees.
		c.save(ctx, nil)
		c.Events.Add(Event{Time: time.Now(), System: sys, Action: ActScaleOut, Reason: p.Reason, Outcome: "resumed",
			Error: "launch interrupted; deciding again"})
	}
}

func findInstance(ins []provision.Instance, id string) (provision.Instance, bool) {
	for _, in := range ins {
		if in.ID == id {
			return in, true
		}
	}
	return provision.Instance{}, false
}

// readRing asks running instances for the ring until one answers.
func (c *Controller) readRing(ctx context.Context, ins []provision.Instance) []RingMember {
	for _, in := range ins {
		if in.State != provision.StateRunning {
			continue
		}
		if r, err := fetchRing(ctx, c.HTTP, in.HTTPAddr); err == nil {
			return r
		}
	}
	return nil
}

func (c *Controller) ringOf([]provision.Instance) []RingMember {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ring
}

var errExited = errors.New("exited")

// watchExit ends ctx early, with errExited as the cause, when the
// provisioner lists the instance as gone: a node that failed to start does
// not keep the controller waiting out the whole ReadyTimeout.
func (c *Controller) watchExit(ctx context.Context, in provision.Instance, cancel context.CancelCauseFunc) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ins, err := c.Prov.List(ctx)
		if err != nil {
			continue
		}
		if cur, ok := findInstance(ins, in.ID); ok && cur.State == provision.StateTerminated {
			cancel(fmt.Errorf("%s %w before it joined", in.ID, errExited))
			return
		}
	}
}

// waitMember waits until the node at httpAddr sees a ring of at least n
// members that includes itself.
func (c *Controller) waitMember(ctx context.Context, httpAddr string, n int) error {
	for {
		r, err := fetchRing(ctx, c.HTTP, httpAddr)
		if err == nil && len(r) >= n {
			for _, m := range r {
				if m.HTTPAddr == httpAddr {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not a ring member of %d: %w", n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// fetchRing reads a node's /hash_ring.
func fetchRing(ctx context.Context, hc *http.Client, httpAddr string) ([]RingMember, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/hash_ring", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/hash_ring: %s", httpAddr, resp.Status)
	}
	var body struct {
		Ring map[string]string `json:"ring"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	var out []RingMember
	for tok, addr := range body.Ring {
		t, err := strconv.ParseUint(tok, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("hash_ring token %q: %w", tok, err)
		}
		out = append(out, RingMember{Token: uint32(t), HTTPAddr: addr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Token < out[j].Token })
	return out, nil
}

// Status is what GET /status reports.
type Status struct {
	System     string               `json:"system"`
	Provision  string               `json:"provisioner"`
	Leader     bool                 `json:"leader"`
	InFlight   bool                 `json:"in_flight"`
	Instances  []provision.Instance `json:"instances"`
	Ring       []RingMember         `json:"ring"`
	Last       *Round               `json:"last_round,omitempty"`
	LastOut    time.Time            `json:"last_scale_out"`
	LastIn     time.Time            `json:"last_scale_in"`
	RetryAfter time.Time            `json:"launch_retry_after"`
}

// Status returns the controller's current view.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{System: c.Policy.System(), Provision: c.Prov.Name(), Leader: c.leader, InFlight: c.inflight,
		Instances: c.instances, Ring: c.ring, LastOut: c.lastOut, LastIn: c.lastIn, RetryAfter: c.nextLaunch}
	if n := len(c.history); n > 0 {
		r := c.history[n-1]
		s.Last = &r
	}
	return s
}

// Handler serves GET /events?since=N, GET /status, GET /metrics and
// GET /healthz.
func (c *Controller) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		var since uint64
		if s := r.URL.Query().Get("since"); s != "" {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				http.Error(w, "since: want an event sequence number", http.StatusBadRequest)
				return
			}
			since = v
		}
		evs := c.Events.Since(since)
		if evs == nil {
			evs = []Event{}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(evs)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(c.Status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.Registry(), promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

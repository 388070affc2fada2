package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"tide/autoscale"
	"tide/cluster"
	"tide/paxos/node"
)

// RampPoint is one second of `tide bench log --ramp`.
type RampPoint struct {
	Second    int            `json:"second"`
	Clients   int            `json:"clients"`
	OpsPerSec float64        `json:"ops_per_sec"`
	P99ms     float64        `json:"p99_ms"`
	Errors    int            `json:"errors"`
	Epoch     uint64         `json:"epoch"`
	Instances map[string]int `json:"instances"`
	// Rates is each role's messages received per second over the second,
	// summed over its instances (acceptor-groups: each group's busiest
	// acceptor); absent while a role's instances change.
	Rates map[string]float64 `json:"msgs_per_sec,omitempty"`
	// Predicted is the instances per role the capacity profile says carry
	// Rates (autoscale.LogConfig.Needed), when a profile was given.
	Predicted map[string]int `json:"predicted,omitempty"`
	// CPU is each role's busiest instance's CPU use over its CPU limit,
	// for roles in CPU-limited containers.
	CPU map[string]float64 `json:"cpu_util,omitempty"`
}

// RampConfig is a ramp: Clients[i] closed-loop clients for Step each.
type RampConfig struct {
	Clients []int
	Step    time.Duration
	// Target is an existing log (as loadable by the CLI); nil starts a
	// local one (the batched default) under Dir.
	Target *node.Deployment
	// Capacity, for a local log, runs the log controller with these
	// role capacities (messages/s); nil does not autoscale. Either way,
	// the points predict from it the instances each role needs.
	Capacity map[string]float64
	// Period is the controller's period (default 2s).
	Period time.Duration
}

// LogRamp drives a ramp of closed-loop clients putting 16-byte values and
// reports every second the load, throughput, p99 latency and each role's
// instance count, printing a line per second to log.
func LogRamp(ctx context.Context, rc RampConfig, log io.Writer) ([]RampPoint, error) {
	if len(rc.Clients) == 0 || slices.Min(rc.Clients) < 0 || rc.Step <= 0 {
		return nil, fmt.Errorf("a ramp needs client counts >= 0 and a positive step")
	}
	var d node.Deployment
	var ctl *cluster.LogControl
	if rc.Target != nil {
		d = *rc.Target
	} else {
		dir, err := os.MkdirTemp("", "tide-bench-ramp-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		local := &cluster.Local{Dir: dir}
		defer local.StopAll(5 * time.Second)
		if d, ctl, err = StartLocalLog(ctx, local, cluster.ShapePlan(node.DefaultShape, "")); err != nil {
			return nil, err
		}
		if rc.Capacity != nil {
			cfg := autoscale.LogConfig{Capacity: rc.Capacity, ScaleOutCooldown: autoscale.Duration(5 * time.Second), ScaleInCooldown: autoscale.Duration(15 * time.Second)}
			if err := cfg.Validate(); err != nil {
				return nil, err
			}
			period := rc.Period
			if period <= 0 {
				period = 2 * time.Second
			}
			events, err := autoscale.NewEvents(1000, "", nil)
			if err != nil {
				return nil, err
			}
			events.OnEvent(func(ev autoscale.Event) {
				if ev.Outcome != "decided" {
					fmt.Fprintf(log, "autoscale: %s %s: %s %s\n", ev.Action, ev.Outcome, ev.Reason, ev.Error)
				}
			})
			lc := &autoscale.LogController{Target: ctl, Policy: autoscale.LogPolicy{Cfg: cfg}, Period: period, Events: events}
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go lc.Run(cctx)
		}
	}
	c, err := node.NewClient(d, "", max(slices.Max(rc.Clients), 1))
	if err != nil {
		return nil, err
	}
	defer c.Close()

	type sample struct {
		sec int
		lat float64
		err bool
	}
	var mu sync.Mutex
	var samples []sample
	start := time.Now()
	value := []byte("0123456789abcdef")
	stops := []chan struct{}{}
	var wg sync.WaitGroup
	setClients := func(n int) {
		for len(stops) < n {
			stop := make(chan struct{})
			stops = append(stops, stop)
			i := len(stops)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; ; k++ {
					select {
					case <-stop:
						return
					case <-ctx.Done():
						return
					default:
					}
					t := time.Now()
					opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
					err := c.Put(opCtx, fmt.Sprintf("c%d-%d", i, k%1000), value)
					cancel()
					mu.Lock()
					samples = append(samples, sample{sec: int(time.Since(start) / time.Second), lat: float64(time.Since(t).Microseconds()) / 1000, err: err != nil})
					mu.Unlock()
				}
			}()
		}
		for len(stops) > n {
			close(stops[len(stops)-1])
			stops = stops[:len(stops)-1]
		}
	}
	current := func() node.Deployment {
		if ctl != nil {
			if cur, err := ctl.Current(); err == nil {
				return cur
			}
			return d
		}
		if cur, err := cluster.Newest(d); err == nil {
			return cur
		}
		return d
	}
	// The roles' message counters, sampled every second as the log
	// controller samples them.
	sampler := ctl
	if sampler == nil {
		sampler = cluster.NewLogControl(nil, d, "")
	}
	var prev map[string]map[string]autoscale.LogCounters
	prevAt := time.Now()
	// rates returns each role's messages per second since the last call,
	// and its busiest instance's CPU use over its limit (where limited).
	rates := func() (map[string]float64, map[string]float64) {
		now := time.Now()
		cur, err := sampler.Sample(ctx)
		if err != nil {
			prev = nil
			return nil, nil
		}
		out, cpu := map[string]float64{}, map[string]float64{}
		if prev != nil {
			secs := now.Sub(prevAt).Seconds()
		roles:
			for role, insts := range cur {
				total, busiest := 0.0, 0.0
				for id, v := range insts {
					b, ok := prev[role][id]
					if !ok || v.Messages < b.Messages || len(insts) != len(prev[role]) {
						continue roles
					}
					total += (v.Messages - b.Messages) / secs
					if v.CPULimit > 0 {
						busiest = max(busiest, (v.CPUSeconds-b.CPUSeconds)/secs/v.CPULimit)
					}
				}
				out[role] = total
				if busiest > 0 {
					cpu[role] = busiest
				}
			}
		}
		prev, prevAt = cur, now
		return out, cpu
	}
	// The configuration and the rates are read in the background: on a
	// loaded machine they can take longer than a second, and the points
	// must keep to the wall clock.
	type view struct {
		cfg        node.Deployment
		rates, cpu map[string]float64
	}
	var vmu sync.Mutex
	latest := view{cfg: d}
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		rates()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			v := view{cfg: current()}
			v.rates, v.cpu = rates()
			vmu.Lock()
			latest = v
			vmu.Unlock()
		}
	}()
	profile := autoscale.LogConfig{Capacity: rc.Capacity}
	var points []RampPoint
	clientsAt := func(sec int) int {
		i := min(int(time.Duration(sec)*time.Second/rc.Step), len(rc.Clients)-1)
		return rc.Clients[i]
	}
	last := int((time.Duration(len(rc.Clients)) * rc.Step) / time.Second)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	setClients(rc.Clients[0])
	for done := 0; done < last; {
		select {
		case <-ctx.Done():
			setClients(0)
			wg.Wait()
			return points, ctx.Err()
		case <-tick.C:
		}
		elapsed := min(int(time.Since(start)/time.Second), last)
		vmu.Lock()
		v := latest
		vmu.Unlock()
		for sec := done + 1; sec <= elapsed; sec++ {
			mu.Lock()
			var lat []float64
			errs := 0
			kept := samples[:0]
			for _, s := range samples {
				switch {
				case s.sec == sec-1 && s.err:
					errs++
				case s.sec == sec-1:
					lat = append(lat, s.lat)
				case s.sec >= sec:
					kept = append(kept, s)
				}
			}
			samples = kept
			mu.Unlock()
			cur := v.cfg
			p := RampPoint{Second: sec, Clients: clientsAt(sec - 1), OpsPerSec: float64(len(lat)), P99ms: Percentile(lat, 99), Errors: errs,
				Epoch: cur.Log.Epoch, Instances: map[string]int{
					"batchers": len(cur.Log.Batchers), "proxy-leaders": len(cur.Log.ProxyLeaders), "acceptor-groups": len(cur.Log.Groups),
					"replicas": len(cur.Log.Replicas), "unbatchers": len(cur.Log.Unbatchers),
				}, Rates: v.rates, CPU: v.cpu}
			if len(rc.Capacity) > 0 {
				p.Predicted = map[string]int{}
				for role, r := range p.Rates {
					if n := profile.Needed(role, r); n >= 0 {
						p.Predicted[role] = n
					}
				}
			}
			points = append(points, p)
			fmt.Fprintf(log, "t=%4ds clients %5d  %8.0f ops/s  p99 %7.2f ms  errors %d  epoch %d  batchers %d proxy-leaders %d acceptor-groups %d replicas %d unbatchers %d\n",
				p.Second, p.Clients, p.OpsPerSec, p.P99ms, p.Errors, p.Epoch, p.Instances["batchers"], p.Instances["proxy-leaders"], p.Instances["acceptor-groups"], p.Instances["replicas"], p.Instances["unbatchers"])
		}
		done = elapsed
		setClients(clientsAt(elapsed))
	}
	stopSampling()
	<-sampled
	setClients(0)
	wg.Wait()
	return points, nil
}

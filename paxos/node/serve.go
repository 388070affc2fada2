package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"tide/netport"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Serve runs the given roles of d in this process until ctx ends: each
// role listens on its own address, durable state goes under dataDir, and
// httpAddr serves /metrics, /status and /deployment.
func Serve(ctx context.Context, d Deployment, roles []string, dataDir, httpAddr string, log *slog.Logger) error {
	var specs []RoleSpec
	for _, a := range roles {
		kind, _, err := d.RoleOf(a)
		if err != nil {
			return err
		}
		specs = append(specs, RoleSpec{Addr: a, Kind: kind})
	}
	return ServeRoles(ctx, d, specs, dataDir, httpAddr, log)
}

// RoleSpec is one role for ServeRoles: its address and kind (see Kinds).
type RoleSpec struct {
	// Addr is the role's address: the one the configuration lists and
	// every peer sends to.
	Addr string
	Kind string
	// Listen is the address the role binds, when that is not Addr: behind
	// a Kubernetes Service, say, peers send to the Service's ClusterIP
	// (Addr) and the pod listens on 0.0.0.0 with the same port. Empty
	// binds Addr.
	Listen string
	// Listener, when set, is served instead of binding anything: the
	// caller bound it to learn its port and kept it open since (see
	// RunInProcess).
	Listener net.Listener
}

// bind is the address r listens on.
func (r RoleSpec) bind() string {
	if r.Listen != "" {
		return r.Listen
	}
	return r.Addr
}

// ServeRoles is Serve for roles given with their kinds, which d's
// configuration need not list: that is how a new instance joins a running
// log (it then waits to be added by a reconfiguration).
func ServeRoles(ctx context.Context, d Deployment, roles []RoleSpec, dataDir, httpAddr string, log *slog.Logger) error {
	if len(roles) == 0 {
		return errors.New("no roles to run")
	}
	ln, err := netport.Listen(httpAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", httpAddr, err)
	}
	return ServeRolesOn(ctx, d, roles, dataDir, ln, log)
}

// ServeRolesOn is ServeRoles with the HTTP server on a listener the
// caller opened; it closes it.
func ServeRolesOn(ctx context.Context, d Deployment, roles []RoleSpec, dataDir string, httpLn net.Listener, log *slog.Logger) error {
	defer httpLn.Close()
	if len(roles) == 0 {
		return errors.New("no roles to run")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := NewMetrics(reg)
	tr := newTransport(d.Certs)
	tr.Log = log
	tr.OwnFrames = true // the runners decode in place (Runner.Deliver)
	d.TLS = tr.TLS != nil
	defer tr.Close()
	var runners []*Runner
	for _, rs := range roles {
		r, err := NewRunnerKind(d, rs.Kind, rs.Addr, dataDir, tr, m, log)
		if err != nil {
			return err
		}
		runners = append(runners, r)
	}
	for i, r := range runners {
		if ln := roles[i].Listener; ln != nil {
			deliver := r.Deliver
			if err := tr.ServeBatch(ln, func(frames [][]byte) {
				for _, f := range frames {
					deliver(f)
				}
			}); err != nil {
				return fmt.Errorf("%s %s: %w", r.Kind, r.Addr, err)
			}
			log.Info("role listening", "kind", r.Kind, "addr", r.Addr, "listen", ln.Addr().String())
			continue
		}
		bound, err := tr.Listen(roles[i].bind(), r.Deliver)
		if err != nil {
			return fmt.Errorf("%s %s: %w", r.Kind, r.Addr, err)
		}
		log.Info("role listening", "kind", r.Kind, "addr", r.Addr, "listen", bound)
	}
	reg.MustRegister(&statusCollector{runners: runners})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		var st []Status
		for _, r := range runners {
			st = append(st, r.Status())
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /deployment", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(current(d, runners))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	// Profiles of the role process: go tool pprof http://ADDR/debug/pprof/profile
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	// With TLS the HTTP port is mutual TLS too, and takes plain text on
	// loopback only (curl, a metrics scraper on the machine); it changes
	// nothing.
	httpLn = tr.TLS.ListenTide(httpLn, true)
	log.Info("http listening", "listen", httpLn.Addr().String(), "tls", tr.TLS != nil)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(httpLn)
	defer srv.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(runners))
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil {
				errs <- err
				cancel()
			}
		}()
		log.Info("role running", "kind", r.Kind, "addr", r.Addr)
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// statusCollector exports each role's protocol state as Prometheus series.
type statusCollector struct{ runners []*Runner }

var (
	descChosen    = prometheus.NewDesc("tide_paxos_chosen_watermark", "Leader: every slot below is known chosen.", []string{"role", "addr"}, nil)
	descNext      = prometheus.NewDesc("tide_paxos_next_slot", "Leader: the next slot it will assign.", []string{"role", "addr"}, nil)
	descActive    = prometheus.NewDesc("tide_paxos_leader_active", "Leader: 1 while active.", []string{"role", "addr"}, nil)
	descElections = prometheus.NewDesc("tide_paxos_elections_total", "Leader: campaigns started.", []string{"role", "addr"}, nil)
	descExecuted  = prometheus.NewDesc("tide_paxos_executed_slots", "Replica: slots executed.", []string{"role", "addr"}, nil)
	descBatches   = prometheus.NewDesc("tide_paxos_batches_total", "Batcher: batches sent.", []string{"role", "addr"}, nil)
	descAccepted  = prometheus.NewDesc("tide_paxos_accepted_slots", "Acceptor: votes held (not yet garbage-collected).", []string{"role", "addr"}, nil)
	descEpoch     = prometheus.NewDesc("tide_paxos_config_epoch", "The configuration epoch the role knows.", []string{"role", "addr"}, nil)
	descLive      = prometheus.NewDesc("tide_paxos_live_configs", "Leader: acceptor configurations not yet retired (1 once older rounds are).", []string{"role", "addr"}, nil)
	descDrained   = prometheus.NewDesc("tide_paxos_drained", "1 once the role is out of the configuration and holds nothing: its process may stop.", []string{"role", "addr"}, nil)
)

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descChosen, descNext, descActive, descElections, descExecuted, descBatches, descAccepted, descEpoch, descLive, descDrained} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.runners {
		s := r.Status()
		g := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
			ch <- prometheus.MustNewConstMetric(d, t, v, s.Kind, s.Addr)
		}
		if s.Kind != "acceptor" && s.Kind != "matchmaker" {
			g(descEpoch, prometheus.GaugeValue, float64(s.Epoch))
			drained := 0.0
			if s.Drained {
				drained = 1
			}
			g(descDrained, prometheus.GaugeValue, drained)
		}
		switch s.Kind {
		case "leader":
			g(descLive, prometheus.GaugeValue, float64(s.Live))
			g(descChosen, prometheus.GaugeValue, float64(s.Chosen))
			g(descNext, prometheus.GaugeValue, float64(s.NextSlot))
			active := 0.0
			if s.Active {
				active = 1
			}
			g(descActive, prometheus.GaugeValue, active)
			g(descElections, prometheus.CounterValue, float64(s.Elections))
		case "replica":
			g(descExecuted, prometheus.GaugeValue, float64(s.Executed))
		case "batcher":
			g(descBatches, prometheus.CounterValue, float64(s.Batches))
		case "acceptor":
			g(descAccepted, prometheus.GaugeValue, float64(s.Accepted))
		}
	}
}

// current is d with the newest configuration any of runners knows.
func current(d Deployment, runners []*Runner) Deployment {
	for _, r := range runners {
		if c, ok := r.Config(); ok && c.Leaders != nil && (c.Epoch > d.Log.Epoch) {
			d.Log = c
		}
	}
	d.HTTP = d.HTTPMap()
	return d
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"tide/autoscale"
	"tide/cluster"
	"tide/paxos/node"
)

// logRunOptions say how to start a local tide log: what `tide log up`
// and `tide up` share.
type logRunOptions struct {
	dir   string // deployment, role state and logs
	shape node.Shape
	rh    *roleHostFlags
	// reuse starts the deployment saved in dir, at its addresses and on
	// its state, if there is one.
	reuse bool
	// autoscale runs the log controller with policy every period.
	autoscale bool
	policy    autoscale.LogPolicy
	period    time.Duration
	// log is the controller's logger (default slog.Default()).
	log *slog.Logger
	// onExit is told of role processes that exit without being asked to.
	onExit func(name string, err error, logTail string)
}

// logRun is a running local tide log.
type logRun struct {
	d       node.Deployment
	depPath string
	ctl     *cluster.LogControl
	events  *autoscale.Events // nil without autoscaling
	roles   cluster.RoleHost
	reused  bool
	closers []func()
}

// startLogRun starts the roles of a tide log, its control endpoint and,
// with o.autoscale, its controller, which runs until ctx ends. Progress
// goes to out. Close stops everything it started.
func startLogRun(ctx context.Context, o logRunOptions, out io.Writer) (_ *logRun, err error) {
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, err
	}
	r := &logRun{depPath: filepath.Join(o.dir, "deployment.json")}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	roles, err := o.rh.open(ctx, o.dir, o.shape.Host)
	if err != nil {
		return nil, err
	}
	r.roles = roles
	if lr, ok := roles.(*cluster.LocalRoles); ok && o.onExit != nil {
		lr.Local.OnExit(func(p *cluster.Proc, err error, tail string) { o.onExit(p.Name, err, tail) })
	}
	r.closers = append(r.closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		roles.StopAll(sctx)
		o.rh.close()
	})
	var d node.Deployment
	if o.reuse && roles.Name() == "local" {
		if saved, lerr := node.LoadDeployment(r.depPath); lerr == nil {
			d, r.reused = saved, true
			d.Certs = logCerts
		} else if !errors.Is(lerr, os.ErrNotExist) {
			return nil, fmt.Errorf("saved log deployment: %w (move %s away to start a new log)", lerr, o.dir)
		}
	}
	// The control endpoint starts and stops role processes for 'tide log
	// scale' and 'tide log replace'; a reused deployment keeps its
	// address when it is free.
	ctlHost := o.shape.Host
	if roles.Name() != "local" {
		ctlHost = "127.0.0.1"
	}
	var ctlLn net.Listener
	if r.reused && d.Control != "" {
		ctlLn, _ = net.Listen("tcp", d.Control)
	}
	if ctlLn == nil {
		if ctlLn, err = net.Listen("tcp", net.JoinHostPort(ctlHost, "0")); err != nil {
			return nil, err
		}
	}
	control := ctlLn.Addr().String()
	if r.reused {
		d.Control = control
		err = d.Save(r.depPath)
		if err == nil {
			fmt.Fprintf(out, "restarting the saved log's %d roles on %s (logs in %s)\n", len(d.Roles()), o.rh.describe(), o.dir)
			err = cluster.StartLog(ctx, roles, d)
		}
	} else {
		// Each role takes its addresses first (local processes bind port
		// 0 and report what they hold); the deployment is laid out on
		// them, saved, and handed to every role.
		fmt.Fprintf(out, "starting %d log roles on %s (logs in %s)\n", o.shape.Count(), o.rh.describe(), o.dir)
		plan := cluster.ShapePlan(o.shape, control)
		if logCerts != nil {
			lay := plan.Lay
			plan.Lay = func(roles, https []string) (node.Deployment, error) {
				d, err := lay(roles, https)
				d.TLS, d.Certs = true, logCerts
				return d, err
			}
		}
		d, err = roles.StartNew(ctx, plan, func(d node.Deployment) error { return d.Save(r.depPath) })
	}
	if err != nil {
		ctlLn.Close()
		return nil, err
	}
	r.d = d
	r.ctl = cluster.NewLogControl(roles, d, r.depPath)
	// With TLS the control endpoint is mutual TLS; on loopback it also
	// takes plain text, which may read (/healthz) but not change the log.
	t := logCerts
	ctlSrv := &http.Server{Handler: t.RequireVerified(r.ctl.Handler(), "the log's control endpoint", http.MethodPost), ReadHeaderTimeout: 5 * time.Second}
	go ctlSrv.Serve(t.ListenTide(ctlLn, true))
	r.closers = append(r.closers, func() { ctlSrv.Close() })
	if o.autoscale {
		events, err := autoscale.NewEvents(1000, filepath.Join(o.dir, "autoscale-events.jsonl"), nil)
		if err != nil {
			return nil, err
		}
		r.events = events
		r.closers = append(r.closers, func() { events.Close() })
		logger := o.log
		if logger == nil {
			logger = slog.Default()
		}
		lc := &autoscale.LogController{Target: r.ctl, Policy: o.policy, Period: o.period, Events: events, Log: logger}
		go lc.Run(ctx)
	}
	return r, nil
}

// Close stops the controller's endpoint and every role process, in the
// reverse order of their start.
func (r *logRun) Close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	r.closers = nil
}

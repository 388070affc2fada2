package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"tide/autoscale/provision"
	"tide/paxos/node"
	"tide/tlsconf"
)

// RoleHost runs the role processes of a tide log: local child processes
// (LocalRoles) or containers (ProvisionedRoles over a provisioner such as
// Docker's). LogControl starts and stops roles through it.
type RoleHost interface {
	// Name says where roles run ("local", "docker").
	Name() string
	// StartNew starts the processes of a new log, one per kind of p, lays
	// out its deployment on the addresses they hold (p.Lay), saves it
	// with save, and returns it once every role answers /healthz.
	StartNew(ctx context.Context, p Plan, save func(node.Deployment) error) (node.Deployment, error)
	// Start runs one role process and returns once it answers /healthz,
	// with r's addresses as the process holds them: r.Addr and r.HTTP
	// empty take new ones (free ports of a local host, a container's own
	// address).
	Start(ctx context.Context, r RoleSpec) (RoleSpec, error)
	// Stop stops the process of role addr: SIGTERM, then a kill after a
	// grace period. A role it does not run is stopped already.
	Stop(ctx context.Context, addr string) error
	// StopAll stops every role process it started.
	StopAll(ctx context.Context)
}

// RoleSpec says how to start one role process.
type RoleSpec struct {
	Kind string // a node.Kinds kind: batcher, leader, proxy, acceptor, ...
	Addr string // where the role listens; empty: the host picks
	HTTP string // where its process serves HTTP; empty: the host picks
	// Deployment is the deployment a role of the initial configuration
	// starts from; nil for a role that joins a running log.
	Deployment *node.Deployment
	// Join is the HTTP address of a running role process, for a role
	// that joins: it fetches the configuration there and serves once a
	// reconfiguration adds it.
	Join string
	// Control is the HTTP address of the control endpoint (tide log up),
	// which role processes report in /deployment.
	Control string
}

// Plan is a new log before its processes hold addresses: the kind of each
// process, and how the deployment is laid out on the addresses they get.
type Plan struct {
	Kinds []string
	// Lay makes the deployment, roles[i] and https[i] being the addresses
	// of the process of Kinds[i].
	Lay func(roles, https []string) (node.Deployment, error)
}

// ShapePlan is the plan of a log of shape s whose roles report to the
// control endpoint at control ("" for none).
func ShapePlan(s node.Shape, control string) Plan {
	return Plan{Kinds: s.Kinds(), Lay: func(roles, https []string) (node.Deployment, error) {
		d, err := node.LayoutDeployment(s, roles, https)
		d.Control = control
		return d, err
	}}
}

// UnreplicatedPlan is the plan of the single unreplicated KV server, the
// baseline of tide bench log.
var UnreplicatedPlan = Plan{Kinds: []string{"unreplicated"}, Lay: func(roles, https []string) (node.Deployment, error) {
	return node.Deployment{Unreplicated: roles[0], HTTP: map[string]string{roles[0]: https[0]}}, nil
}}

// serveArgs is the `tide log serve` command line of r, keeping state
// under dataDir; deployment is how the initial configuration reaches the
// process (a --deployment or --deployment-json flag and its value).
func serveArgs(r RoleSpec, dataDir string, deployment []string) []string {
	args := []string{"log", "serve", "--role", r.Addr, "--http-addr", r.HTTP, "--data-dir", dataDir}
	if r.Join == "" {
		args = append(args, deployment...)
	} else {
		args = append(args, "--join", r.Join, "--kind", r.Kind)
	}
	if r.Control != "" {
		args = append(args, "--control", r.Control)
	}
	return args
}

func roleName(kind, addr string) string {
	return kind + "-" + strings.NewReplacer(":", "_", ".", "_").Replace(addr)
}

// StartLog starts every role of deployment d on host, all at once, and
// returns once all answer, or with the first error.
func StartLog(ctx context.Context, host RoleHost, d node.Deployment) error {
	errs := make(chan error, len(d.Roles()))
	for _, a := range d.Roles() {
		kind, _, err := d.RoleOf(a)
		if err != nil {
			return err
		}
		go func() {
			if _, err := host.Start(ctx, RoleSpec{Kind: kind, Addr: a, HTTP: d.HTTP[a], Deployment: &d, Control: d.Control}); err != nil {
				errs <- fmt.Errorf("start %s %s: %w", kind, a, err)
				return
			}
			errs <- nil
		}()
	}
	var first error
	for range d.Roles() {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// LocalRoles runs role processes as children of this process, through
// Local, each on loopback ports of Host. A process binds port 0 (or the
// addresses a saved deployment gives it), reports the addresses it
// holds, and then reads its deployment on its standard input: no port is
// chosen by one process and bound by another.
type LocalRoles struct {
	Local    *Local
	StateDir string
	Host     string // default 127.0.0.1
	// Extra flags passed to every `tide log serve` (the --tls-* files).
	Extra []string
	// TLS is the material the roles' health is checked with when they
	// run with --tls-* (Extra); nil: plain HTTP.
	TLS *tlsconf.Config

	mu    sync.Mutex
	procs map[string]*Proc
	seq   int
}

// Name is "local".
func (h *LocalRoles) Name() string { return "local" }

// launched is a role process that has bound its addresses (spec's) and,
// unless it joins, waits for its deployment on in.
type launched struct {
	spec RoleSpec
	proc *Proc
	in   *os.File
}

// launch starts `tide log serve` for r and waits until the process has
// reported the addresses it holds. r.Addr and r.HTTP, when empty, are
// port 0 of Host.
func (h *LocalRoles) launch(ctx context.Context, r RoleSpec) (launched, error) {
	host := h.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if r.Addr == "" {
		r.Addr = net.JoinHostPort(host, "0")
	}
	if r.HTTP == "" {
		r.HTTP = net.JoinHostPort(host, "0")
	}
	h.mu.Lock()
	h.seq++
	name := fmt.Sprintf("%s-new%d", r.Kind, h.seq)
	h.mu.Unlock()
	readyPath := filepath.Join(h.Local.Dir, name+".ready.json")
	// --procs 1: local roles share the machine, and with Go's default
	// each of them keeps threads waking one another on every core, which
	// costs about a sixth more CPU per command (tide bench log on 2 cores,
	// 14 role processes).
	args := append(serveArgs(r, h.StateDir, []string{"--deployment", "-"}), "--addr-file", readyPath, "--procs", "1")
	args = append(args, h.Extra...)
	var in *os.File
	var stdin *os.File
	if r.Join == "" {
		var err error
		if stdin, in, err = os.Pipe(); err != nil {
			return launched{}, err
		}
	}
	p, err := h.Local.StartReporting(ctx, name, args, readyPath, stdin)
	if stdin != nil {
		stdin.Close() // the child holds its own copy
	}
	if err != nil {
		if in != nil {
			in.Close()
		}
		return launched{}, err
	}
	if len(p.Ready.Roles) != 1 {
		p.Kill()
		in.Close()
		return launched{}, fmt.Errorf("%s reported %d role addresses, want 1", name, len(p.Ready.Roles))
	}
	r.Addr, r.HTTP = p.Ready.Roles[0], p.Ready.HTTPAddr
	if err := h.Local.rename(p, roleName(r.Kind, r.Addr)); err != nil {
		p.Kill()
		if in != nil {
			in.Close()
		}
		return launched{}, err
	}
	return launched{spec: r, proc: p, in: in}, nil
}

// serve hands l its deployment d (unless it joins) and waits until it
// answers /healthz.
func (h *LocalRoles) serve(ctx context.Context, l launched, d *node.Deployment) error {
	if l.in != nil {
		b, err := json.Marshal(d)
		if err == nil {
			_, err = l.in.Write(b)
		}
		l.in.Close()
		if err != nil {
			l.proc.Kill()
			return fmt.Errorf("hand %s its deployment: %w", l.proc.Name, err)
		}
	}
	if err := l.proc.waitReady(ctx, func(*Proc) error { return healthyWith(h.TLS.HTTPClient(time.Second), "http://"+l.spec.HTTP+"/healthz") }); err != nil {
		l.proc.Kill()
		return fmt.Errorf("%s did not answer (log: %s): %w\n%s", l.proc.Name, l.proc.LogPath, err, tail(l.proc.LogPath, 10))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.procs == nil {
		h.procs = map[string]*Proc{}
	}
	h.procs[l.spec.Addr] = l.proc
	return nil
}

// Start runs `tide log serve` for r as a child process.
func (h *LocalRoles) Start(ctx context.Context, r RoleSpec) (RoleSpec, error) {
	l, err := h.launch(ctx, r)
	if err != nil {
		return r, err
	}
	return l.spec, h.serve(ctx, l, r.Deployment)
}

// StartNew starts every process of p on port 0, lays the deployment out
// on the addresses they report, saves it and hands it to each.
func (h *LocalRoles) StartNew(ctx context.Context, p Plan, save func(node.Deployment) error) (node.Deployment, error) {
	ls := make([]launched, len(p.Kinds))
	errs := make([]error, len(p.Kinds))
	var wg sync.WaitGroup
	for i, kind := range p.Kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ls[i], errs[i] = h.launch(ctx, RoleSpec{Kind: kind})
		}()
	}
	wg.Wait()
	abort := func(err error) (node.Deployment, error) {
		for _, l := range ls {
			if l.proc != nil {
				l.in.Close()
				l.proc.Kill()
			}
		}
		return node.Deployment{}, err
	}
	if err := errors.Join(errs...); err != nil {
		return abort(err)
	}
	roles, https := make([]string, len(ls)), make([]string, len(ls))
	for i, l := range ls {
		roles[i], https[i] = l.spec.Addr, l.spec.HTTP
	}
	d, err := p.Lay(roles, https)
	if err != nil {
		return abort(err)
	}
	if err := save(d); err != nil {
		return abort(err)
	}
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.serve(ctx, l, &d)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		h.StopAll(ctx)
		return node.Deployment{}, err
	}
	return d, nil
}

// Proc returns the process of role addr, or nil.
func (h *LocalRoles) Proc(addr string) *Proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.procs[addr]
}

// Stop stops role addr's process.
func (h *LocalRoles) Stop(_ context.Context, addr string) error {
	h.mu.Lock()
	p := h.procs[addr]
	delete(h.procs, addr)
	h.mu.Unlock()
	if p != nil {
		p.Stop(10 * time.Second)
	}
	return nil
}

// StopAll stops every process Local started.
func (h *LocalRoles) StopAll(context.Context) { h.Local.StopAll(10 * time.Second) }

// Containers is what ProvisionedRoles needs of a container provisioner
// (autoscale/provision/docker's Provisioner): addresses reserved ahead of
// a launch, and launches of arbitrary tide commands at them.
type Containers interface {
	Name() string
	Reserve(ctx context.Context, n int) ([]string, error)
	Release(ips ...string)
	// Run starts a container running `tide args...` at ip (one Reserve
	// handed out), named name, labelled with kind, with a CPU limit in
	// billionths of a CPU (0: the provisioner's default), and returns its
	// ID.
	Run(ctx context.Context, name, kind, ip string, nanoCPUs int64, args []string) (string, error)
	// Remove stops (SIGTERM, then kill) and removes container id.
	Remove(ctx context.Context, id string) error
}

// Container ports of a role process: each container has an address of
// its own, so every role listens on the same two ports.
const (
	RolePort     = 5057
	RoleHTTPPort = 5058
)

// ProvisionedRoles runs each role process in a container (or pod, or
// machine) of its own.
type ProvisionedRoles struct {
	C Containers
	// CPUs is each kind's CPU limit in billionths of a CPU, with "" the
	// default for kinds not listed; 0 means the provisioner's default.
	CPUs map[string]int64
	// Bind, when set, is the host role processes listen on (e.g.
	// "0.0.0.0"), with the ports of their addresses, while they keep the
	// reserved addresses as their identity: for provisioners whose
	// addresses are not the process's own, such as a Kubernetes Service's
	// ClusterIP in front of a pod. Empty: they bind their addresses.
	Bind string
	// DataDir is the role processes' --data-dir. Default /data.
	DataDir string
	// StartTimeout bounds how long Start waits for a new process to
	// answer /healthz. Default 1 minute.
	StartTimeout time.Duration
	// Healthy waits until the role process serving HTTP at httpAddr
	// answers. Default: provision.WaitHealthy.
	Healthy func(ctx context.Context, httpAddr string) error
	// Extra flags passed to every `tide log serve` (the --tls-* files, at
	// their paths in the container).
	Extra []string

	mu  sync.Mutex
	ids map[string]string // role address -> container ID
}

// Name is the provisioner's name.
func (h *ProvisionedRoles) Name() string { return h.C.Name() }

// StartNew reserves an address for each process of p, lays the
// deployment out on them, saves it, and starts every role.
func (h *ProvisionedRoles) StartNew(ctx context.Context, p Plan, save func(node.Deployment) error) (node.Deployment, error) {
	roles, https, err := h.Addrs(ctx, len(p.Kinds))
	if err != nil {
		return node.Deployment{}, err
	}
	d, err := p.Lay(roles, https)
	if err == nil {
		err = save(d)
	}
	if err != nil {
		h.C.Release(hosts(roles)...)
		return node.Deployment{}, err
	}
	return d, StartLog(ctx, h, d)
}

// hosts returns the hosts of addresses.
func hosts(addrs []string) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i], _, _ = net.SplitHostPort(a)
	}
	return out
}

// Addrs reserves n container addresses, for roles started on them.
func (h *ProvisionedRoles) Addrs(ctx context.Context, n int) ([]string, []string, error) {
	ips, err := h.C.Reserve(ctx, n)
	if err != nil {
		return nil, nil, err
	}
	roles, https := make([]string, n), make([]string, n)
	for i, ip := range ips {
		roles[i] = net.JoinHostPort(ip, fmt.Sprint(RolePort))
		https[i] = net.JoinHostPort(ip, fmt.Sprint(RoleHTTPPort))
	}
	return roles, https, nil
}

// Start launches r's container, at a newly reserved address if r has
// none, and waits until its process answers. A process that does not
// answer in StartTimeout is removed.
func (h *ProvisionedRoles) Start(ctx context.Context, r RoleSpec) (RoleSpec, error) {
	if r.Addr == "" {
		roles, https, err := h.Addrs(ctx, 1)
		if err != nil {
			return r, err
		}
		r.Addr, r.HTTP = roles[0], https[0]
	}
	return r, h.start(ctx, r)
}

func (h *ProvisionedRoles) start(ctx context.Context, r RoleSpec) error {
	ip, _, err := net.SplitHostPort(r.Addr)
	if err != nil {
		return err
	}
	var dep []string
	if r.Deployment != nil {
		b, err := json.Marshal(r.Deployment)
		if err != nil {
			return err
		}
		dep = []string{"--deployment-json", string(b)}
	}
	cpus, ok := h.CPUs[r.Kind]
	if !ok {
		cpus = h.CPUs[""]
	}
	dataDir := h.DataDir
	if dataDir == "" {
		dataDir = "/data"
	}
	args := append(serveArgs(r, dataDir, dep), h.Extra...)
	if h.Bind != "" {
		args, err = bindArgs(args, r, h.Bind)
		if err != nil {
			return err
		}
	}
	id, err := h.C.Run(ctx, roleName(r.Kind, r.Addr), r.Kind, ip, cpus, args)
	if err != nil {
		h.C.Release(ip)
		return err
	}
	h.mu.Lock()
	if h.ids == nil {
		h.ids = map[string]string{}
	}
	h.ids[r.Addr] = id
	h.mu.Unlock()
	timeout := h.StartTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	healthy := h.Healthy
	if healthy == nil {
		healthy = func(ctx context.Context, addr string) error { return provision.WaitHealthy(ctx, nil, addr) }
	}
	if err := healthy(wctx, r.HTTP); err != nil {
		// Nothing will use it: remove it rather than leave it running
		// (and, in a cloud, billed) until StopAll.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
		defer cancel()
		if rerr := h.Stop(rctx, r.Addr); rerr != nil {
			return fmt.Errorf("%s %s (%s %.20s) did not answer: %w; removing it failed too: %v", r.Kind, r.Addr, h.C.Name(), id, err, rerr)
		}
		return fmt.Errorf("%s %s (%s %.20s) did not answer, and was removed: %w", r.Kind, r.Addr, h.C.Name(), id, err)
	}
	return nil
}

// bindArgs makes the serve command line args of r listen on host, with
// the ports of r's addresses: --listen for the role, and --http-addr in
// place of r.HTTP (the address others reach the process at stays the
// deployment's).
func bindArgs(args []string, r RoleSpec, host string) ([]string, error) {
	_, rolePort, err := net.SplitHostPort(r.Addr)
	if err != nil {
		return nil, fmt.Errorf("role address %q: %w", r.Addr, err)
	}
	_, httpPort, err := net.SplitHostPort(r.HTTP)
	if err != nil {
		return nil, fmt.Errorf("HTTP address %q: %w", r.HTTP, err)
	}
	out := slices.Clone(args)
	for i := range out {
		if out[i] == "--http-addr" && i+1 < len(out) {
			out[i+1] = net.JoinHostPort(host, httpPort)
		}
	}
	return append(out, "--listen", net.JoinHostPort(host, rolePort)), nil
}

// Stop removes role addr's container.
func (h *ProvisionedRoles) Stop(ctx context.Context, addr string) error {
	h.mu.Lock()
	id, ok := h.ids[addr]
	delete(h.ids, addr)
	h.mu.Unlock()
	if !ok {
		return nil
	}
	return h.C.Remove(ctx, id)
}

// StopAll removes every container it started.
func (h *ProvisionedRoles) StopAll(ctx context.Context) {
	h.mu.Lock()
	addrs := make([]string, 0, len(h.ids))
	for a := range h.ids {
		addrs = append(addrs, a)
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Add(1)
		go func() { defer wg.Done(); h.Stop(ctx, a) }()
	}
	wg.Wait()
}

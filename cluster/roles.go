package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"tide/autoscale/provision"
	"tide/paxos/node"
)

// RoleHost runs the role processes of a tide log: local child processes
// (LocalRoles) or containers (ProvisionedRoles over a provisioner such as
// Docker's). LogControl starts and stops roles through it.
type RoleHost interface {
	// Name says where roles run ("local", "docker").
	Name() string
	// Addrs returns n pairs of addresses for new role processes: where
	// each role listens for the log's messages, and where its process
	// serves HTTP (/healthz, /status, /metrics).
	Addrs(ctx context.Context, n int) (roles, https []string, err error)
	// Start runs one role process and returns once it answers /healthz.
	Start(ctx context.Context, r RoleSpec) error
	// Stop stops the process of role addr: SIGTERM, then a kill after a
	// grace period. A role it does not run is stopped already.
	Stop(ctx context.Context, addr string) error
	// StopAll stops every role process it started.
	StopAll(ctx context.Context)
}

// RoleSpec says how to start one role process.
type RoleSpec struct {
	Kind string // a node.Kinds kind: batcher, leader, proxy, acceptor, ...
	Addr string // where the role listens (from Addrs)
	HTTP string // where its process serves HTTP (from Addrs)
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

// serveArgs is the `tide log serve` command line of r, keeping state
// under dataDir; deployment is how the initial configuration reaches the
// process (a --deployment or --deployment-json flag and its value).
func serveArgs(r RoleSpec, dataDir string, deployment []string) []string {
	args := []string{"log", "serve", "--role", r.Addr, "--http-addr", r.HTTP, "--data-dir", dataDir}
	if r.Deployment != nil {
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
			if err := host.Start(ctx, RoleSpec{Kind: kind, Addr: a, HTTP: d.HTTP[a], Deployment: &d, Control: d.Control}); err != nil {
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

// NewDeploymentOn lays out shape s on addresses host hands out.
func NewDeploymentOn(ctx context.Context, host RoleHost, s node.Shape) (node.Deployment, error) {
	if err := s.Validate(); err != nil {
		return node.Deployment{}, err
	}
	roles, https, err := host.Addrs(ctx, s.Count())
	if err != nil {
		return node.Deployment{}, err
	}
	return node.LayoutDeployment(s, roles, https)
}

// LocalRoles runs role processes as children of this process, through
// Local, each on loopback ports of Host.
type LocalRoles struct {
	Local *Local
	// DepPath is the deployment file initial roles read; StartLog's
	// caller saves the deployment there first.
	DepPath  string
	StateDir string
	Host     string // default 127.0.0.1

	mu    sync.Mutex
	procs map[string]*Proc
}

// Name is "local".
func (h *LocalRoles) Name() string { return "local" }

// Addrs picks free ports on Host.
func (h *LocalRoles) Addrs(_ context.Context, n int) ([]string, []string, error) {
	host := h.Host
	if host == "" {
		host = "127.0.0.1"
	}
	a, err := node.FreeAddrs(host, 2*n)
	if err != nil {
		return nil, nil, err
	}
	return a[:n], a[n:], nil
}

// Start runs `tide log serve` for r as a child process, on one CPU at a
// time (--procs 1): local roles share the machine, and with Go's default
// each of them keeps threads waking one another on every core, which
// costs about a sixth more CPU per command (tide bench log on 2 cores, 14
// role processes).
func (h *LocalRoles) Start(ctx context.Context, r RoleSpec) error {
	args := append(serveArgs(r, h.StateDir, []string{"--deployment", h.DepPath}), "--procs", "1")
	p, err := h.Local.Start(ctx, roleName(r.Kind, r.Addr), args, "http://"+r.HTTP+"/healthz")
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.procs == nil {
		h.procs = map[string]*Proc{}
	}
	h.procs[r.Addr] = p
	return nil
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

	mu  sync.Mutex
	ids map[string]string // role address -> container ID
}

// Name is the provisioner's name.
func (h *ProvisionedRoles) Name() string { return h.C.Name() }

// Addrs reserves n container addresses.
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

// Start launches r's container and waits until its process answers. A
// process that does not answer in StartTimeout is removed.
func (h *ProvisionedRoles) Start(ctx context.Context, r RoleSpec) error {
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
	args := serveArgs(r, dataDir, dep)
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

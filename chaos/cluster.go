// Package chaos runs tide storage nodes and tide log roles in Docker
// containers, injects the faults that break real clusters (partitions,
// pauses, kill -9, restarts, a full disk, joins and leaves, a leader cut
// off) while clients read and write through them, and checks every
// history: porcupine for linearizability, that nothing acknowledged was
// lost, and that the log applied no command twice.
//
// A scenario is a declarative value (Scenario): the nodes, the workloads
// and a timeline of faults. Run starts a fresh cluster for it, runs it and
// returns its Report.
package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"tide/autoscale"
	"tide/autoscale/provision"
	dockerprov "tide/autoscale/provision/docker"
	"tide/cluster"
	"tide/paxos/node"
)

// RESPPort is where every node of a chaos cluster serves the Redis
// protocol.
const RESPPort = 6379

// Node is one tide node of a cluster, or one role process of its log: a
// container with a fixed address.
type Node struct {
	// Name is n1, n2, ... in launch order for a storage node; a log
	// role's is its kind and number (acceptor1, leader2, ...). Faults
	// name nodes by it.
	Name string
	// ID is the container's ID.
	ID string
	// HTTP, Chord and RESP are a storage node's addresses (IP:port); a
	// log role has HTTP (its process's) and Role (its address in the
	// log's configuration).
	HTTP, Chord, RESP string
	Role              string

	mu          sync.Mutex
	gone        bool // left the ring or removed: no client uses it
	partitioned bool
	paused      bool
	down        bool // killed or stopped
	// lastLogs is what the node printed before it left and its
	// container went.
	lastLogs string
}

// Up reports whether clients should try the node: it is in the cluster
// and running (a partitioned or paused node is up: clients find out).
func (n *Node) Up() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.gone && !n.down
}

func (n *Node) set(f func(n *Node)) {
	n.mu.Lock()
	f(n)
	n.mu.Unlock()
}

// Cluster is a ring of tide nodes in containers of one Docker engine, on
// a user-defined bridge network of its own.
type Cluster struct {
	prov    *dockerprov.Provisioner
	cli     *client.Client
	network string
	http    *http.Client

	mu    sync.Mutex
	named int // storage nodes named so far
	nodes []*Node
	roles []*Node // the log's role processes, if it runs one
	// rc runs the log's role containers and logCtl changes its
	// configuration, once StartLog has started it.
	rc     *roleContainers
	logCtl *cluster.LogControl
}

// ClusterConfig says how to run the cluster's nodes.
type ClusterConfig struct {
	// Image is the node image (dockerprov.BuildImage), e.g.
	// tide-node:latest.
	Image string
	// Name names the cluster's containers and network; it must be unique
	// on the engine while the cluster runs.
	Name string
	// Replicas is N (and the files' replica count); 0 means tide's
	// default (3).
	Replicas int
	// DiskBytes, when above 0, gives each node a tmpfs of that size as
	// its data directory, so that the disk can fill up.
	DiskBytes int64
	// Capacity, when above 0, is the capacity each node believes its disk
	// has (--capacity); above DiskBytes, the disk fills before the node
	// refuses writes for being full.
	Capacity int64
	// NanoCPUs limits each node's CPU (billionths); 0 means no limit.
	NanoCPUs int64
	// Client is the engine client; nil connects from the environment.
	Client *client.Client
}

// NewCluster makes the network; Start launches the nodes.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Name == "" || cfg.Image == "" {
		return nil, errors.New("chaos: a cluster needs a name and an image")
	}
	prov, err := dockerprov.New(dockerprov.Config{
		Image:       cfg.Image,
		Cluster:     cfg.Name,
		Replicas:    cfg.Replicas,
		DataTmpfs:   cfg.DiskBytes,
		Capacity:    cfg.Capacity,
		NanoCPUs:    cfg.NanoCPUs,
		Extra:       []string{"--resp-addr", "0.0.0.0:" + strconv.Itoa(RESPPort)},
		StopTimeout: 10 * time.Second,
		Client:      cfg.Client,
	})
	if err != nil {
		return nil, err
	}
	return &Cluster{prov: prov, cli: prov.Client(), network: prov.Config().Network, http: &http.Client{Timeout: 5 * time.Second}}, nil
}

// Nodes returns every node launched, in launch order.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// all returns the storage nodes and the log's roles.
func (c *Cluster) all() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Concat(c.nodes, c.roles)
}

// Roles returns the log's role processes, in the order of the log's
// configuration (matchmakers, batchers, leaders, proxy leaders,
// acceptors, replicas, unbatchers).
func (c *Cluster) Roles() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.roles)
}

// Live returns the storage nodes clients should use.
func (c *Cluster) Live() []*Node {
	return slices.DeleteFunc(c.Nodes(), func(n *Node) bool { return !n.Up() })
}

// Node returns the node or log role named name.
func (c *Cluster) Node(name string) (*Node, error) {
	for _, n := range c.all() {
		if n.Name == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("chaos: no node %s", name)
}

// Start launches n nodes, one at a time, the first making the ring and
// the others joining it, and waits until every node sees all of them.
func (c *Cluster) Start(ctx context.Context, n int) error {
	for range n {
		if _, err := c.Join(ctx); err != nil {
			return err
		}
	}
	return c.WaitRing(ctx)
}

// Join launches a node that joins the ring through a live member (or
// makes the ring if there is none) and waits until it serves.
func (c *Cluster) Join(ctx context.Context) (*Node, error) {
	name := c.nextName()
	spec := provision.Spec{Name: name}
	if live := c.Live(); len(live) > 0 {
		spec.Join = live[0].Chord
	}
	in, err := c.prov.Launch(ctx, spec)
	if err != nil {
		return nil, err
	}
	node := c.register(name, in)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := provision.WaitHealthy(wctx, nil, node.HTTP); err != nil {
		logs, _ := c.prov.Logs(ctx, in.ID, 20)
		return nil, fmt.Errorf("chaos: %s never served: %w\n%s", name, err, logs)
	}
	return node, nil
}

// WaitSettled waits until every live node keeps a single ring view in
// force (tide_kv_ring_views): the data movement of the membership
// changes so far is over. A fresh cluster's joins leave older views in
// force for at least the transition window.
func (c *Cluster) WaitSettled(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last string
	for {
		ok := true
		for _, n := range c.Live() {
			views, err := c.ringViews(ctx, n)
			if err != nil || views > 1 {
				ok, last = false, fmt.Sprintf("%s keeps %.0f views in force (%v)", n.Name, views, err)
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chaos: the ring views did not settle: %s", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (c *Cluster) ringViews(ctx context.Context, n *Node) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTP+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	o, err := autoscale.ParseMetrics(resp.Body)
	return o.RingViews, err
}

// nextName names the next storage node: n1, n2, ...
func (c *Cluster) nextName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.named++
	return "n" + strconv.Itoa(c.named)
}

// register adds a launched storage node to the cluster's list, where
// clients find it.
func (c *Cluster) register(name string, in provision.Instance) *Node {
	host := in.HTTPAddr[:len(in.HTTPAddr)-len(strconv.Itoa(dockerprov.HTTPPort))-1]
	node := &Node{Name: name, ID: in.ID, HTTP: in.HTTPAddr, Chord: in.ChordAddr, RESP: host + ":" + strconv.Itoa(RESPPort)}
	c.mu.Lock()
	c.nodes = append(c.nodes, node)
	c.mu.Unlock()
	return node
}

// StartLog starts a tide log of shape s with every role process in a
// container of its own on the cluster's network (cluster.ProvisionedRoles
// over the cluster's provisioner, as `tide log up --provisioner docker`
// runs it), and returns its deployment once every role answers. Each
// role becomes a node named by its kind and number: acceptor1, proxy2.
func (c *Cluster) StartLog(ctx context.Context, s node.Shape) (node.Deployment, error) {
	rc := &roleContainers{Provisioner: c.prov, ids: map[string]string{}}
	host := &cluster.ProvisionedRoles{C: rc}
	d, err := host.StartNew(ctx, cluster.ShapePlan(s, ""), func(node.Deployment) error { return nil })
	if err != nil {
		return d, fmt.Errorf("chaos: start the log: %w", err)
	}
	c.mu.Lock()
	c.rc, c.logCtl = rc, cluster.NewLogControl(host, d, "")
	c.mu.Unlock()
	return d, c.syncRoles(d)
}

// syncRoles brings the cluster's list of role nodes in line with d: a
// role new to it becomes a node named by its kind and the next number of
// that kind (acceptor4), a role d no longer has is gone.
func (c *Cluster) syncRoles(d node.Deployment) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	count := map[string]int{}
	known := map[string]bool{}
	for _, n := range c.roles {
		known[n.Role] = true
		kind := strings.TrimRight(n.Name, "0123456789")
		num, _ := strconv.Atoi(n.Name[len(kind):])
		count[kind] = max(count[kind], num)
	}
	current := map[string]bool{}
	for _, a := range d.Roles() {
		current[a] = true
		if known[a] {
			continue
		}
		kind, _, err := d.RoleOf(a)
		if err != nil {
			return err
		}
		count[kind]++
		ip, _, _ := net.SplitHostPort(a)
		c.roles = append(c.roles, &Node{Name: kind + strconv.Itoa(count[kind]), ID: c.rc.id(ip), HTTP: d.HTTP[a], Role: a})
	}
	for _, n := range c.roles {
		if !current[n.Role] {
			n.set(func(n *Node) { n.gone = true })
		}
	}
	return nil
}

// LogControl changes the running log's configuration (as `tide log up`
// serves `tide log scale` and `tide log replace`); nil before StartLog.
func (c *Cluster) LogControl() *cluster.LogControl {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logCtl
}

// roleContainers is the cluster's provisioner, remembering the container
// it runs at each address.
type roleContainers struct {
	*dockerprov.Provisioner
	mu  sync.Mutex
	ids map[string]string // IP -> container ID
}

func (r *roleContainers) Run(ctx context.Context, name, kind, ip string, nanoCPUs int64, args []string) (string, error) {
	id, err := r.Provisioner.Run(ctx, name, kind, ip, nanoCPUs, args)
	if err == nil {
		r.mu.Lock()
		r.ids[ip] = id
		r.mu.Unlock()
	}
	return id, err
}

func (r *roleContainers) id(ip string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[ip]
}

// Status returns what the role process n reports of its roles.
func (c *Cluster) Status(ctx context.Context, n *Node) ([]node.Status, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTP+"/status", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("chaos: %s /status: %s", n.Name, resp.Status)
	}
	var st []node.Status
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// WaitRing waits until every live node's ring lists exactly the live
// nodes.
func (c *Cluster) WaitRing(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last string
	for {
		live := c.Live()
		want := make([]string, 0, len(live))
		for _, n := range live {
			want = append(want, n.HTTP)
		}
		slices.Sort(want)
		ok := true
		for _, n := range live {
			got, err := c.ringOf(ctx, n)
			if err != nil || !slices.Equal(got, want) {
				ok, last = false, fmt.Sprintf("%s sees %v (%v), want %v", n.Name, got, err, want)
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chaos: the ring did not settle: %s", last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// ringOf returns the HTTP addresses of the members n's KV ring lists,
// sorted.
func (c *Cluster) ringOf(ctx context.Context, n *Node) ([]string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTP+"/hash_ring", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Ring map[string]string `json:"ring"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	var out []string
	for _, a := range r.Ring {
		out = append(out, a)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Disconnect cuts n off the cluster's network (both ways: the host, which
// the clients run on, loses it too).
func (c *Cluster) Disconnect(ctx context.Context, n *Node) error {
	if _, err := c.cli.NetworkDisconnect(ctx, c.network, client.NetworkDisconnectOptions{Container: n.ID, Force: true}); err != nil {
		return fmt.Errorf("chaos: disconnect %s: %w", n.Name, err)
	}
	n.set(func(n *Node) { n.partitioned = true })
	return nil
}

// Reconnect attaches n to the network again at its address.
func (c *Cluster) Reconnect(ctx context.Context, n *Node) error {
	_, err := c.cli.NetworkConnect(ctx, c.network, client.NetworkConnectOptions{Container: n.ID, EndpointConfig: endpointAt(n)})
	if err != nil {
		return fmt.Errorf("chaos: reconnect %s: %w", n.Name, err)
	}
	n.set(func(n *Node) { n.partitioned = false })
	return nil
}

// Pause freezes every process of n (docker pause: the cgroup freezer, as
// SIGSTOP would): it holds its connections and answers nothing.
func (c *Cluster) Pause(ctx context.Context, n *Node) error {
	if _, err := c.cli.ContainerPause(ctx, n.ID, client.ContainerPauseOptions{}); err != nil {
		return fmt.Errorf("chaos: pause %s: %w", n.Name, err)
	}
	n.set(func(n *Node) { n.paused = true })
	return nil
}

// Unpause lets n run again.
func (c *Cluster) Unpause(ctx context.Context, n *Node) error {
	if _, err := c.cli.ContainerUnpause(ctx, n.ID, client.ContainerUnpauseOptions{}); err != nil {
		return fmt.Errorf("chaos: unpause %s: %w", n.Name, err)
	}
	n.set(func(n *Node) { n.paused = false })
	return nil
}

// Kill sends n SIGKILL: it dies without a chance to flush or tell anyone.
func (c *Cluster) Kill(ctx context.Context, n *Node) error {
	if _, err := c.cli.ContainerKill(ctx, n.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("chaos: kill %s: %w", n.Name, err)
	}
	n.set(func(n *Node) { n.down = true })
	return nil
}

// Revive starts a killed node again on its data and waits until it
// serves.
func (c *Cluster) Revive(ctx context.Context, n *Node) error {
	// The engine may still be reaping the killed container.
	w := c.cli.ContainerWait(ctx, n.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-w.Result:
	case <-w.Error:
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, err := c.cli.ContainerStart(ctx, n.ID, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("chaos: start %s: %w", n.Name, err)
	}
	return c.waitServing(ctx, n)
}

// Restart stops n gracefully (SIGTERM) and starts it again on its data.
func (c *Cluster) Restart(ctx context.Context, n *Node) error {
	timeout := 10
	n.set(func(n *Node) { n.down = true })
	if _, err := c.cli.ContainerRestart(ctx, n.ID, client.ContainerRestartOptions{Timeout: &timeout}); err != nil {
		return fmt.Errorf("chaos: restart %s: %w", n.Name, err)
	}
	return c.waitServing(ctx, n)
}

func (c *Cluster) waitServing(ctx context.Context, n *Node) error {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := provision.WaitHealthy(wctx, nil, n.HTTP); err != nil {
		logs, _ := c.prov.Logs(ctx, n.ID, 20)
		return fmt.Errorf("chaos: %s never served again: %w\n%s", n.Name, err, logs)
	}
	n.set(func(n *Node) { n.down = false })
	return nil
}

// Leave drains n gracefully out of the ring (its data handed off) and
// removes its container.
func (c *Cluster) Leave(ctx context.Context, n *Node) error {
	in := provision.Instance{ID: n.ID, HTTPAddr: n.HTTP}
	n.set(func(n *Node) { n.gone = true })
	if err := c.prov.Drain(ctx, in); err != nil {
		return fmt.Errorf("chaos: leave %s: %w", n.Name, err)
	}
	// Its log goes with its container: kept for the report.
	if logs, err := c.prov.Logs(ctx, n.ID, keptLogLines); err == nil {
		n.set(func(n *Node) { n.lastLogs = logs })
	}
	return c.prov.Terminate(ctx, in)
}

// keptLogLines is how much of a leaving node's log is kept.
const keptLogLines = 5000

// Logs returns the last lines a node printed.
func (c *Cluster) Logs(ctx context.Context, n *Node, tail int) string {
	s, err := c.prov.Logs(ctx, n.ID, tail)
	if err != nil {
		n.mu.Lock()
		kept := n.lastLogs
		n.mu.Unlock()
		if kept != "" {
			lines := strings.SplitAfter(kept, "\n")
			return strings.Join(lines[max(0, len(lines)-tail-1):], "")
		}
		return err.Error()
	}
	return s
}

// Heal undoes what can be undone of every fault still in force: it
// unpauses, reconnects and starts again every node that is paused,
// partitioned or killed.
func (c *Cluster) Heal(ctx context.Context) error {
	var errs []error
	for _, n := range c.all() {
		n.mu.Lock()
		gone, paused, part, down := n.gone, n.paused, n.partitioned, n.down
		n.mu.Unlock()
		if gone {
			continue
		}
		if paused {
			errs = append(errs, c.Unpause(ctx, n))
		}
		if part {
			errs = append(errs, c.Reconnect(ctx, n))
		}
		if down {
			errs = append(errs, c.Revive(ctx, n))
		}
	}
	return errors.Join(errs...)
}

// Close removes every container of the cluster and its network.
func (c *Cluster) Close(ctx context.Context) error {
	err := c.prov.Cleanup(ctx)
	if err != nil && cerrdefs.IsNotFound(err) {
		err = nil
	}
	return errors.Join(err, c.prov.Close())
}

// endpointAt is n's endpoint on the cluster's network: its fixed address,
// which the ring knows it by.
func endpointAt(n *Node) *network.EndpointSettings {
	ap, err := netip.ParseAddrPort(n.HTTP)
	if err != nil {
		return nil
	}
	return &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ap.Addr()}}
}

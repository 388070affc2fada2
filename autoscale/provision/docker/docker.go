// Package docker runs tide storage nodes as Docker containers on one
// engine, through the Engine API.
//
// Every node runs in its own container, from an image built FROM scratch
// around a static tide binary (BuildImage), on a user-defined bridge
// network. Each container gets a fixed IP from the network's subnet, which
// it advertises to the ring, so other containers and the host (on Linux,
// the host routes to bridge networks directly) reach it at the same
// address: HTTPAddr is IP:5058 and ChordAddr IP:5057.
//
// The engine must therefore run on the controller's machine (a Linux
// host; Docker Desktop's VM does not route its bridge networks to the
// host). Everything List needs is kept in container labels, so a
// restarted controller finds its nodes again.
package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"tide/autoscale/provision"
)

// Container ports of every node.
const (
	ChordPort = 5057
	HTTPPort  = 5058
)

// DataDir is where a node keeps its data inside the container: an
// anonymous volume, removed with the container.
const DataDir = "/data"

// Labels on the containers and the network this package creates.
const (
	// LabelManaged marks images, networks and containers made here.
	LabelManaged = "tide.managed"
	// LabelCluster names the cluster (Config.Cluster) a container or
	// network belongs to; List and Cleanup see only their cluster's.
	LabelCluster = "tide.cluster"

	labelName      = "tide.node.name"
	labelIP        = "tide.node.ip"
	labelHTTPAddr  = "tide.node.http-addr"
	labelChordAddr = "tide.node.chord-addr"
	labelJoin      = "tide.node.join"
	labelKind      = "tide.node.kind"
)

// Defaults for Config.
const (
	DefaultImage       = "tide-node:latest"
	DefaultCluster     = "tide"
	DefaultStopTimeout = 10 * time.Second
)

// Config says where and how nodes run.
type Config struct {
	// Image is the node image tag (built by BuildImage). Default
	// DefaultImage.
	Image string
	// Cluster identifies this cluster's containers (label tide.cluster);
	// List, Cleanup and Terminate touch no others. Default DefaultCluster.
	Cluster string
	// Network is the user-defined bridge network the nodes share. It is
	// created, labelled as tide's, if missing. A network that exists
	// already must have a user-configured IPv4 subnet. Default
	// "tide-<Cluster>".
	Network string
	// Subnet is the IPv4 subnet (CIDR) for a network this package creates,
	// at most a /28. Nodes get fixed addresses from its lower half; the
	// engine hands the upper half to any other container attached. Empty
	// picks a free /24 in 10.213.0.0/16.
	Subnet string
	// NamePrefix is prepended to Spec.Name to name containers. Default
	// "<Cluster>-".
	NamePrefix string

	// NanoCPUs limits each container's CPU, in billionths of a CPU
	// (500000000 is half a CPU); 0 means no limit.
	NanoCPUs int64
	// Memory limits each container's memory in bytes; 0 means no limit.
	Memory int64
	// DataTmpfs, when above 0, mounts a tmpfs of that many bytes at the
	// data directory instead of a volume: a disk that fills up (the chaos
	// suite's full-disk fault). Its data does not survive a restart.
	DataTmpfs int64

	// Capacity and Replicas apply to nodes whose Spec leaves them 0.
	Capacity int64
	Replicas int
	// Extra flags for every node, before Spec.Extra.
	Extra []string
	// StopTimeout is how long Terminate lets a node shut down after
	// SIGTERM before the engine kills it. Default DefaultStopTimeout.
	StopTimeout time.Duration
	// Restart is the engine's restart policy for node containers: "" or
	// "no" (the controller replaces failed nodes), or "on-failure" (the
	// engine restarts a node that crashed; one that drained exits 0 and
	// stays down). "always" is refused: it would bring drained nodes back.
	Restart string

	// Client is the Engine API client; nil connects with NewClient, and
	// Close then closes it.
	Client *client.Client
	// HTTPClient reaches the nodes (Drain); nil uses a plain client.
	HTTPClient *http.Client
	// Files are copied into every container before it starts, keyed by
	// their absolute path there, owned by the container's user and
	// readable by it alone (mode 0400): TLS material, say, whose key on
	// the host only its owner may read.
	Files map[string][]byte
}

// Provisioner runs tide nodes as containers. Its methods are safe for
// concurrent use.
type Provisioner struct {
	cfg     Config
	cli     *client.Client
	ownCli  bool
	http    *http.Client
	netID   string
	ipam    ipPool
	mu      sync.Mutex // serializes address picks and container creation
	next    netip.Addr // where the next address search starts
	dmu     sync.Mutex
	drained map[string]bool // containers being drained, by ID
	// reserved holds addresses Reserve handed out that no container
	// holds yet; pickIP skips them. Guarded by mu.
	reserved map[netip.Addr]bool
}

var (
	_ provision.Provisioner = (*Provisioner)(nil)
	_ provision.LogTailer   = (*Provisioner)(nil)
)

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// setupTimeout bounds the engine calls New makes.
const setupTimeout = 30 * time.Second

// New checks cfg, connects to the engine, and makes sure the network
// exists.
func New(cfg Config) (*Provisioner, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	p := &Provisioner{cfg: cfg, cli: cfg.Client, http: cfg.HTTPClient, drained: map[string]bool{}, reserved: map[netip.Addr]bool{}}
	if p.http == nil {
		p.http = &http.Client{}
	}
	if p.cli == nil {
		c, err := NewClient()
		if err != nil {
			return nil, fmt.Errorf("docker: connect to the engine: %w", err)
		}
		p.cli, p.ownCli = c, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if _, err := p.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		p.Close()
		return nil, fmt.Errorf("docker: engine at %s unreachable: %w", p.cli.DaemonHost(), err)
	}
	if err := p.ensureNetwork(ctx); err != nil {
		p.Close()
		return nil, err
	}
	if err := p.initCursor(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (c *Config) fill() error {
	if c.Image == "" {
		c.Image = DefaultImage
	}
	if c.Cluster == "" {
		c.Cluster = DefaultCluster
	}
	if !nameRE.MatchString(c.Cluster) {
		return fmt.Errorf("docker: cluster %q: want letters, digits, '_', '.' or '-', starting with a letter or digit", c.Cluster)
	}
	if c.Network == "" {
		c.Network = "tide-" + c.Cluster
	}
	if !nameRE.MatchString(c.Network) {
		return fmt.Errorf("docker: network name %q: want letters, digits, '_', '.' or '-', starting with a letter or digit", c.Network)
	}
	if c.NamePrefix == "" {
		c.NamePrefix = c.Cluster + "-"
	}
	if !nameRE.MatchString(c.NamePrefix) {
		return fmt.Errorf("docker: name prefix %q: want letters, digits, '_', '.' or '-', starting with a letter or digit", c.NamePrefix)
	}
	if c.Subnet != "" {
		pfx, err := netip.ParsePrefix(c.Subnet)
		if err != nil || !pfx.Addr().Is4() {
			return fmt.Errorf("docker: subnet %q: want an IPv4 CIDR such as 10.213.7.0/24", c.Subnet)
		}
		if pfx.Bits() > 28 || pfx.Bits() < 8 {
			return fmt.Errorf("docker: subnet %q: want a prefix between /8 and /28", c.Subnet)
		}
		if pfx.Masked() != pfx {
			return fmt.Errorf("docker: subnet %q has host bits set (did you mean %s?)", c.Subnet, pfx.Masked())
		}
	}
	if c.NanoCPUs < 0 || c.Memory < 0 || c.DataTmpfs < 0 || c.Capacity < 0 || c.Replicas < 0 || c.StopTimeout < 0 {
		return errors.New("docker: NanoCPUs, Memory, DataTmpfs, Capacity, Replicas and StopTimeout must not be negative")
	}
	if c.Memory > 0 && c.Memory < 6<<20 {
		return fmt.Errorf("docker: memory limit %d bytes is below the engine's minimum of 6MiB", c.Memory)
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	switch container.RestartPolicyMode(c.Restart) {
	case "", container.RestartPolicyDisabled, container.RestartPolicyOnFailure:
	default:
		return fmt.Errorf("docker: restart policy %q: want no or on-failure (always and unless-stopped would restart drained nodes)", c.Restart)
	}
	return nil
}

// Name is "docker".
func (p *Provisioner) Name() string { return "docker" }

// Config returns the configuration in use, defaults filled in.
func (p *Provisioner) Config() Config { return p.cfg }

// Client returns the Engine API client.
func (p *Provisioner) Client() *client.Client { return p.cli }

// Close releases the engine client if New made it. Containers keep
// running.
func (p *Provisioner) Close() error {
	if p.ownCli && p.cli != nil {
		return p.cli.Close()
	}
	return nil
}

// Launch creates and starts a node container on the network, with a fixed
// address it advertises to the ring. It returns once the container runs;
// the node may not serve yet (provision.WaitHealthy waits for that).
func (p *Provisioner) Launch(ctx context.Context, s provision.Spec) (provision.Instance, error) {
	name := s.Name
	if name == "" {
		var b [4]byte
		rand.Read(b[:])
		name = "node-" + hex.EncodeToString(b[:])
	}
	if !nameRE.MatchString(name) {
		return provision.Instance{}, fmt.Errorf("docker: node name %q: want letters, digits, '_', '.' or '-', starting with a letter or digit", s.Name)
	}
	if s.Token != "" {
		if _, err := strconv.ParseUint(s.Token, 10, 32); err != nil {
			return provision.Instance{}, fmt.Errorf("docker: token %q: want an integer in [0, 4294967295]", s.Token)
		}
	}
	if s.Capacity < 0 || s.Replicas < 0 || s.NanoCPUs < 0 {
		return provision.Instance{}, fmt.Errorf("docker: capacity (%d), replicas (%d) and CPUs (%d) must not be negative", s.Capacity, s.Replicas, s.NanoCPUs)
	}
	cname := p.cfg.NamePrefix + name

	p.mu.Lock()
	defer p.mu.Unlock()
	if s.IP != "" {
		ip, err := netip.ParseAddr(s.IP)
		if err != nil || !p.ipam.usable(ip) {
			return provision.Instance{}, fmt.Errorf("docker: launch %s: address %q is not one of network %s's node addresses (%s-%s)", cname, s.IP, p.cfg.Network, p.ipam.first, p.ipam.last)
		}
		in, err := p.launchAt(ctx, s, name, cname, ip)
		if err == nil {
			delete(p.reserved, ip)
		}
		return in, err
	}
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		ip, err := p.pickIP(ctx)
		if err != nil {
			return provision.Instance{}, err
		}
		in, err := p.launchAt(ctx, s, name, cname, ip)
		if err == nil {
			return in, nil
		}
		if !errors.Is(err, errAddrInUse) {
			return provision.Instance{}, err
		}
		lastErr = err // another engine client took the address: pick again
	}
	return provision.Instance{}, lastErr
}

var errAddrInUse = errors.New("address already in use")

func (p *Provisioner) launchAt(ctx context.Context, s provision.Spec, name, cname string, ip netip.Addr) (provision.Instance, error) {
	host := ip.String()
	httpAddr := netip.AddrPortFrom(ip, HTTPPort).String()
	chordAddr := netip.AddrPortFrom(ip, ChordPort).String()
	labels := map[string]string{
		LabelManaged:   "true",
		LabelCluster:   p.cfg.Cluster,
		labelName:      name,
		labelIP:        host,
		labelHTTPAddr:  httpAddr,
		labelChordAddr: chordAddr,
	}
	if s.Join != "" && len(s.Args) == 0 {
		labels[labelJoin] = s.Join
	}
	kind := s.Kind
	if kind == "" {
		kind = "node"
	}
	labels[labelKind] = kind
	args := p.nodeArgs(s, host)
	if len(s.Args) > 0 {
		args = slices.Clone(s.Args)
	}
	cpus := p.cfg.NanoCPUs
	if s.NanoCPUs > 0 {
		cpus = s.NanoCPUs
	}
	stop := int(p.cfg.StopTimeout.Round(time.Second) / time.Second)
	if stop < 1 {
		stop = 1
	}
	cfg := &container.Config{
		Hostname:    cname,
		Image:       p.cfg.Image,
		Cmd:         args,
		Labels:      labels,
		StopTimeout: &stop,
	}
	hc := &container.HostConfig{
		NetworkMode:   container.NetworkMode(p.cfg.Network),
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyMode(p.cfg.Restart)},
		Resources:     container.Resources{NanoCPUs: cpus, Memory: p.cfg.Memory},
		LogConfig:     container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "2"}},
	}
	if hc.RestartPolicy.Name == "" {
		hc.RestartPolicy.Name = container.RestartPolicyDisabled
	}
	if p.cfg.DataTmpfs > 0 {
		hc.Tmpfs = map[string]string{DataDir: fmt.Sprintf("size=%d,uid=%d,gid=%d,mode=0700", p.cfg.DataTmpfs, nodeUID, nodeUID)}
	}
	nc := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		p.cfg.Network: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip}},
	}}
	created, err := p.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: cname, Config: cfg, HostConfig: hc, NetworkingConfig: nc,
	})
	if err != nil {
		switch {
		case cerrdefs.IsNotFound(err) && strings.Contains(strings.ToLower(err.Error()), "image"):
			return provision.Instance{}, fmt.Errorf("docker: launch %s: image %q not found on the engine (build it with BuildImage; nothing is pulled): %w", cname, p.cfg.Image, err)
		case cerrdefs.IsConflict(err):
			return provision.Instance{}, fmt.Errorf("docker: launch %s: a container with that name exists already: %w", cname, err)
		case isAddrInUse(err):
			return provision.Instance{}, fmt.Errorf("docker: launch %s at %s: %w", cname, host, errAddrInUse)
		}
		return provision.Instance{}, fmt.Errorf("docker: launch %s: create container: %w", cname, err)
	}
	if len(p.cfg.Files) > 0 {
		if _, err := p.cli.CopyToContainer(ctx, created.ID, client.CopyToContainerOptions{DestinationPath: "/", Content: filesTar(p.cfg.Files)}); err != nil {
			rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			_, _ = p.cli.ContainerRemove(rmCtx, created.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			cancel()
			return provision.Instance{}, fmt.Errorf("docker: launch %s: copy files into the container: %w", cname, err)
		}
	}
	if _, err := p.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		rmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		_, _ = p.cli.ContainerRemove(rmCtx, created.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		cancel()
		if isAddrInUse(err) {
			return provision.Instance{}, fmt.Errorf("docker: launch %s at %s: %w", cname, host, errAddrInUse)
		}
		return provision.Instance{}, fmt.Errorf("docker: launch %s: start container: %w", cname, err)
	}
	return provision.Instance{
		ID:        created.ID,
		HTTPAddr:  httpAddr,
		ChordAddr: chordAddr,
		State:     provision.StatePending,
		Kind:      kind,
		Started:   time.Now(),
	}, nil
}

// Run launches a container running `tide args...` at ip (one Reserve
// handed out), labelled with kind, with a CPU limit in billionths of a
// CPU (0: Config.NanoCPUs), and returns its ID: a tide log role process
// for cluster.ProvisionedRoles.
func (p *Provisioner) Run(ctx context.Context, name, kind, ip string, nanoCPUs int64, args []string) (string, error) {
	in, err := p.Launch(ctx, provision.Spec{Name: name, Kind: kind, IP: ip, NanoCPUs: nanoCPUs, Args: args})
	return in.ID, err
}

// Remove stops and removes container id (Terminate).
func (p *Provisioner) Remove(ctx context.Context, id string) error {
	return p.Terminate(ctx, provision.Instance{ID: id})
}

// Reserve hands out n free addresses of the network for Spec.IP, so that
// a caller can name instances' addresses (in a tide log's configuration)
// before it launches them. Addresses stay reserved until a launch takes
// them or Release returns them.
func (p *Provisioner) Reserve(ctx context.Context, n int) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for range n {
		ip, err := p.pickIP(ctx)
		if err != nil {
			for _, a := range out {
				delete(p.reserved, netip.MustParseAddr(a))
			}
			return nil, err
		}
		p.reserved[ip] = true
		out = append(out, ip.String())
	}
	return out, nil
}

// Release returns reserved addresses that no instance took.
func (p *Provisioner) Release(ips ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range ips {
		if ip, err := netip.ParseAddr(a); err == nil {
			delete(p.reserved, ip)
		}
	}
}

func isAddrInUse(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "address already in use") || strings.Contains(s, "address is already in use")
}

// nodeArgs is the `tide node` command line of a container advertising
// host.
func (p *Provisioner) nodeArgs(s provision.Spec, host string) []string {
	args := []string{"node",
		"--chord-addr", fmt.Sprintf("0.0.0.0:%d", ChordPort),
		"--http-addr", fmt.Sprintf("0.0.0.0:%d", HTTPPort),
		"--advertise", host,
		"--data-dir", DataDir,
	}
	if !slices.Contains(p.cfg.Extra, "--tls-ca") && !slices.Contains(s.Extra, "--tls-ca") {
		// The container's network address is not loopback: plain text
		// there needs --insecure. With --tls-* (Config.Files and Extra,
		// or the launch flags) the node takes mutual TLS only.
		args = append(args, "--insecure")
	}
	if s.Join != "" {
		args = append(args, "--join", s.Join)
	}
	if s.Token != "" {
		args = append(args, "--token", s.Token)
	}
	capacity := s.Capacity
	if capacity == 0 {
		capacity = p.cfg.Capacity
	}
	if capacity > 0 {
		args = append(args, "--capacity", strconv.FormatInt(capacity, 10))
	}
	replicas := s.Replicas
	if replicas == 0 {
		replicas = p.cfg.Replicas
	}
	if replicas > 0 {
		args = append(args, "--replicas", strconv.Itoa(replicas))
	}
	args = append(args, p.cfg.Extra...)
	return append(args, s.Extra...)
}

// Drain asks the node to hand its data off and leave the ring
// (provision.DrainNode), then waits for its container to exit. A
// container that is gone or stopped already counts as drained.
func (p *Provisioner) Drain(ctx context.Context, in provision.Instance) error {
	c, err := p.inspect(ctx, in.ID)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.State == nil || !c.State.Running {
		return nil
	}
	addr := in.HTTPAddr
	if addr == "" && c.Config != nil {
		addr = c.Config.Labels[labelHTTPAddr]
	}
	if addr == "" {
		return fmt.Errorf("docker: drain %s: no HTTP address known", in.ID)
	}
	p.setDraining(c.ID, true)
	defer p.setDraining(c.ID, false)
	// DrainNode takes a node that does not answer for one that left. A
	// running container whose node does not serve yet has not left: wait
	// until it serves (or its container stops) before asking.
	if exited, err := p.waitServing(ctx, c.ID, addr); err != nil || exited {
		return err
	}
	if _, err := provision.DrainNode(ctx, p.http, addr); err != nil {
		return fmt.Errorf("docker: drain %s: %w", in.ID, err)
	}
	w := p.cli.ContainerWait(ctx, c.ID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-w.Result:
		return nil
	case err := <-w.Error:
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("docker: drain %s: the node left the ring but its container still runs: %w", in.ID, ctx.Err())
		}
		return fmt.Errorf("docker: drain %s: wait for exit: %w", in.ID, err)
	}
}

// waitServing polls until the node at httpAddr answers /healthz (false)
// or its container is no longer running (true).
func (p *Provisioner) waitServing(ctx context.Context, id, httpAddr string) (exited bool, err error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	if p.cfg.HTTPClient != nil {
		hc.Transport = p.cfg.HTTPClient.Transport // mutual TLS, say
	}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/healthz", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return false, nil
			}
		}
		r, err := p.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
		if cerrdefs.IsNotFound(err) || err == nil && (r.Container.State == nil || !r.Container.State.Running) {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("docker: drain %s: its node never served at %s: %w", id, httpAddr, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Terminate stops the container (SIGTERM, then SIGKILL after
// Config.StopTimeout) and removes it with its data volume. A container
// that is gone already counts as terminated; one of another cluster is an
// error.
func (p *Provisioner) Terminate(ctx context.Context, in provision.Instance) error {
	if in.ID == "" {
		return errors.New("docker: terminate: instance has no ID")
	}
	c, err := p.inspect(ctx, in.ID)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	stop := int(p.cfg.StopTimeout.Round(time.Second) / time.Second)
	if _, err := p.cli.ContainerStop(ctx, c.ID, client.ContainerStopOptions{Timeout: &stop}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: terminate %s: stop: %w", in.ID, err)
	}
	return p.remove(ctx, c.ID)
}

// remove force-removes a container with its anonymous volumes; one that
// is gone, or being removed by someone else, counts as removed.
func (p *Provisioner) remove(ctx context.Context, id string) error {
	_, err := p.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	if strings.Contains(err.Error(), "already in progress") {
		w := p.cli.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionRemoved})
		select {
		case <-w.Result:
			return nil
		case werr := <-w.Error:
			if cerrdefs.IsNotFound(werr) {
				return nil
			}
		}
	}
	return fmt.Errorf("docker: remove container %s: %w", id, err)
}

// inspect returns a container of this cluster, or an error that
// cerrdefs.IsNotFound recognizes if it does not exist.
func (p *Provisioner) inspect(ctx context.Context, id string) (container.InspectResponse, error) {
	if id == "" {
		return container.InspectResponse{}, errors.New("docker: instance has no ID")
	}
	r, err := p.cli.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return container.InspectResponse{}, err
		}
		return container.InspectResponse{}, fmt.Errorf("docker: inspect %s: %w", id, err)
	}
	if r.Container.Config == nil || r.Container.Config.Labels[LabelCluster] != p.cfg.Cluster {
		return container.InspectResponse{}, fmt.Errorf("docker: container %s does not belong to cluster %q", id, p.cfg.Cluster)
	}
	return r.Container, nil
}

// List returns the cluster's containers, running or not, oldest first.
func (p *Provisioner) List(ctx context.Context) ([]provision.Instance, error) {
	cs, err := p.containers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]provision.Instance, 0, len(cs))
	for _, c := range cs {
		state := stateOf(c.State)
		if state == provision.StateRunning && p.isDraining(c.ID) {
			state = provision.StateDraining
		}
		out = append(out, provision.Instance{
			ID:        c.ID,
			HTTPAddr:  c.Labels[labelHTTPAddr],
			ChordAddr: c.Labels[labelChordAddr],
			State:     state,
			Kind:      c.Labels[labelKind],
			Started:   time.Unix(c.Created, 0),
		})
	}
	slices.SortStableFunc(out, func(a, b provision.Instance) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (p *Provisioner) containers(ctx context.Context) ([]container.Summary, error) {
	f := client.Filters{}.Add("label", LabelCluster+"="+p.cfg.Cluster)
	r, err := p.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("docker: list containers: %w", err)
	}
	return r.Items, nil
}

// stateOf maps a container state to an Instance state.
func stateOf(s container.ContainerState) string {
	switch s {
	case container.StateRunning:
		return provision.StateRunning
	case container.StateCreated, container.StateRestarting, container.StatePaused:
		return provision.StatePending
	default: // exited, dead, removing
		return provision.StateTerminated
	}
}

func (p *Provisioner) setDraining(id string, on bool) {
	p.dmu.Lock()
	defer p.dmu.Unlock()
	if on {
		p.drained[id] = true
	} else {
		delete(p.drained, id)
	}
}

func (p *Provisioner) isDraining(id string) bool {
	p.dmu.Lock()
	defer p.dmu.Unlock()
	return p.drained[id]
}

// Cleanup removes every container of the cluster, running or not, with
// its volume, then the network if it is this cluster's and nothing else
// is attached to it.
func (p *Provisioner) Cleanup(ctx context.Context) error {
	cs, err := p.containers(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		if err := p.remove(ctx, c.ID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.removeNetwork(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Logs returns up to the last tail lines of a container's output (all of
// it if tail <= 0), stdout and stderr interleaved as written.
func (p *Provisioner) Logs(ctx context.Context, id string, tail int) (string, error) {
	return containerLogs(ctx, p.cli, id, tail)
}

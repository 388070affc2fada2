package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"tide/netport"
	"tide/paxos"
)

// Shape is how many of each role a deployment has.
type Shape struct {
	// Matchmakers record each leader round's acceptor groups; 0 fixes the
	// acceptor groups for good (no acceptor reconfiguration).
	Matchmakers  int
	Batchers     int // 0: clients send to the leader, unbatched
	Leaders      int
	ProxyLeaders int
	Groups       int
	F            int // each group has 2f+1 acceptors
	Replicas     int
	Unbatchers   int
	BatchSize    int
	TickMillis   int
	// Timeouts in ticks; zero takes paxos.Config's defaults.
	HeartbeatTicks int
	ElectionTicks  int
	ResendTicks    int
	Host           string // default 127.0.0.1
}

// DefaultShape is `tide log up`'s default: 3 matchmakers, 1 batcher, 2
// leaders, 2 proxy leaders, one group of 3 acceptors, 2 replicas and 1
// unbatcher.
var DefaultShape = Shape{Matchmakers: 3, Batchers: 1, Leaders: 2, ProxyLeaders: 2, Groups: 1, F: 1, Replicas: 2, Unbatchers: 1}

// Validate checks a shape.
func (s Shape) Validate() error {
	switch {
	case s.Leaders < 1, s.ProxyLeaders < 1, s.Groups < 1, s.Replicas < 1:
		return fmt.Errorf("need at least one leader, proxy leader, acceptor group and replica")
	case s.F < 0 || s.F > 16:
		return fmt.Errorf("f=%d out of range [0, 16]", s.F)
	case s.Batchers < 0 || s.Unbatchers < 0 || s.Matchmakers < 0:
		return fmt.Errorf("negative role count")
	}
	return nil
}

// Count is the number of role instances of the shape.
func (s Shape) Count() int {
	return s.Matchmakers + s.Batchers + s.Leaders + s.ProxyLeaders + s.Groups*(2*s.F+1) + s.Replicas + s.Unbatchers
}

// Kinds lists the kind of each role instance of the shape, in the order
// LayoutDeployment takes their addresses.
func (s Shape) Kinds() []string {
	var out []string
	for _, k := range []struct {
		kind string
		n    int
	}{{"matchmaker", s.Matchmakers}, {"batcher", s.Batchers}, {"leader", s.Leaders}, {"proxy", s.ProxyLeaders},
		{"acceptor", s.Groups * (2*s.F + 1)}, {"replica", s.Replicas}, {"unbatcher", s.Unbatchers}} {
		for range k.n {
			out = append(out, k.kind)
		}
	}
	return out
}

// LayoutDeployment lays out shape s on the given role addresses and the
// HTTP addresses of their processes, s.Count() of each, in the order
// matchmakers, batchers, leaders, proxy leaders, acceptors group by
// group, replicas, unbatchers.
func LayoutDeployment(s Shape, roles, https []string) (Deployment, error) {
	if err := s.Validate(); err != nil {
		return Deployment{}, err
	}
	if len(roles) != s.Count() || len(https) != s.Count() {
		return Deployment{}, fmt.Errorf("shape has %d roles: got %d role and %d HTTP addresses", s.Count(), len(roles), len(https))
	}
	next := 0
	take := func(k int) []string {
		out := roles[next : next+k]
		next += k
		return out
	}
	cfg := paxos.Config{
		Matchmakers: take(s.Matchmakers),
		Batchers:    take(s.Batchers), Leaders: take(s.Leaders), ProxyLeaders: take(s.ProxyLeaders),
		BatchSize: s.BatchSize, HeartbeatTicks: s.HeartbeatTicks, ElectionTicks: s.ElectionTicks, ResendTicks: s.ResendTicks,
	}
	for range s.Groups {
		cfg.Groups = append(cfg.Groups, paxos.Group{Acceptors: take(2*s.F + 1)})
	}
	cfg.Replicas = take(s.Replicas)
	cfg.Unbatchers = take(s.Unbatchers)
	d := Deployment{Log: cfg, HTTP: map[string]string{}, TickMillis: s.TickMillis}
	for i, a := range roles {
		d.HTTP[a] = https[i]
	}
	d.Log.HTTP = d.HTTP
	return d, d.Validate()
}

// Roles lists every role address of the deployment.
func (d Deployment) Roles() []string {
	if d.Unreplicated != "" {
		return []string{d.Unreplicated}
	}
	return d.Log.All()
}

// ReplyHost returns the local address from which this machine reaches
// the role at addr: the address a client of the log should listen on so
// that the roles' replies reach it (loopback for a local log, the bridge
// gateway for roles in containers). It falls back to 127.0.0.1.
func ReplyHost(addr string) string {
	c, err := net.Dial("udp", addr) // no packet is sent: this only routes
	if err != nil {
		return "127.0.0.1"
	}
	defer c.Close()
	host, _, err := net.SplitHostPort(c.LocalAddr().String())
	if err != nil {
		return "127.0.0.1"
	}
	return host
}

// RunInProcess runs a new deployment of shape s in this process, every
// role on its own transport and HTTP server as if it were a process of
// its own, on ports of s.Host (default 127.0.0.1) bound before the
// deployment names them and never let go (no other process can take one
// in between). State goes under dir. It returns the deployment and a
// function that stops the roles and waits for them.
func RunInProcess(ctx context.Context, s Shape, dir string, log *slog.Logger) (Deployment, func(), error) {
	if s.Host == "" {
		s.Host = "127.0.0.1"
	}
	n := s.Count()
	var lns []net.Listener
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	for range 2 * n {
		l, err := netport.Listen(net.JoinHostPort(s.Host, "0"))
		if err != nil {
			closeAll()
			return Deployment{}, nil, err
		}
		lns = append(lns, l)
	}
	addrs := make([]string, 2*n)
	for i, l := range lns {
		addrs[i] = l.Addr().String()
	}
	d, err := LayoutDeployment(s, addrs[:n], addrs[n:])
	if err != nil {
		closeAll()
		return Deployment{}, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, a := range addrs[:n] {
		kind, _, err := d.RoleOf(a)
		if err != nil {
			cancel()
			closeAll()
			return Deployment{}, nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer lns[i].Close() // should the role not have taken it
			spec := RoleSpec{Addr: a, Kind: kind, Listener: lns[i]}
			if err := ServeRolesOn(ctx, d, []RoleSpec{spec}, dir, lns[n+i], log); err != nil && ctx.Err() == nil {
				log.Error("in-process role stopped", "kind", kind, "addr", a, "err", err)
			}
		}()
	}
	return d, func() { cancel(); wg.Wait() }, nil
}

package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"tide/autoscale"
	"tide/autoscale/provision"
	dockerprov "tide/autoscale/provision/docker"
)

// autoscaleFault runs tide's autoscaler (autoscale.Controller with the
// store policy, scraping the nodes' metrics, over the cluster's Docker
// provisioner) until it has made one membership change. The policy's
// bounds are set so that the change is due: for a scale out, a minimum
// one above the running nodes; for a scale in, a maximum disk use no node
// reaches (every node idle) and a minimum one below them.
type autoscaleFault struct {
	action autoscale.Action
	victim string // the node a scale in removes
}

// ScaleOut has the autoscaler add a node.
func ScaleOut() Fault { return autoscaleFault{action: autoscale.ActScaleOut} }

// ScaleIn has the autoscaler drain node out of the ring and remove it.
func ScaleIn(node string) Fault { return autoscaleFault{action: autoscale.ActScaleIn, victim: node} }

func (f autoscaleFault) String() string {
	if f.action == autoscale.ActScaleOut {
		return "autoscaler scale-out"
	}
	return "autoscaler scale-in " + f.victim
}

// autoscaleWait bounds one autoscaler change, launch or drain included.
const autoscaleWait = 3 * time.Minute

func (f autoscaleFault) Inject(ctx context.Context, c *Cluster) (func(context.Context) error, error) {
	prov := &clusterProv{Provisioner: c.prov, c: c, victim: f.victim}
	ins, err := prov.List(ctx)
	if err != nil {
		return nil, err
	}
	running := 0
	for _, in := range ins {
		if in.State == provision.StateRunning || in.State == provision.StatePending {
			running++
		}
	}
	cfg := autoscale.StoreConfig{Min: running + 1, Max: running + 1, Periods: 1}
	if f.action == autoscale.ActScaleIn {
		cfg = autoscale.StoreConfig{Min: running - 1, Max: running, High: 100, Low: 99.9, Periods: 1}
	}
	ctrl := &autoscale.Controller{
		Policy: autoscale.StorePolicy{Cfg: cfg, StaleAfter: 5 * time.Second}, Prov: prov,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Period: 500 * time.Millisecond,
		ReadyTimeout: 2 * time.Minute, Backoff: time.Second, MaxBackoff: 5 * time.Second,
	}
	if err := ctrl.Init(); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, autoscaleWait)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(rctx) }()
	defer func() { cancel(); <-done }()
	var failures []string
	for seen := 0; ; {
		for _, ev := range ctrl.Events.Since(0)[seen:] {
			seen++
			if ev.Action != f.action {
				continue
			}
			switch ev.Outcome {
			case "succeeded":
				return nil, nil
			case "failed":
				failures = append(failures, ev.Error)
			}
		}
		select {
		case <-rctx.Done():
			return nil, fmt.Errorf("chaos: the autoscaler made no %s in %s (failures: %q; last decision: %s)", f.action, autoscaleWait, failures, lastDecision(ctrl))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lastDecision is the reason of the autoscaler's last decision not to act.
func lastDecision(c *autoscale.Controller) string {
	evs := c.Events.Since(0)
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Outcome == "decided" {
			return evs[i].Reason
		}
	}
	return "none"
}

// clusterProv is the cluster's provisioner as the autoscaler sees it: the
// nodes it launches join the cluster's list (named n5, n6, ...) and the
// clients use them; the node it drains leaves the list first; a scale in
// removes the victim the fault names.
type clusterProv struct {
	*dockerprov.Provisioner
	c      *Cluster
	victim string
}

func (p *clusterProv) Launch(ctx context.Context, s provision.Spec) (provision.Instance, error) {
	name := p.c.nextName()
	s.Name = name
	in, err := p.Provisioner.Launch(ctx, s)
	if err != nil {
		return in, err
	}
	p.c.register(name, in)
	return in, nil
}

func (p *clusterProv) Drain(ctx context.Context, in provision.Instance) error {
	for _, n := range p.c.Nodes() {
		if n.ID == in.ID {
			n.set(func(n *Node) { n.gone = true })
		}
	}
	return p.Provisioner.Drain(ctx, in)
}

// Victim is the node the fault names (autoscale.VictimPicker).
func (p *clusterProv) Victim(ctx context.Context) (provision.Instance, error) {
	n, err := p.c.Node(p.victim)
	if err != nil {
		return provision.Instance{}, err
	}
	ins, err := p.List(ctx)
	if err != nil {
		return provision.Instance{}, err
	}
	for _, in := range ins {
		if in.ID == n.ID {
			return in, nil
		}
	}
	return provision.Instance{}, fmt.Errorf("chaos: %s is not running", p.victim)
}

package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"tide/cluster"
)

// A Fault is something done to the cluster. Inject does it and returns
// how to undo it (nil when it cannot be undone, as a leave).
type Fault interface {
	String() string
	Inject(ctx context.Context, c *Cluster) (undo func(context.Context) error, err error)
}

// A Step is a fault at a moment of a scenario's workload, undone For
// later (if For is 0, it stays until the workload ends, when the cluster
// is healed).
type Step struct {
	At    time.Duration
	Fault Fault
	For   time.Duration
}

type nodeFault struct {
	what string
	node string
	do   func(ctx context.Context, c *Cluster, n *Node) (func(context.Context) error, error)
}

func (f nodeFault) String() string { return f.what + " " + f.node }

func (f nodeFault) Inject(ctx context.Context, c *Cluster) (func(context.Context) error, error) {
	n, err := c.Node(f.node)
	if err != nil {
		return nil, err
	}
	return f.do(ctx, c, n)
}

// Partition cuts node off the network (docker network disconnect) until
// the step ends. Both directions drop: the FROM scratch image has no
// iptables, so one-way drops are not offered.
func Partition(node string) Fault {
	return nodeFault{"partition", node, func(ctx context.Context, c *Cluster, n *Node) (func(context.Context) error, error) {
		if err := c.Disconnect(ctx, n); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return c.Reconnect(ctx, n) }, nil
	}}
}

// Pause freezes node (docker pause) until the step ends.
func Pause(node string) Fault {
	return nodeFault{"pause", node, func(ctx context.Context, c *Cluster, n *Node) (func(context.Context) error, error) {
		if err := c.Pause(ctx, n); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return c.Unpause(ctx, n) }, nil
	}}
}

// Kill sends node SIGKILL; it starts again on its data when the step ends.
func Kill(node string) Fault {
	return nodeFault{"kill -9", node, func(ctx context.Context, c *Cluster, n *Node) (func(context.Context) error, error) {
		if err := c.Kill(ctx, n); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return c.Revive(ctx, n) }, nil
	}}
}

// Restart stops node with SIGTERM and starts it again.
func Restart(node string) Fault {
	return nodeFault{"restart", node, func(ctx context.Context, c *Cluster, n *Node) (func(context.Context) error, error) {
		return nil, c.Restart(ctx, n)
	}}
}

// Leave drains node gracefully out of the ring and removes it.
func Leave(node string) Fault {
	return nodeFault{"leave", node, func(ctx context.Context, c *Cluster, n *Node) (func(context.Context) error, error) {
		return nil, c.Leave(ctx, n)
	}}
}

type joinFault struct{}

// Join launches a new node that joins the ring.
func Join() Fault { return joinFault{} }

func (joinFault) String() string { return "join" }

func (joinFault) Inject(ctx context.Context, c *Cluster) (func(context.Context) error, error) {
	_, err := c.Join(ctx)
	return nil, err
}

type fillFault struct {
	fileBytes int
	note      string // what the fill did, once injected
}

// FillDisk uploads filler files through the ring until the nodes refuse
// three of them (their disks, tmpfs of Scenario.DiskBytes, are full);
// when the step ends it deletes them, and space returns.
func FillDisk() Fault { return &fillFault{fileBytes: 512 << 10} }

func (f *fillFault) String() string { return "fill the disks" + f.note }

func (f *fillFault) Inject(ctx context.Context, c *Cluster) (func(context.Context) error, error) {
	fc := newFileClient(5 * time.Second)
	var names []string
	var refusals, unclear []string
	stored := 0
	for i := 0; len(refusals) < 3 && i < 4096; i++ {
		name := fmt.Sprintf("fill-%04d", i)
		live := c.Live()
		if len(live) == 0 {
			return nil, fmt.Errorf("chaos: fill: no live node")
		}
		names = append(names, name)
		if _, err := fc.put(ctx, live[i%len(live)], name, filler(name, f.fileBytes)); err != nil {
			refusals = append(refusals, shorten(err.Error(), 200))
			var se *statusErr
			if errors.As(err, &se) && se.code != http.StatusInsufficientStorage && se.code != http.StatusServiceUnavailable {
				// A full disk must say so (507), or that too few
				// replicas took the file (503): not blame the client
				// (400) or fail obscurely (500).
				unclear = append(unclear, shorten(err.Error(), 200))
			}
		} else {
			stored++
		}
	}
	f.note = fmt.Sprintf(" (%d files of %d KiB stored, then refused: %s)", stored, f.fileBytes>>10, strings.Join(refusals, "; "))
	undo := func(ctx context.Context) error {
		for _, name := range names {
			for _, n := range c.Live() {
				if fc.del(ctx, n, name) == nil {
					break
				}
			}
		}
		return nil
	}
	if len(unclear) > 0 {
		return undo, fmt.Errorf("chaos: a full disk refused uploads without saying so: %s", strings.Join(unclear, "; "))
	}
	return undo, nil
}

type leaderFault struct{ node, note string }

// PartitionLeader cuts the log's active leader off the network (as
// Partition does) until the step ends, and waits until a standby leader
// says it has taken over (an error if none does within 30 s). The leader
// is the one whose /status says it is active when the fault is injected.
func PartitionLeader() Fault { return &leaderFault{} }

func (f *leaderFault) String() string {
	if f.node == "" {
		return "partition the active leader"
	}
	return "partition the active leader (" + f.node + f.note + ")"
}

func (f *leaderFault) Inject(ctx context.Context, c *Cluster) (func(context.Context) error, error) {
	// A leader may be between rounds: wait a little for one.
	n, err := c.waitActiveLeader(ctx, nil, 10*time.Second)
	if err != nil {
		return nil, err
	}
	f.node, f.note = n.Name, ""
	if err := c.Disconnect(ctx, n); err != nil {
		return nil, err
	}
	undo := func(ctx context.Context) error { return c.Reconnect(ctx, n) }
	start := time.Now()
	next, err := c.waitActiveLeader(ctx, n, 30*time.Second)
	if err != nil {
		return undo, fmt.Errorf("chaos: no leader took over from %s: %w", n.Name, err)
	}
	f.note = fmt.Sprintf("; %s took over after %s", next.Name, time.Since(start).Round(100*time.Millisecond))
	return undo, nil
}

// waitActiveLeader waits up to timeout for a leader other than not to
// report itself active.
func (c *Cluster) waitActiveLeader(ctx context.Context, not *Node, timeout time.Duration) (*Node, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		n, err := c.activeLeader(wctx, not)
		if err == nil {
			return n, nil
		}
		select {
		case <-wctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// activeLeader returns the log's leader, other than not, that reports
// itself active.
func (c *Cluster) activeLeader(ctx context.Context, not *Node) (*Node, error) {
	var seen []string
	for _, n := range c.Roles() {
		if !strings.HasPrefix(n.Name, "leader") || n == not {
			continue
		}
		st, err := c.Status(ctx, n)
		if err != nil {
			seen = append(seen, fmt.Sprintf("%s: %v", n.Name, err))
			continue
		}
		for _, s := range st {
			if s.Kind == "leader" && s.Active {
				return n, nil
			}
		}
		seen = append(seen, n.Name+": standby")
	}
	return nil, fmt.Errorf("chaos: no active leader (%s)", strings.Join(seen, "; "))
}

// logFault is a change of the running log's configuration, through the
// log (cluster.LogControl): new role containers join, removed ones stop
// once drained or retired.
type logFault struct {
	what string
	do   func(ctx context.Context, lc *cluster.LogControl, c *Cluster) error
	note string
}

func (f *logFault) String() string { return f.what + f.note }

func (f *logFault) Inject(ctx context.Context, c *Cluster) (func(context.Context) error, error) {
	lc := c.LogControl()
	if lc == nil {
		return nil, fmt.Errorf("chaos: %s: the scenario runs no log", f.what)
	}
	err := f.do(ctx, lc, c)
	if d, cerr := lc.Current(); cerr == nil {
		f.note = fmt.Sprintf(" (epoch %d)", d.Log.Epoch)
		if serr := c.syncRoles(d); serr != nil && err == nil {
			err = serr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("chaos: %s: %w", f.what, err)
	}
	return nil, nil
}

// LogScale makes the log's compartment role (a name of cluster.Roles:
// proxy-leaders, acceptor-groups, replicas, ...) have n instances.
func LogScale(role string, n int) Fault {
	return &logFault{what: fmt.Sprintf("log scale %s to %d", role, n), do: func(ctx context.Context, lc *cluster.LogControl, c *Cluster) error {
		return lc.Scale(ctx, role, n, io.Discard)
	}}
}

// LogReplace puts a new acceptor in the place of the log role node names
// (an acceptor), through a reconfiguration; the old one stops once its
// rounds are retired.
func LogReplace(node string) Fault {
	return &logFault{what: "log replace " + node, do: func(ctx context.Context, lc *cluster.LogControl, c *Cluster) error {
		n, err := c.Node(node)
		if err != nil {
			return err
		}
		return lc.Replace(ctx, n.Role, io.Discard)
	}}
}

package regions

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"tide/cluster"
	"tide/paxos/node"
)

// Log is a running tide log: one leader, one proxy leader, one group of
// three acceptors and two replicas, without batchers (a notification goes
// out at once rather than waiting for a batch to fill).
type Log struct {
	Deployment node.Deployment
	stop       func()
}

// LogShape is the tide log StartLog runs.
var LogShape = node.Shape{Leaders: 1, ProxyLeaders: 1, Groups: 1, F: 1, Replicas: 2}

// StartLog starts a tide log under dir: each role a child process of
// binary (a tide executable), or, with binary "", each role in this
// process on its own sockets (tests, which have no tide binary). It waits
// until the log commits a write.
func StartLog(ctx context.Context, dir, binary string) (*Log, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{}
	if binary != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		local := &cluster.Local{Binary: binary, Dir: dir}
		l.stop = func() { local.StopAll(10 * time.Second) }
		host := &cluster.LocalRoles{Local: local, StateDir: filepath.Join(dir, "state")}
		save := func(d node.Deployment) error { return d.Save(filepath.Join(dir, "deployment.json")) }
		if l.Deployment, err = host.StartNew(ctx, cluster.ShapePlan(LogShape, ""), save); err != nil {
			l.Close()
			return nil, err
		}
	} else {
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		if l.Deployment, l.stop, err = node.RunInProcess(context.Background(), LogShape, filepath.Join(dir, "state"), log); err != nil {
			return nil, err
		}
	}
	d := l.Deployment
	c, err := node.NewClient(d, "127.0.0.1", 1)
	if err != nil {
		l.Close()
		return nil, err
	}
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.Put(wctx, "regions/ready", []byte("1")); err != nil {
		l.Close()
		return nil, fmt.Errorf("tide log did not commit a write: %w", err)
	}
	return l, nil
}

// Close stops every role.
func (l *Log) Close() {
	if l.stop != nil {
		l.stop()
	}
}

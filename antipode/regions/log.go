package regions

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
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
	d, err := node.NewLocalDeployment(LogShape)
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{Deployment: d}
	if binary != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		local := &cluster.Local{Binary: binary, Dir: dir}
		depPath := filepath.Join(dir, "deployment.json")
		if err := d.Save(depPath); err != nil {
			return nil, err
		}
		l.stop = func() { local.StopAll(10 * time.Second) }
		host := &cluster.LocalRoles{Local: local, DepPath: depPath, StateDir: filepath.Join(dir, "state")}
		if err := cluster.StartLog(ctx, host, d); err != nil {
			l.Close()
			return nil, err
		}
	} else {
		rctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		errs := make(chan error, len(d.Roles()))
		for _, a := range d.Roles() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := node.Serve(rctx, d, []string{a}, filepath.Join(dir, "state"), d.HTTP[a], log); err != nil {
					errs <- fmt.Errorf("tide log role %s: %w", a, err)
				}
			}()
		}
		l.stop = func() { cancel(); wg.Wait() }
		select {
		case err := <-errs:
			l.Close()
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
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

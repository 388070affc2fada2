package regions

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// NATS is a nats-server with JetStream, on a port it chose itself
// (reported through its ports file).
type NATS struct {
	URL string
	p   *proc
}

// StartNATS starts nats-server under dir and waits for its client port.
func StartNATS(ctx context.Context, dir string) (*NATS, error) {
	bin, err := lookBinary("nats-server")
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n := &NATS{}
	n.p, err = start("nats-server", filepath.Join(dir, "nats.log"), nil, syscall.SIGTERM, bin,
		"-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", dir, "-js", "-sd", filepath.Join(dir, "jetstream"))
	if err != nil {
		return nil, err
	}
	portsFile := filepath.Join(dir, fmt.Sprintf("%s_%d.ports", filepath.Base(bin), n.p.cmd.Process.Pid))
	err = waitFor(n.p, 30*time.Second, "listening", func() error {
		b, err := os.ReadFile(portsFile)
		if err != nil {
			return err
		}
		var ports struct{ Nats []string }
		if err := json.Unmarshal(b, &ports); err != nil || len(ports.Nats) == 0 {
			return fmt.Errorf("ports file %s: %q", portsFile, b)
		}
		n.URL = ports.Nats[0]
		return nil
	})
	if err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Close stops the server.
func (n *NATS) Close() { n.p.stop() }

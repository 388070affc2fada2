// Package cluster runs tide nodes as local child processes: the engine
// behind `tide up`, the local provisioner, and the real-process tests.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NodeSpec describes one storage node process.
type NodeSpec struct {
	Name      string // used for its data directory and log file
	ChordAddr string
	HTTPAddr  string
	Join      string // chord address to join through; empty creates a ring
	Replicas  int
	Capacity  int64
	// Extra flags passed to `tide node`.
	Extra []string
}

// Proc is a running child process.
type Proc struct {
	Name    string
	Spec    NodeSpec // for storage nodes
	DataDir string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	health  string
}

// Local starts and stops node processes of one tide binary.
type Local struct {
	// Binary is the tide executable. Default: this process's executable.
	Binary string
	// Dir holds one data directory and one log file per node.
	Dir string

	mu    sync.Mutex
	procs []*Proc
}

// Launch starts a storage node and waits until its file service answers.
func (l *Local) Launch(ctx context.Context, s NodeSpec) (*Proc, error) {
	dir := filepath.Join(l.Dir, s.Name)
	args := []string{"node", "--chord-addr", s.ChordAddr, "--http-addr", s.HTTPAddr, "--data-dir", dir}
	if s.Join != "" {
		args = append(args, "--join", s.Join)
	}
	if s.Replicas > 0 {
		args = append(args, "--replicas", strconv.Itoa(s.Replicas))
	}
	if s.Capacity > 0 {
		args = append(args, "--capacity", strconv.FormatInt(s.Capacity, 10))
	}
	args = append(args, s.Extra...)
	p, err := l.Start(ctx, s.Name, args, "http://"+s.HTTPAddr+"/healthz")
	if p != nil {
		p.Spec, p.DataDir = s, dir
	}
	return p, err
}

// Start runs `tide ARGS...` as a child process named name, logging to
// Dir/name.log, and waits until healthURL answers 200 (with healthURL "",
// it does not wait).
func (l *Local) Start(ctx context.Context, name string, args []string, healthURL string) (*Proc, error) {
	bin := l.Binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(l.Dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{}), health: healthURL}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	if healthURL == "" {
		return p, nil // the caller waits for the process in its own way
	}
	if err := p.waitReady(ctx); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s did not become ready (log: %s): %w\n%s", name, logPath, err, tail(logPath, 10))
	}
	return p, nil
}

func (p *Proc) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	c := http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := c.Get(p.health)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("timed out")
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill stops the process at once with SIGKILL, as a crash would.
func (p *Proc) Kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop asks the process to exit with SIGTERM and waits, killing it after
// the grace period.
func (p *Proc) Stop(grace time.Duration) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// StopAll stops every process this Local started.
func (l *Local) StopAll(grace time.Duration) {
	l.mu.Lock()
	procs := append([]*Proc(nil), l.procs...)
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop(grace) }()
	}
	wg.Wait()
}

// Layout chooses addresses for node i of a local cluster.
type Layout struct {
	// HostPerNode gives node i the loopback address 127.0.0.(i+1) with the
	// standard ports, so the seed's scripts (which assume ports 5057 and
	// 5058 on every node) work unchanged. Otherwise every node listens on
	// Host with consecutive ports from BasePort.
	HostPerNode bool
	// HostPrefix is the first three octets for HostPerNode. Default
	// "127.0.0.".
	HostPrefix string
	Host       string
	BasePort   int
}

// Addrs returns the chord and http addresses of node i.
func (l Layout) Addrs(i int) (chordAddr, httpAddr string) {
	if l.HostPerNode {
		prefix := l.HostPrefix
		if prefix == "" {
			prefix = "127.0.0."
		}
		host := fmt.Sprintf("%s%d", prefix, i+1)
		return net.JoinHostPort(host, strconv.Itoa(l.BasePort)), net.JoinHostPort(host, strconv.Itoa(l.BasePort+1))
	}
	return net.JoinHostPort(l.Host, strconv.Itoa(l.BasePort+2*i)), net.JoinHostPort(l.Host, strconv.Itoa(l.BasePort+2*i+1))
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

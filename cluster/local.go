// Package cluster runs tide nodes as local child processes: the engine
// behind `tide up`, the local provisioner, and the real-process tests.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	Name string
	// Spec is, for a storage node, the spec that starts it again as it
	// is: the addresses it reported (its Chord, HTTP, peer and Redis
	// ones) in place of any port 0 it was given.
	Spec    NodeSpec
	DataDir string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	asked   atomic.Bool // Stop or Kill was called
	// Ready is what a storage node reported once serving (Launch).
	Ready Ready
}

// Local starts and stops node processes of one tide binary.
type Local struct {
	// Binary is the tide executable. Default: this process's executable.
	Binary string
	// Dir holds one data directory and one log file per node.
	Dir string
	// Outlive lets children run on if this process dies without stopping
	// them (a crash, SIGKILL): a controller's nodes then wait for the
	// next controller to adopt them. Otherwise (the default) they die with
	// it, on Linux.
	Outlive bool

	mu     sync.Mutex
	procs  []*Proc
	onExit func(p *Proc, err error, logTail string)
}

// Ready is what a node started with --addr-file writes once it serves:
// the addresses it holds. A node given port 0 learns its port from the
// kernel, and its supervisor learns it here.
type Ready struct {
	ChordAddr string `json:"chord"`
	HTTPAddr  string `json:"http"`
	RESPAddr  string `json:"resp,omitempty"`
	PeerAddr  string `json:"peer,omitempty"`
	// Roles are the role addresses of a `tide log serve` process.
	Roles []string `json:"roles,omitempty"`
}

// Launch starts a storage node and waits until it has written its
// address file (Dir/NAME.ready.json, removed first) and its file service answers. The node binds
// the addresses of s, which may have port 0; the returned Proc's Spec
// holds the addresses it actually holds.
func (l *Local) Launch(ctx context.Context, s NodeSpec) (*Proc, error) {
	dir := filepath.Join(l.Dir, s.Name)
	readyPath := filepath.Join(l.Dir, s.Name+".ready.json")
	args := []string{"node", "--chord-addr", s.ChordAddr, "--http-addr", s.HTTPAddr, "--data-dir", dir, "--addr-file", readyPath}
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
	p, err := l.StartReporting(ctx, s.Name, args, readyPath, nil)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, func(*Proc) error { return healthy("http://" + p.Ready.HTTPAddr + "/healthz") }); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s did not answer (log: %s): %w\n%s", s.Name, p.LogPath, err, tail(p.LogPath, 10))
	}
	p.Spec, p.DataDir = respec(s, p.Ready), dir
	return p, nil
}

// StartReporting runs `tide ARGS...` as Start does, with stdin (if not
// nil) as its standard input, and waits until it has written the address
// file readyPath (removed first), which must name an HTTP address; what it
// reported is in the returned Proc's Ready.
func (l *Local) StartReporting(ctx context.Context, name string, args []string, readyPath string, stdin *os.File) (*Proc, error) {
	if err := os.Remove(readyPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return l.start(ctx, name, args, stdin, func(p *Proc) error {
		b, err := os.ReadFile(readyPath)
		if err != nil {
			return err
		}
		var r Ready
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", readyPath, err)
		}
		if r.HTTPAddr == "" {
			return fmt.Errorf("%s names no HTTP address", readyPath)
		}
		p.Ready = r
		os.Remove(readyPath)
		return nil
	})
}

// rename gives p a new name, and its log file the name's.
func (l *Local) rename(p *Proc, name string) error {
	path := filepath.Join(l.Dir, name+".log")
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := os.Rename(p.LogPath, path); err != nil {
		return err
	}
	p.Name, p.LogPath = name, path
	return nil
}

// respec is s with the addresses the node reported in place of those it
// was given (which may have had port 0): the spec that starts the node
// again as it was, peers knowing it where they knew it.
func respec(s NodeSpec, r Ready) NodeSpec {
	s.ChordAddr, s.HTTPAddr = r.ChordAddr, r.HTTPAddr
	extra := slices.Clone(s.Extra)
	havePeer := false
	for i := 0; i+1 < len(extra); i++ {
		switch extra[i] {
		case "--peer-addr":
			havePeer = true
			if r.PeerAddr != "" {
				extra[i+1] = r.PeerAddr
			}
		case "--resp-addr":
			if r.RESPAddr != "" {
				extra[i+1] = r.RESPAddr
			}
		}
	}
	if !havePeer && r.PeerAddr != "" {
		extra = append(extra, "--peer-addr", r.PeerAddr)
	}
	s.Extra = extra
	return s
}

// Start runs `tide ARGS...` as a child process named name, logging to
// Dir/name.log, and waits until healthURL answers 200 (with healthURL "",
// it does not wait). The child is in a process group of its own (a
// terminal's Ctrl-C reaches only this process, which stops it in order)
// and, on Linux and unless Outlive, is killed if this process dies.
func (l *Local) Start(ctx context.Context, name string, args []string, healthURL string) (*Proc, error) {
	if healthURL == "" {
		return l.start(ctx, name, args, nil, nil)
	}
	return l.start(ctx, name, args, nil, func(*Proc) error { return healthy(healthURL) })
}

// OnExit sets a function called when a child exits without having been
// asked to (Stop or Kill), with its error and the tail of its log.
func (l *Local) OnExit(f func(p *Proc, err error, logTail string)) {
	l.mu.Lock()
	l.onExit = f
	l.mu.Unlock()
}

func (l *Local) start(ctx context.Context, name string, args []string, stdin *os.File, ready func(*Proc) error) (*Proc, error) {
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
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.SysProcAttr = childAttr(!l.Outlive)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
		l.mu.Lock()
		f, logPath := l.onExit, p.LogPath // rename may have moved it
		l.mu.Unlock()
		if f != nil && !p.asked.Load() {
			f(p, p.err, tail(logPath, 5))
		}
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	if ready == nil {
		return p, nil // the caller waits for the process in its own way
	}
	if err := p.waitReady(ctx, ready); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s did not become ready (log: %s): %w\n%s", name, logPath, err, tail(logPath, 10))
	}
	return p, nil
}

// healthy reports whether url answers 200.
func healthy(url string) error { return healthyWith(&http.Client{Timeout: time.Second}, url) }

// healthyWith is healthy with the given client (a role process's, with
// the process's TLS material).
func healthyWith(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// waitReady waits until ready(p) succeeds, failing at once if the child
// exits first (a port taken by another process, say: its error is in the
// log tail the caller adds).
func (p *Proc) waitReady(ctx context.Context, ready func(*Proc) error) error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if last = ready(p); last == nil {
			// A child that failed after its port was answered by
			// another process must not pass for ready.
			select {
			case <-p.done:
				return fmt.Errorf("exited: %v", p.err)
			default:
				return nil
			}
		}
		select {
		case <-p.done:
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("timed out: %v", last)
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill stops the process at once with SIGKILL, as a crash would.
func (p *Proc) Kill() {
	p.asked.Store(true)
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop asks the process to exit with SIGTERM and waits, killing it after
// the grace period.
func (p *Proc) Stop(grace time.Duration) {
	p.asked.Store(true)
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

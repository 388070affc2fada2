// Package regions starts the stores antipode works with as two regions on
// one machine: a primary that region A writes to and a replica that region
// B reads from, with replication lag made longer on purpose (Redis through
// a netdelay proxy, PostgreSQL with recovery_min_apply_delay). Servers are
// real, from the system's packages, each a child process this package
// starts and stops. The benchmark and the shims' tests use it.
package regions

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ErrNotInstalled is returned (wrapped) when a server's binary is not on
// this machine; tests skip on it. `make deps` installs them.
var ErrNotInstalled = errors.New("not installed")

// lookBinary finds name on PATH or in dirs (globs allowed; the last match
// in sorted order wins, so the newest PostgreSQL version is taken).
func lookBinary(name string, dirs ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range dirs {
		matches, _ := filepath.Glob(filepath.Join(d, name))
		slices.Sort(matches)
		if len(matches) > 0 {
			return matches[len(matches)-1], nil
		}
	}
	return "", fmt.Errorf("%s: %w (apt-get install the package that provides it, or run make deps)", name, ErrNotInstalled)
}

// proc is a server child process.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	stopSig syscall.Signal
}

// start runs bin with args, its output to logPath.
func start(name, logPath string, cred *syscall.Credential, stopSig syscall.Signal, bin string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr(cred)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{}), stopSig: stopSig}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, with its log's tail.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v); log %s:\n%s", p.name, p.err, p.logPath, tail(p.logPath, 15))
	default:
		return nil
	}
}

// stop asks the process to end with its stop signal and kills it after 10s.
func (p *proc) stop() {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(p.stopSig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

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

// waitFor calls ready every 50ms until it returns nil, the process exits,
// or timeout passes.
func waitFor(p *proc, timeout time.Duration, what string, ready func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if err := p.exited(); err != nil {
			return err
		}
		if last = ready(); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: not %s after %v: %v; log %s:\n%s", p.name, what, timeout, last, p.logPath, tail(p.logPath, 15))
}

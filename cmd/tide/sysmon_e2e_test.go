package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLogServeRunsWithSteadySysmon starts `tide log serve` as tide log up
// does (port 0, deployment on standard input) and reads, once it has
// bound its addresses, the environment of the very process it started:
// the role executed itself again in place with GODEBUG's schedtrace set,
// added to what GODEBUG held, and a schedtrace of the caller's, here the
// opt-out 0, is left alone.
func TestLogServeRunsWithSteadySysmon(t *testing.T) {
	for _, c := range []struct {
		godebug, want string
	}{
		{"", "GODEBUG=" + steadySchedtrace},
		{"madvdontneed=0", "GODEBUG=madvdontneed=0," + steadySchedtrace},
		{"schedtrace=0", "GODEBUG=schedtrace=0"},
	} {
		dir := t.TempDir()
		ready := filepath.Join(dir, "ready.json")
		cmd := exec.Command(tideBin, "log", "serve", "--role", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--data-dir", filepath.Join(dir, "state"), "--deployment", "-", "--addr-file", ready)
		cmd.Env = append(os.Environ(), "GODEBUG="+c.godebug)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the role's addresses", time.Minute, func() error {
			_, err := os.Stat(ready)
			return err
		})
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid))
		cmd.Process.Kill()
		stdin.Close()
		cmd.Wait()
		if err != nil {
			t.Fatal(err)
		}
		var godebug []string
		for _, kv := range bytes.Split(env, []byte{0}) {
			if strings.HasPrefix(string(kv), "GODEBUG=") {
				godebug = append(godebug, string(kv))
			}
		}
		if len(godebug) != 1 || godebug[0] != c.want {
			t.Errorf("started with GODEBUG=%s, the role process runs with %q; want %q", c.godebug, godebug, c.want)
		}
	}
}

// TestKilledLogUpTakesItsRolesAlong starts `tide log up`, waits until
// each of its 14 role processes runs with steadySchedtrace (each executed
// itself again), and SIGKILLs it: every role must exit too. A role
// process's parent-death signal belongs to its main thread, so one that
// executed itself again from another thread outlived its parent (one of
// 14 in six runs of eight, by hand, before main did it from the main
// thread).
func TestKilledLogUpTakesItsRolesAlong(t *testing.T) {
	// Which thread a process executes from is up to the scheduler: three
	// rounds, to catch the fault more often than not.
	for range 3 {
		killLogUp(t)
	}
}

func killLogUp(t *testing.T) {
	dir := t.TempDir()
	up := exec.Command(tideBin, "log", "up", "--data-dir", dir)
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { up.Wait(); close(exited) }()
	var roles []int
	defer func() {
		up.Process.Kill()
		<-exited
		for _, p := range roles {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}()
	waitFor(t, "14 role processes running with the steady sysmon", 2*time.Minute, func() error {
		roles = descendants(up.Process.Pid)
		steady := 0
		for _, p := range roles {
			env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p))
			if err == nil && bytes.Contains(env, []byte(steadySchedtrace)) {
				steady++
			}
		}
		if steady < 14 {
			return fmt.Errorf("%d of %d descendants run with %s", steady, len(roles), steadySchedtrace)
		}
		return nil
	})
	up.Process.Signal(syscall.SIGKILL)
	<-exited
	waitFor(t, "every role of a killed tide log up to exit", time.Minute, func() error {
		for _, p := range roles {
			if alive(p) {
				return fmt.Errorf("pid %d still runs", p)
			}
		}
		return nil
	})
}

// TestNodeRunsWithSteadySysmon: a storage node executes itself again with
// steadySchedtrace too.
func TestNodeRunsWithSteadySysmon(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready.json")
	cmd := exec.Command(tideBin, "node", "--idle", "--chord-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "data"), "--addr-file", ready)
	cmd.Env = append(os.Environ(), "GODEBUG=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitFor(t, "the node's addresses", time.Minute, func() error {
		_, err := os.Stat(ready)
		return err
	})
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(env, []byte("\x00GODEBUG="+steadySchedtrace+"\x00")) && !bytes.HasPrefix(env, []byte("GODEBUG="+steadySchedtrace+"\x00")) {
		t.Errorf("the node process runs without GODEBUG=%s", steadySchedtrace)
	}
}

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

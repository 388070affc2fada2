package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// help returns the --help output of the command at path.
func help(t *testing.T, path ...string) string {
	t.Helper()
	root := newRoot()
	var out strings.Builder
	root.SetOut(&out)
	root.SetArgs(append(path, "--help"))
	if err := root.Execute(); err != nil {
		t.Fatalf("tide %s --help: %v", strings.Join(path, " "), err)
	}
	return out.String()
}

// TestHelpSaysWhatRuns checks the help the issue found wrong or missing:
// the root and node help name the KV store, the Redis protocol and the
// log; tide up's says node i is on 127.0.0.i; --token's default for a
// joining node; the data directories of log up and log serve agree; and
// every kv and log subcommand has a description and examples.
func TestHelpSaysWhatRuns(t *testing.T) {
	root := help(t)
	for _, want := range []string{"key-value", "Redis protocol", "the log", "tide up"} {
		if !strings.Contains(root, want) {
			t.Errorf("tide --help does not mention %q", want)
		}
	}
	node := help(t, "node")
	for _, want := range []string{"key-value", "--resp-addr", "joining, the middle of the ring's largest range"} {
		if !strings.Contains(node, want) {
			t.Errorf("tide node --help does not mention %q", want)
		}
	}
	if up := help(t, "up"); !strings.Contains(up, "127.0.0.i") || strings.Contains(up, "127.0.0.(i+1)") {
		t.Errorf("tide up --help does not say node i is on 127.0.0.i:\n%s", up)
	}
	if up, serve := help(t, "log", "up"), help(t, "log", "serve"); !strings.Contains(up, `(default "tide-log")`) || !strings.Contains(serve, `(default "tide-log/state")`) {
		t.Errorf("log up and log serve keep state in different places:\n%s\n%s", up, serve)
	}
	for _, group := range []string{"kv", "log"} {
		var sub *cobra.Command
		for _, c := range newRoot().Commands() {
			if c.Name() == group {
				sub = c
			}
		}
		for _, c := range sub.Commands() {
			if c.Long == "" || c.Example == "" {
				t.Errorf("tide %s %s: want a description beyond its one line (Long) and examples", group, c.Name())
			}
		}
	}
}

// TestUpChecksConfigFirst: tide up with an --autoscale-config that does
// not exist fails before anything starts, and says how to write one.
func TestUpChecksConfigFirst(t *testing.T) {
	dir := t.TempDir()
	root := newRoot()
	root.SetOut(&strings.Builder{})
	root.SetErr(&strings.Builder{})
	missing := filepath.Join(dir, "autoscale.yaml")
	root.SetArgs([]string{"up", "--data-dir", filepath.Join(dir, "data"), "--autoscale-config", missing,
		"--host-per-node=false", "--base-port", "0", "--dashboard", "127.0.0.1:0", "--autoscale-listen", "127.0.0.1:0"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "tide autoscale config > "+missing) {
		t.Fatalf("tide up with a missing --autoscale-config: %v, want an error saying how to write it", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("tide up made its data directory before refusing its configuration: %v", err)
	}
}

// TestHelpTLSProvisioners: tide log up's and tide autoscale's help say how
// nodes and roles on Kubernetes and EC2 get TLS, and what the certificate
// names, and no longer that they do not.
func TestHelpTLSProvisioners(t *testing.T) {
	up := help(t, "log", "up")
	for _, want := range []string{"Secret per role", "/etc/tide/tls", "--tls-ca-key", "ClusterIP", "16 KiB"} {
		if !strings.Contains(up, want) {
			t.Errorf("tide log up --help does not mention %q", want)
		}
	}
	if strings.Contains(up, "not take them yet") {
		t.Error("tide log up --help still says kubernetes and aws take no TLS")
	}
	as := help(t, "autoscale")
	for _, want := range []string{"deploy/kubernetes/tls", "'*.SERVICE.NAMESPACE.svc'", "launch template"} {
		if !strings.Contains(as, want) {
			t.Errorf("tide autoscale --help does not mention %q", want)
		}
	}
}

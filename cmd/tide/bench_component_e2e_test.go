package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"tide/autoscale"
	"tide/bench"
)

// `tide bench component all` runs each role in a child `tide log serve`
// between synthetic peers, checks after each run that the role did its
// work (the command fails otherwise), and writes a capacity profile the
// autoscaler's log policy reads. Only positive figures are required: the
// machine is shared.
func TestBenchComponent(t *testing.T) {
	profile := filepath.Join(t.TempDir(), "capacity.json")
	cmd := exec.Command(tideBin, "bench", "component", "all", "--warmup", "200ms", "--duration", "500ms", "--window", "64",
		"--profile", profile, "--json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tide bench component all: %v\n%s", err, stderr.String())
	}
	var runs []bench.ComponentResult
	if err := json.Unmarshal(out, &runs); err != nil {
		t.Fatalf("decode runs: %v\n%s", err, out)
	}
	var roles []string
	for _, r := range runs {
		roles = append(roles, r.Role)
		if r.Mode != "process" || r.MsgsPerSec <= 0 || r.CmdsPerSec <= 0 || r.CPUusPerMsg <= 0 || r.Work == "" {
			t.Errorf("%s: %+v", r.Role, r)
		}
	}
	if !slices.Equal(roles, autoscale.LogRoles) {
		t.Fatalf("measured %v, want %v", roles, autoscale.LogRoles)
	}

	// The profile is what `tide log up --autoscale --capacity FILE` reads.
	b, err := os.ReadFile(profile)
	if err != nil {
		t.Fatal(err)
	}
	var cfg autoscale.LogConfig
	if err := json.Unmarshal(b, &cfg.Capacity); err != nil {
		t.Fatalf("profile is not a map of role to messages/s: %v\n%s", err, b)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("profile's capacities: %v", err)
	}
	for _, role := range autoscale.LogRoles {
		if cfg.Capacity[role] <= 0 {
			t.Errorf("profile: no capacity for %s: %v", role, cfg.Capacity)
		}
	}

	// Measuring one role again replaces its figure and keeps the others'.
	runTide(t, "bench", "component", "unbatchers", "--warmup", "100ms", "--duration", "300ms", "--profile", profile)
	after, err := bench.LoadCapacity(profile)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(cfg.Capacity) || after["replicas"] != cfg.Capacity["replicas"] || after["unbatchers"] <= 0 {
		t.Fatalf("profile after measuring unbatchers again: %v (before: %v)", after, cfg.Capacity)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLogPolicyFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "policy.yaml")
	os.WriteFile(cfg, []byte("capacity:\n  proxy-leaders: 500\nperiods: 2\nscale_in_cooldown: 15s\nmax:\n  proxy-leaders: 4\n"), 0o644)
	p, err := logPolicy("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := p.Cfg.WithDefaults()
	if c.Capacity["proxy-leaders"] != 500 || c.Periods != 2 || time.Duration(c.ScaleInCooldown) != 15*time.Second || c.Max["proxy-leaders"] != 4 || c.Max["replicas"] != 8 {
		t.Errorf("policy from the file: %+v", c)
	}
	// --capacity replaces the file's capacity and keeps the rest.
	p, err = logPolicy("replicas=900", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Cfg.Capacity["proxy-leaders"]; ok || p.Cfg.Capacity["replicas"] != 900 || p.Cfg.Periods != 2 {
		t.Errorf("policy with --capacity: %+v", p.Cfg)
	}
	for _, bad := range []struct{ body, want string }{
		{"capacity:\n  proxy-leaders: 500\nperiod: 2\n", "field period not found"},
		{"periods: 2\n", "names no capacity"},
		{"capacity:\n  proxies: 500\n", "unknown role"},
	} {
		os.WriteFile(cfg, []byte(bad.body), 0o644)
		if _, err := logPolicy("", cfg); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: error %v, want one saying %q", bad.body, err, bad.want)
		}
	}
	if _, err := logPolicy("", ""); err == nil {
		t.Error("no capacity at all was accepted")
	}
}

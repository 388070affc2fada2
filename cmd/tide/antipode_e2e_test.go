package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tide/antipode/postnotify"
)

// installed reports whether a store's server is on this machine (make deps
// installs them all).
func installed(store string) bool {
	switch store {
	case "redis":
		_, err := exec.LookPath("redis-server")
		return err == nil
	case "nats":
		_, err := exec.LookPath("nats-server")
		return err == nil
	case "postgres":
		m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
		_, err := exec.LookPath("postgres")
		return len(m) > 0 || err == nil
	}
	return true // the tide log is this binary
}

// The whole benchmark at small scale, for every post store and channel
// this machine has: 500 requests at delays of 0 and 100 ms with a lag of
// 1s, so that without antipode reads miss posts, and with it none does.
func TestAntipodeBench(t *testing.T) {
	sem := make(chan struct{}, 3) // three combinations at a time: they mostly wait out the lag
	for _, post := range postnotify.PostStores {
		for _, notify := range postnotify.Channels {
			t.Run(post+"-"+notify, func(t *testing.T) {
				if !installed(post) || !installed(notify) {
					t.Skipf("%s or %s is not installed (make deps installs both)", post, notify)
				}
				t.Parallel()
				sem <- struct{}{}
				defer func() { <-sem }()
				out := t.TempDir()
				// A bench that hangs is killed, and its progress shows where.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, tideBin, "antipode", "bench", "--post-store", post, "--notify", notify,
					"--sweep", "0,100", "--lag", "1000", "-n", "500", "--concurrency", "64", "--out", out)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				cmd.WaitDelay = 10 * time.Second
				stdout, err := cmd.Output()
				if err != nil {
					t.Fatalf("tide antipode bench: %v\n%s\n%s", err, stdout, stderr.String())
				}
				t.Logf("\n%s", stdout)
				if !strings.Contains(stderr.String(), "inconsistent") {
					t.Errorf("no progress with the running inconsistency count on stderr:\n%s", stderr.String())
				}
				var sums []postnotify.Summary
				b, err := os.ReadFile(filepath.Join(out, "sweep.json"))
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(b, &sums); err != nil || len(sums) != 4 {
					t.Fatalf("sweep.json: %d runs, %v", len(sums), err)
				}
				for _, s := range sums {
					dir := filepath.Join(out, postnotify.RunDir(msDuration(s.DelayMS), s.Antipode))
					checkRunDir(t, dir, s)
					if s.Lost != 0 || s.Consistent+s.Inconsistent != 500 {
						t.Errorf("delay %d antipode %v: %d lost, %d read", s.DelayMS, s.Antipode, s.Lost, s.Consistent+s.Inconsistent)
					}
					switch {
					case s.Antipode && (s.Inconsistent != 0 || s.BarrierErrors != 0):
						t.Errorf("delay %d with antipode: %d inconsistent reads, %d barrier errors", s.DelayMS, s.Inconsistent, s.BarrierErrors)
					case s.Antipode && s.LineageBytesPerMessage <= 0:
						t.Errorf("delay %d with antipode: no lineage bytes in notifications", s.DelayMS)
					case !s.Antipode && s.DelayMS == 100 && s.Inconsistent == 0:
						t.Errorf("delay 100 without antipode: no inconsistent read with a lag of 1s, so the test cannot fail")
					}
				}
				for _, plot := range []string{"inconsistencies-vs-delay", "consistency-window-delay-0ms", "consistency-window-delay-100ms"} {
					for _, ext := range []string{".png", ".svg"} {
						if st, err := os.Stat(filepath.Join(out, plot+ext)); err != nil || st.Size() < 1000 {
							t.Errorf("plot %s%s: %v", plot, ext, err)
						}
					}
				}
			})
		}
	}
}

func checkRunDir(t *testing.T, dir string, s postnotify.Summary) {
	t.Helper()
	var got map[string]any
	b, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err == nil {
		err = json.Unmarshal(b, &got)
	}
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	if _, ok := got["inconsistency_pct"]; !ok {
		t.Errorf("%s/summary.json has no inconsistency_pct", dir)
	}
	f, err := os.Open(filepath.Join(dir, "traces.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) != 501 || strings.Join(rows[0], ",") != strings.Join(postnotify.TraceColumns, ",") {
		t.Fatalf("%s/traces.csv: %d rows, header %v, %v", dir, len(rows), rows[0], err)
	}
	inconsistent := 0
	for _, r := range rows[1:] {
		if r[11] == "false" {
			inconsistent++
		}
	}
	if inconsistent != s.Inconsistent {
		t.Errorf("%s: traces.csv has %d inconsistent rows, summary.json %d", dir, inconsistent, s.Inconsistent)
	}
}

func TestAntipodeBenchBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"--post-store", "mysql"},
		{"--notify", "sqs"},
		{"--sweep", "0,fast"},
		{"-n", "0"},
		{"--delay", "-5"},
		{"--connect", "redis-primary"},
		{"--connect", "redis-primary=127.0.0.1:1"}, // and no replica
	} {
		out, err := exec.Command(tideBin, append([]string{"antipode", "bench", "--out", t.TempDir()}, args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "tide:") {
			t.Errorf("tide antipode bench %v: %v\n%s", args, err, out)
		}
	}
	out, err := exec.Command(tideBin, "antipode", "bench", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--post-store") || !strings.Contains(string(out), "--sweep") {
		t.Errorf("--help: %v\n%s", err, out)
	}
	out, err = exec.Command(tideBin, "netdelay", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--target") {
		t.Errorf("netdelay --help: %v\n%s", err, out)
	}
}

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

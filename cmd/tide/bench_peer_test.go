package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runPeer passes the workload to etcd-bench and reads back one JSON line
// per client count; a peer that answers for fewer counts is an error.
// (The real etcd-bench is a module of its own, too slow to build in CI;
// this checks the contract with a stand-in script.)
func TestRunPeerContract(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "peer")
	body := `#!/bin/sh
echo "$@" > ` + filepath.Join(dir, "args") + `
for n in 1 100; do echo "{\"mode\":\"etcd\",\"clients\":$n,\"ops_per_sec\":$((n*10)),\"p50_ms\":1,\"p99_ms\":2}"; done
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	res, err := runPeer(context.Background(), script, "put", []int{1, 100}, 3*time.Second, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[1].Clients != 100 || res[1].OpsPerSec != 1000 {
		t.Fatalf("results %+v", res)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	for _, want := range []string{"--clients 1,100", "--duration 3s", "--workload put", "--json"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("etcd-bench called with %q, missing %q", args, want)
		}
	}
	if _, err := runPeer(context.Background(), script, "put", []int{1, 100, 1000}, time.Second, &progress); err == nil {
		t.Error("a peer answering 2 of 3 client counts was accepted")
	}
	if _, _, err := peerBinary(context.Background(), filepath.Join(dir, "missing"), &progress); err == nil {
		t.Error("a missing --peer-bin was accepted")
	}
}

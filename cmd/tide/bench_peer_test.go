package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tide/bench"
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

// Each ratio pairs tide's and etcd's figures of the same round, and with
// several rounds the table gives their median and every round's ratio.
func TestPeerRatiosByRound(t *testing.T) {
	var tide, peer []bench.LogResult
	// Round r: tide at 100 clients does 1000*r ops/s against etcd's 100
	// (ratios 10, 20, 30); etcd's p50 halves each round.
	for r := 1; r <= 3; r++ {
		tide = append(tide, bench.LogResult{Round: r, Mode: "batched", Workload: "put", Clients: 100, OpsPerSec: float64(1000 * r), P50ms: 1, P99ms: 4})
		peer = append(peer, bench.LogResult{Round: r, Mode: "etcd", Workload: "put", Clients: 100, OpsPerSec: 100, P50ms: 8 / float64(int(1)<<r), P99ms: 8})
	}
	// Rounds listed out of order must still pair by round.
	slices.Reverse(peer)
	var out bytes.Buffer
	if err := printPeerRatios(&out, tide, peer); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"median of 3 rounds", "20.00x", "10.00x 20.00x 30.00x", "0.50x"} {
		if !strings.Contains(got, want) {
			t.Errorf("ratios lack %q:\n%s", want, got)
		}
	}
	// With one round there is no round column and the ratio is that round's.
	out.Reset()
	one := []bench.LogResult{{Mode: "batched", Workload: "get-quorum", Clients: 10, OpsPerSec: 500, P50ms: 1, P99ms: 2}}
	if err := printPeerRatios(&out, one, []bench.LogResult{{Mode: "etcd", Workload: "get", Clients: 10, OpsPerSec: 100, P50ms: 2, P99ms: 2}}); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.Contains(got, "5.00x") || strings.Contains(got, "BY ROUND") {
		t.Errorf("one round:\n%s", got)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		in := slices.Clone(c.in)
		if got := median(in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !slices.Equal(in, c.in) {
			t.Errorf("median changed its input to %v", in)
		}
	}
}

// Results print round by round, tide's modes before the peer, each mode's
// rows by clients.
func TestSortedResults(t *testing.T) {
	tide := []bench.LogResult{
		{Round: 1, Mode: "batched", Clients: 100}, {Round: 1, Mode: "unreplicated", Clients: 100},
		{Round: 1, Mode: "batched", Clients: 1000}, {Round: 2, Mode: "batched", Clients: 100},
	}
	peer := []bench.LogResult{{Round: 1, Mode: "etcd", Clients: 100}, {Round: 1, Mode: "etcd", Clients: 1000}, {Round: 2, Mode: "etcd", Clients: 100}}
	var got []string
	for _, r := range sortedResults(tide, peer) {
		got = append(got, fmt.Sprintf("%d/%s/%d", r.Round, r.Mode, r.Clients))
	}
	want := []string{"1/batched/100", "1/batched/1000", "1/unreplicated/100", "1/etcd/100", "1/etcd/1000", "2/batched/100", "2/etcd/100"}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

// A replicated mode's share of the ceiling pairs the two runs of one
// round at the same clients and workload; the ceiling itself is left out
// of the ratios against etcd.
func TestCeilingRatios(t *testing.T) {
	var res []bench.LogResult
	for r := 1; r <= 3; r++ {
		res = append(res,
			bench.LogResult{Round: r, Mode: "batched", Workload: "put", Clients: 100, OpsPerSec: float64(10 * r)},
			bench.LogResult{Round: r, Mode: "unreplicated", Workload: "put", Clients: 100, OpsPerSec: 100},
			// No ceiling at 1000 clients: no share.
			bench.LogResult{Round: r, Mode: "batched", Workload: "put", Clients: 1000, OpsPerSec: 50})
	}
	var out bytes.Buffer
	if err := printCeilingRatios(&out, res); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.Contains(got, "20%") || !strings.Contains(got, "10% 20% 30%") || strings.Contains(got, "1000") {
		t.Errorf("shares of the ceiling:\n%s", got)
	}
	out.Reset()
	if err := printCeilingRatios(&out, res[:1]); err != nil || out.Len() != 0 {
		t.Errorf("no ceiling measured, yet printed %q (%v)", out.String(), err)
	}
	out.Reset()
	peer := []bench.LogResult{{Round: 1, Mode: "etcd", Workload: "put", Clients: 100, OpsPerSec: 5, P50ms: 1, P99ms: 1}}
	if err := printPeerRatios(&out, res, peer); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "unreplicated") {
		t.Errorf("the ceiling compared with etcd:\n%s", out.String())
	}
}

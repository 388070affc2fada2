package bench

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"tide/cluster"
)

// RedisOpResult is one redis-benchmark figure of RedisCommands.
type RedisOpResult struct {
	Target string  `json:"target"`
	Test   string  `json:"test"`
	RPS    float64 `json:"requests_per_sec"`
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
	// CPUus is the CPU time the target's server processes spent per
	// request (user and system, summed over the processes), in µs.
	CPUus float64 `json:"server_cpu_us_per_request"`
}

// RedisCost compares a conditional write or counter with a plain SET on
// one target: the ratio of server CPU per request (how much more a
// request costs) and of requests per second (how much slower it runs).
type RedisCost struct {
	Target   string  `json:"target"`
	Test     string  `json:"test"`
	CPURatio float64 `json:"cpu_per_request_vs_set"`
	RPSRatio float64 `json:"requests_per_sec_vs_set"`
}

// RedisCommandsReport is what RedisCommands measured.
type RedisCommandsReport struct {
	Results []RedisOpResult `json:"results"`
	Costs   []RedisCost     `json:"costs"`
}

// The tests of RedisCommands, as named in its results.
const (
	TestSet   = "SET"
	TestGet   = "GET"
	TestIncr  = "INCR"
	TestSetNX = "SET NX"
)

type redisCmdTest struct {
	name string
	args []string
}

// redisCmdTests are redis-benchmark's arguments for each test. SET and
// GET spread over keyspace keys; INCR hits one key, so that every request
// is a read-modify-write of the same value; SET NX goes to random keys of
// a space so large that almost every one writes.
func redisCmdTests(keyspace int) []redisCmdTest {
	return []redisCmdTest{
		{TestSet, []string{"-r", strconv.Itoa(keyspace), "SET", "key:__rand_int__", "xxx"}},
		{TestGet, []string{"-r", strconv.Itoa(keyspace), "GET", "key:__rand_int__"}},
		{TestIncr, []string{"INCR", "bench:counter"}},
		{TestSetNX, []string{"-r", "1000000000", "SET", "nx:__rand_int__", "xxx", "NX"}},
	}
}

// RunRedisBenchmarkCSV runs redis-benchmark --csv with args (one test)
// and returns its requests per second and p50 and p99 latency.
func RunRedisBenchmarkCSV(ctx context.Context, args ...string) (rps, p50, p99 float64, err error) {
	a := append([]string{"--csv"}, args...)
	out, err := exec.CommandContext(ctx, "redis-benchmark", a...).CombinedOutput()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("redis-benchmark %s: %v\n%s", strings.Join(a, " "), err, out)
	}
	return parseBenchCSV(out)
}

// parseBenchCSV reads redis-benchmark --csv output (a header, then one
// line per test) and returns the figures of its one test.
func parseBenchCSV(out []byte) (rps, p50, p99 float64, err error) {
	r := csv.NewReader(strings.NewReader(string(out)))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("redis-benchmark --csv: %v\n%s", err, out)
	}
	col := map[string]int{}
	for _, row := range rows {
		if len(row) > 0 && row[0] == "test" {
			for i, c := range row {
				col[c] = i
			}
			continue
		}
		if len(col) == 0 || len(row) != len(col) {
			continue
		}
		get := func(name string) (float64, error) {
			i, ok := col[name]
			if !ok {
				return 0, fmt.Errorf("redis-benchmark --csv: no column %q", name)
			}
			return strconv.ParseFloat(row[i], 64)
		}
		if rps, err = get("rps"); err != nil {
			return 0, 0, 0, err
		}
		if p50, err = get("p50_latency_ms"); err != nil {
			return 0, 0, 0, err
		}
		if p99, err = get("p99_latency_ms"); err != nil {
			return 0, 0, 0, err
		}
		return rps, p50, p99, nil
	}
	return 0, 0, 0, fmt.Errorf("redis-benchmark printed no results:\n%s", out)
}

// RedisCommands runs SET, GET, INCR (one key) and SET NX (random keys)
// with redis-benchmark against a 3-node tide cluster (N=3, W=2, R=2,
// --kv-sync sync) and a single redis-server (persistence off), and
// reports each figure with its server CPU per request and, per target,
// the cost of INCR and SET NX against SET.
func RedisCommands(ctx context.Context, requests, clients, keyspace int, sync string, log io.Writer) (RedisCommandsReport, error) {
	var rep RedisCommandsReport
	if requests < 1 || clients < 1 || keyspace < 1 {
		return rep, fmt.Errorf("requests, clients and keyspace must be at least 1")
	}
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		return rep, fmt.Errorf("redis-benchmark not found: install Debian's redis-tools and redis-server")
	}
	dir, err := os.MkdirTemp("", "tide-bench-rediscmds-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	run := func(target string, pids []int, port int) error {
		var set RedisOpResult
		for _, t := range redisCmdTests(keyspace) {
			a := append([]string{"-p", strconv.Itoa(port), "-n", strconv.Itoa(requests), "-c", strconv.Itoa(clients)}, t.args...)
			cpu0, err := ProcCPU(pids)
			if err != nil {
				return err
			}
			rps, p50, p99, err := RunRedisBenchmarkCSV(ctx, a...)
			if err != nil {
				return err
			}
			cpu1, err := ProcCPU(pids)
			if err != nil {
				return err
			}
			r := RedisOpResult{Target: target, Test: t.name, RPS: rps, P50ms: p50, P99ms: p99,
				CPUus: float64((cpu1 - cpu0).Microseconds()) / float64(requests)}
			fmt.Fprintf(log, "  %s %s: %.0f req/s, p50 %.3f ms, p99 %.3f ms, %.1f µs server CPU per request\n",
				target, r.Test, r.RPS, r.P50ms, r.P99ms, r.CPUus)
			rep.Results = append(rep.Results, r)
			switch t.name {
			case TestSet:
				set = r
			case TestIncr, TestSetNX:
				c := RedisCost{Target: target, Test: t.name}
				if set.CPUus > 0 {
					c.CPURatio = r.CPUus / set.CPUus
				}
				if set.RPS > 0 {
					c.RPSRatio = r.RPS / set.RPS
				}
				rep.Costs = append(rep.Costs, c)
			}
		}
		return nil
	}

	fmt.Fprintf(log, "starting a 3-node tide cluster (--kv-sync %s)\n", sync)
	local := &cluster.Local{Dir: filepath.Join(dir, "tide")}
	port, pids, err := startTideRESP(ctx, local, 3, "--kv-sync", sync)
	if err == nil {
		err = run(fmt.Sprintf("tide (3 nodes, N=3 W=2 R=2, kv-sync %s)", sync), pids, port)
	}
	local.StopAll(5 * time.Second)
	if err != nil {
		return rep, err
	}

	fmt.Fprintln(log, "starting redis-server")
	rport, cmd, err := startRedis(ctx, dir)
	if err != nil {
		return rep, err
	}
	err = run("redis-server (single, unreplicated)", []int{cmd.Process.Pid}, rport)
	cmd.Process.Kill()
	cmd.Wait()
	return rep, err
}

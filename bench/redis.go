package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"tide/cluster"
)

// RedisResult is one redis-benchmark figure.
type RedisResult struct {
	Target   string  `json:"target"`
	Pipeline int     `json:"pipeline"`
	Test     string  `json:"test"`
	RPS      float64 `json:"requests_per_sec"`
	P50ms    float64 `json:"p50_ms"`
	// CPUus is the CPU time the target's server processes spent per
	// request (user and system, summed over the processes), in µs: what
	// a request costs the servers, whatever the machine's idle time.
	CPUus float64 `json:"server_cpu_us_per_request"`
	// ClientCPUus is redis-benchmark's CPU time per request, in µs: on
	// a machine of a few cores the client's share bounds the servers'.
	ClientCPUus float64 `json:"client_cpu_us_per_request"`
}

var rpsLine = regexp.MustCompile(`([A-Z]+): ([0-9.]+) requests per second, p50=([0-9.]+) msec`)

// RunRedisBenchmark runs redis-benchmark and parses its -q summary.
func RunRedisBenchmark(ctx context.Context, target string, pipeline int, args ...string) ([]RedisResult, error) {
	a := append([]string{"-q"}, args...)
	if pipeline > 1 {
		a = append(a, "-P", strconv.Itoa(pipeline))
	}
	cmd := exec.CommandContext(ctx, "redis-benchmark", a...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark %s: %v\n%s", strings.Join(a, " "), err, out)
	}
	var res []RedisResult
	// -q output rewrites progress with carriage returns; the summaries
	// are the last segment of each line.
	for _, seg := range regexp.MustCompile(`[\r\n]`).Split(string(out), -1) {
		if m := rpsLine.FindStringSubmatch(seg); m != nil {
			rps, _ := strconv.ParseFloat(m[2], 64)
			p50, _ := strconv.ParseFloat(m[3], 64)
			res = append(res, RedisResult{Target: target, Pipeline: max(pipeline, 1), Test: m[1], RPS: rps, P50ms: p50})
		}
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("redis-benchmark printed no results:\n%s", out)
	}
	if n := requestsArg(a); n > 0 {
		cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		for i := range res {
			res[i].ClientCPUus = float64(cpu.Microseconds()) / float64(n*len(res))
		}
	}
	return res, nil
}

// requestsArg is the -n of redis-benchmark arguments, or 0.
func requestsArg(a []string) int {
	for i := 0; i+1 < len(a); i++ {
		if a[i] == "-n" {
			n, _ := strconv.Atoi(a[i+1])
			return n
		}
	}
	return 0
}

// startRedis starts redis-server with the given extra arguments,
// persistence off, on a port of its own. redis-server cannot take port 0
// and report what it got, so it is given a port free a moment ago; should
// another process take it (or a cluster node's bus port, 10000 above)
// meanwhile, redis-server exits and another port is tried. It returns
// once the server says it accepts connections: its own port, not another
// process's answering on it.
func startRedis(ctx context.Context, dir string, extra ...string) (int, *exec.Cmd, error) {
	var last error
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		d := filepath.Join(dir, fmt.Sprint(port))
		os.MkdirAll(d, 0o755)
		args := append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d}, extra...)
		cmd := exec.CommandContext(ctx, "redis-server", args...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return 0, nil, err
		}
		if err := cmd.Start(); err != nil {
			return 0, nil, fmt.Errorf("start redis-server: %w", err)
		}
		sc := bufio.NewScanner(out)
		var said []string
		ready := false
		for !ready && sc.Scan() {
			said = append(said, sc.Text())
			ready = strings.Contains(sc.Text(), "Ready to accept connections")
		}
		if ready {
			go io.Copy(io.Discard, out) // the rest of its log
			return port, cmd, nil
		}
		cmd.Wait()
		if len(said) > 3 {
			said = said[len(said)-3:]
		}
		last = fmt.Errorf("redis-server on port %d exited: %s", port, strings.Join(said, " / "))
	}
	return 0, nil, last
}

// RedisComparison runs redis-benchmark -t set,get against a 3-node tide
// cluster (N=3, W=2, R=2), a single redis-server, and a Redis Cluster of 3
// masters with 1 replica each, for every pipeline depth. With keyspace > 0,
// the requests spread over that many keys (redis-benchmark -r) instead of
// one.
func RedisComparison(ctx context.Context, requests, clients, keyspace int, pipelines []int, log io.Writer) ([]RedisResult, error) {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		return nil, fmt.Errorf("redis-benchmark not found: install Debian's redis-tools and redis-server")
	}
	dir, err := os.MkdirTemp("", "tide-bench-redis-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var results []RedisResult
	// run benchmarks target, whose server processes are pids, one test
	// at a time so that each gets its own CPU figure.
	run := func(target string, pids []int, args ...string) error {
		for _, p := range pipelines {
			fmt.Fprintf(log, "redis-benchmark against %s, pipeline %d\n", target, p)
			for _, test := range []string{"set", "get"} {
				a := []string{"-t", test, "-n", fmt.Sprint(requests), "-c", fmt.Sprint(clients)}
				if keyspace > 0 {
					a = append(a, "-r", fmt.Sprint(keyspace))
				}
				cpu0, err := ProcCPU(pids)
				if err != nil {
					return err
				}
				r, err := RunRedisBenchmark(ctx, target, p, append(a, args...)...)
				if err != nil {
					return err
				}
				cpu1, err := ProcCPU(pids)
				if err != nil {
					return err
				}
				for i := range r {
					r[i].CPUus = float64((cpu1 - cpu0).Microseconds()) / float64(requests) / float64(len(r))
					x := r[i]
					fmt.Fprintf(log, "  %s %s: %.0f req/s, p50 %.3f ms, CPU per request: %.1f µs servers, %.1f µs client\n", target, x.Test, x.RPS, x.P50ms, x.CPUus, x.ClientCPUus)
				}
				results = append(results, r...)
			}
		}
		return nil
	}

	// tide: three nodes, RESP on each, benchmarked through the first and
	// as a cluster; once with every write fsynced
	// before its acknowledgement (the default), once with periodic fsync
	// (acknowledged writes survive a process crash, as with Redis's
	// appendfsync everysec; the Redis servers here persist nothing).
	for _, mode := range []struct{ name, sync string }{
		{"tide (3 nodes, N=3 W=2 R=2, fsync before ack)", "always"},
		{"tide (3 nodes, N=3 W=2 R=2, fsync every 100ms)", "periodic"},
	} {
		local := &cluster.Local{Dir: filepath.Join(dir, "tide-"+mode.sync)}
		respPort, pids, err := startTideRESP(ctx, local, 3, "--kv-sync", mode.sync)
		if err != nil {
			local.StopAll(5 * time.Second)
			return nil, err
		}
		err = run(mode.name, pids, "-p", fmt.Sprint(respPort))
		if err == nil {
			// As a Redis Cluster client: CLUSTER NODES spreads the
			// clients over the three nodes, each coordinating its share.
			err = run(strings.Replace(mode.name, ")", ", redis-benchmark --cluster)", 1), pids, "--cluster", "-p", fmt.Sprint(respPort))
		}
		local.StopAll(5 * time.Second)
		if err != nil {
			return results, err
		}
	}

	// A single redis-server.
	port, cmd, err := startRedis(ctx, dir)
	if err != nil {
		return results, err
	}
	err = run("redis-server (single, unreplicated)", []int{cmd.Process.Pid}, "-p", fmt.Sprint(port))
	cmd.Process.Kill()
	cmd.Wait()
	if err != nil {
		return results, err
	}

	// Redis Cluster: 3 masters, 1 replica each.
	var ports []string
	var cmds []*exec.Cmd
	var pids []int
	defer func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for range 6 {
		p, c, err := startRedis(ctx, dir, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
		if err != nil {
			return results, err
		}
		ports = append(ports, fmt.Sprintf("127.0.0.1:%d", p))
		cmds = append(cmds, c)
		pids = append(pids, c.Process.Pid)
	}
	create := append(append([]string{"--cluster", "create"}, ports...), "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", create...).CombinedOutput(); err != nil {
		return results, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := waitClusterOK(ctx, ports[0]); err != nil {
		return results, err
	}
	_, firstPort, _ := net.SplitHostPort(ports[0])
	err = run("Redis Cluster (3 masters + 3 replicas)", pids, "--cluster", "-p", firstPort)
	if err != nil {
		return results, err
	}

	// The reference: a Go RESP server in this process that parses each
	// command and answers it, storing nothing. No Go server can beat it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return results, err
	}
	go ServeNullRESP(ctx, ln)
	err = run("Go RESP server storing nothing (reference)", []int{os.Getpid()}, "-p", portOf(ln.Addr().String()))
	ln.Close()
	return results, err
}

func waitClusterOK(ctx context.Context, addr string) error {
	host, port, _ := net.SplitHostPort(addr)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		out, _ := exec.CommandContext(ctx, "redis-cli", "-h", host, "-p", port, "cluster", "info").Output()
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "cluster_state:ok" {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("redis cluster did not reach cluster_state:ok")
}

// startTideRESP starts a tide ring of n nodes with RESP on each and returns
// the first node's RESP port, once every node sees the whole ring, and the
// nodes' process IDs.
func startTideRESP(ctx context.Context, local *cluster.Local, n int, extra ...string) (int, []int, error) {
	var pids []int
	var first, resp string
	for i := range n {
		// Each node binds port 0 and reports what it holds.
		spec := cluster.NodeSpec{Name: fmt.Sprintf("node%d", i+1), ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Replicas: 3,
			Join: first, Extra: append([]string{"--resp-addr", "127.0.0.1:0"}, extra...)}
		p, err := local.Launch(ctx, spec)
		if err != nil {
			return 0, nil, err
		}
		if i == 0 {
			first, resp = p.Ready.ChordAddr, p.Ready.RESPAddr
		}
		pids = append(pids, p.Pid())
	}
	for deadline := time.Now().Add(time.Minute); ; {
		out, err := exec.CommandContext(ctx, "redis-cli", "-p", portOf(resp), "info").Output()
		if err == nil && strings.Contains(string(out), fmt.Sprintf("tide_ring_members:%d", n)) {
			break
		}
		if time.Now().After(deadline) {
			return 0, nil, fmt.Errorf("tide ring did not form: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	p, _ := strconv.Atoi(portOf(resp))
	return p, pids, nil
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// Command etcd-bench measures a 3-member etcd cluster with the workload
// `tide bench log` runs against the tide log: closed-loop clients, each
// putting 16-byte values to its own keys, after a one-second warm-up. Each
// member is an embedded etcd server (go.etcd.io/etcd/server/v3/embed) in a
// child process of its own, with its WAL fsynced as etcd does by default,
// and the clients share one clientv3 client over all three members, as
// tide's clients share one node.Client.
//
// It lives in a Go module of its own (tide/bench/peers) so that the tide
// binary does not depend on etcd; `tide bench log --peer etcd` builds and
// runs it, and prints both sides with their ratio.
//
//	etcd-bench --clients 1,100,1000 --duration 8s --json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Result is one measurement; its JSON matches tide's bench.LogResult.
type Result struct {
	Mode      string  `json:"mode"`
	Clients   int     `json:"clients"`
	Seconds   float64 `json:"seconds"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	// CPU per operation in microseconds over the measured seconds: of the
	// members' processes, and of this one (the clients).
	ServerCPUus float64 `json:"server_cpu_us_per_op,omitempty"`
	ClientCPUus float64 `json:"client_cpu_us_per_op,omitempty"`
}

func main() {
	log.SetFlags(0)
	if len(os.Args) > 1 && os.Args[1] == "member" {
		if err := member(os.Args[2:]); err != nil {
			log.Fatalf("etcd-bench member: %v", err)
		}
		return
	}
	fs := flag.NewFlagSet("etcd-bench", flag.ExitOnError)
	clients := fs.String("clients", "10", "closed-loop clients, comma-separated for several runs")
	duration := fs.Duration("duration", 10*time.Second, "measurement time per run (after 1s of warm-up)")
	members := fs.Int("members", 3, "etcd members, each a child process")
	mode := fs.String("workload", "put", "put (16-byte values) or get (linearizable reads of keys put first)")
	dir := fs.String("dir", "", "data directory (default: a temporary one, removed at the end)")
	asJSON := fs.Bool("json", false, "print results as JSON lines")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: etcd-bench [flags]\n\nMeasures a %s-member etcd cluster with tide bench log's workload.\n\n", "3")
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	counts, err := parseCounts(*clients)
	if err != nil {
		log.Fatalf("etcd-bench: --clients: %v", err)
	}
	if *mode != "put" && *mode != "get" {
		log.Fatalf("etcd-bench: --workload %q: want put or get", *mode)
	}
	if *members < 1 {
		log.Fatalf("etcd-bench: --members %d: want at least 1", *members)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, counts, *duration, *members, *mode, *dir, *asJSON); err != nil {
		log.Fatalf("etcd-bench: %v", err)
	}
}

func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, counts []int, duration time.Duration, n int, mode, dir string, asJSON bool) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "etcd-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	clientURLs, pids, stopAll, err := startMembers(ctx, dir, n)
	defer stopAll()
	if err != nil {
		return err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: clientURLs, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	for _, c := range counts {
		res, err := measure(ctx, cli, pids, mode, c, duration)
		if err != nil {
			return err
		}
		if asJSON {
			b, _ := json.Marshal(res)
			fmt.Println(string(b))
		} else {
			fmt.Printf("etcd-%s clients=%-4d %8.0f ops/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", mode, c, res.OpsPerSec, res.P50ms, res.P99ms, res.Errors)
		}
	}
	return nil
}

// memberHosts returns n loopback addresses of their own for the members,
// 127.R.R.i with R random: etcd needs every member's peer URL before any
// member starts, and no other process takes a port on an address nobody
// else uses (outgoing connections to 127.0.0.1 come from 127.0.0.1), so
// every member can have the standard ports without a port being picked
// free and bound later, when another process may have taken it.
func memberHosts(n int) []string {
	prefix := fmt.Sprintf("127.%d.%d.", 1+rand.IntN(254), 1+rand.IntN(254))
	var hosts []string
	for i := range n {
		hosts = append(hosts, fmt.Sprint(prefix, i+1))
	}
	return hosts
}

// startMembers starts n members as child processes and returns their
// client URLs once all serve, and a function that stops them.
func startMembers(ctx context.Context, dir string, n int) ([]string, []int, func(), error) {
	hosts := memberHosts(n)
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://%s:2380", i, hosts[i]))
	}
	self, err := os.Executable()
	if err != nil {
		return nil, nil, func() {}, err
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range cmds {
			done := make(chan struct{})
			go func() { c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				c.Process.Kill()
				<-done
			}
		}
	}
	var urls []string
	var pids []int
	for i := range n {
		client := fmt.Sprintf("http://%s:2379", hosts[i])
		urls = append(urls, client)
		c := exec.Command(self, "member", "--name", fmt.Sprintf("m%d", i), "--dir", filepath.Join(dir, fmt.Sprintf("m%d", i)),
			"--client", client, "--peer", fmt.Sprintf("http://%s:2380", hosts[i]), "--initial", strings.Join(initial, ","))
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		if err := c.Start(); err != nil {
			return nil, nil, stop, err
		}
		cmds = append(cmds, c)
		pids = append(pids, c.Process.Pid)
	}
	// Every member answers once the cluster has a leader.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: urls, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, nil, stop, err
	}
	defer cli.Close()
	for {
		if _, err := cli.Put(wctx, "etcd-bench-ready", "1"); err == nil {
			return urls, pids, stop, nil
		} else if wctx.Err() != nil {
			return nil, nil, stop, fmt.Errorf("etcd cluster did not come up: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// member runs one embedded etcd server until SIGTERM.
func member(args []string) error {
	fs := flag.NewFlagSet("member", flag.ExitOnError)
	name := fs.String("name", "", "member name")
	dir := fs.String("dir", "", "data directory")
	client := fs.String("client", "", "client URL")
	peer := fs.String("peer", "", "peer URL")
	initial := fs.String("initial", "", "initial cluster (name=peerURL,...)")
	fs.Parse(args)
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = *name, *dir
	cu, err := url.Parse(*client)
	if err != nil {
		return err
	}
	pu, err := url.Parse(*peer)
	if err != nil {
		return err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = *initial
	cfg.InitialClusterToken = "etcd-bench"
	cfg.LogLevel = "fatal" // errors reach e.Err(); shutdown noise does not
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return err
	}
	select {
	case <-sig:
		return nil
	case err := <-e.Err():
		return err
	}
}

// measure drives clients closed-loop clients for duration after a second
// of warm-up.
func measure(ctx context.Context, cli *clientv3.Client, pids []int, mode string, clients int, duration time.Duration) (Result, error) {
	res := Result{Mode: "etcd", Clients: clients}
	value := "0123456789abcdef"
	if mode == "get" {
		res.Mode = "etcd-get"
		for i := range clients {
			if _, err := cli.Put(ctx, fmt.Sprintf("c%d-0", i), value); err != nil {
				return res, err
			}
		}
	}
	warm := time.Now().Add(time.Second)
	end := warm.Add(duration)
	var mu sync.Mutex
	var lat []float64
	var errs int
	// CPU used from the end of the warm-up to the end of the run.
	var server0, client0 float64
	var cpuErr error
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		time.Sleep(time.Until(warm))
		client0 = selfCPU()
		server0, cpuErr = processesCPU(pids)
	}()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			bad := 0
			// Every command may take 10 s: one deadline per client, 10 s
			// past the end, gives each at least that, without a timer
			// per command (as tide's side does).
			opCtx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
			defer cancel()
			for n := 0; ; n++ {
				t := time.Now()
				if t.After(end) || ctx.Err() != nil {
					break
				}
				var err error
				if mode == "get" {
					_, err = cli.Get(opCtx, fmt.Sprintf("c%d-0", i)) // linearizable by default
				} else {
					_, err = cli.Put(opCtx, fmt.Sprintf("c%d-%d", i, n%1000), value)
				}
				if t.Before(warm) {
					continue
				}
				if err != nil {
					bad++
					continue
				}
				mine = append(mine, float64(time.Since(t).Microseconds())/1000)
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	<-sampled
	server, err := processesCPU(pids)
	if err = errors.Join(cpuErr, err); err != nil {
		return res, fmt.Errorf("CPU of the members: %w", err)
	}
	if len(lat) > 0 {
		res.ServerCPUus = (server - server0) / float64(len(lat)) * 1e6
		res.ClientCPUus = (selfCPU() - client0) / float64(len(lat)) * 1e6
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return res, err
	}
	res.Seconds = duration.Seconds()
	res.Ops = len(lat)
	res.Errors = errs
	res.OpsPerSec = float64(len(lat)) / duration.Seconds()
	res.P50ms = percentile(lat, 50)
	res.P99ms = percentile(lat, 99)
	return res, nil
}

// processesCPU is the CPU time, user and system, in seconds, that the
// processes pids have used so far (/proc/PID/stat, in clock ticks of
// 1/100 s, which is USER_HZ on Linux).
func processesCPU(pids []int) (float64, error) {
	var total float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// The command name, in parentheses, may hold spaces: fields
		// are counted after it. utime and stime are fields 14 and 15.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
		}
		for _, s := range f[11:13] {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			total += v / 100
		}
	}
	return total, nil
}

// selfCPU is this process's CPU time so far, user and system, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"tide/cluster"
	"tide/paxos/node"
)

// `tide bench component` measures the capacity of one instance of a log
// role, as the seed did by placing each component between mock components
// that flood it: the autoscaler's log policy divides a role's load by it.
//
// The role runs in a child process, `tide log serve --role ADDR`: the very
// process a deployment runs for it (one role per process), with its real
// transport and, for acceptors and replicas, its pebble store synced
// before every answer. A process of its own is what lets the benchmark
// read the role's CPU time apart from the synthetic peers' (from
// /proc/PID/stat), and keeps the peers' garbage collector and scheduler
// out of the role's. The synthetic peers run in the benchmark process,
// over package transport, and cost the role's machine as little as they
// can (componentwire.go). ComponentOptions.InProcess runs the role through
// node.ServeRoles in the benchmark's process instead, for `go test -bench`
// and its CPU profiles.

// ComponentOptions are the settings of `tide bench component`.
type ComponentOptions struct {
	// Binary is the tide executable that runs the role (`tide log serve`).
	// Default: this process's executable.
	Binary string
	// InProcess runs the role in this process through node.ServeRoles
	// instead of a child process: no binary is needed, and a CPU profile
	// of the benchmark shows the role's code, but the role's CPU time
	// cannot be told from the synthetic peers'.
	InProcess bool
	// Warmup runs the flood before the measurement starts. Default 1s.
	Warmup time.Duration
	// Duration is the measurement. Default 3s.
	Duration time.Duration
	// BatchSize is the commands of each slot, batch or reply batch.
	// Default 40, the log's default batch size.
	BatchSize int
	// Window is the slots (batches) in flight between the synthetic
	// upstream and downstream. Default 256.
	Window int
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

func (o ComponentOptions) withDefaults() ComponentOptions {
	if o.Warmup == 0 {
		o.Warmup = time.Second
	}
	if o.Duration == 0 {
		o.Duration = 3 * time.Second
	}
	if o.BatchSize == 0 {
		o.BatchSize = 40
	}
	if o.Window == 0 {
		o.Window = 256
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}

// ComponentResult is one role measured once.
type ComponentResult struct {
	Role  string `json:"role"` // as autoscale.LogRoles names it
	Kind  string `json:"kind"` // as `tide log serve --kind` names it
	Round int    `json:"round"`
	// Mode is "process" (a child `tide log serve`) or "in-process".
	Mode    string  `json:"mode"`
	Seconds float64 `json:"seconds"`
	// BatchSize is the commands per slot, batch or reply batch (a batcher
	// receives one command per message and sends batches of up to it).
	BatchSize int `json:"batch_size"`
	// Window is the commands in flight.
	Window int64 `json:"window_commands"`
	// MessagesIn and MessagesOut are the role's own counts over the
	// measurement (tide_paxos_messages_{in,out}_total, what the autoscaler
	// scrapes).
	MessagesIn  int64 `json:"messages_in"`
	MessagesOut int64 `json:"messages_out"`
	// Commands is what the role handed on over the measurement, counted
	// by the synthetic downstream.
	Commands   int64   `json:"commands"`
	MsgsPerSec float64 `json:"msgs_per_sec"`
	CmdsPerSec float64 `json:"cmds_per_sec"`
	// RoleCPU is the role process's CPU seconds (user and system) over the
	// measurement, PeersCPU the benchmark process's (the synthetic peers;
	// in process, both together). Their sum over Seconds is how much of
	// the machine's cores the pair used.
	RoleCPU  float64 `json:"role_cpu_seconds"`
	PeersCPU float64 `json:"peers_cpu_seconds"`
	// CPUusPerMsg is the role's CPU time per message received, in
	// microseconds (0 in process).
	CPUusPerMsg float64 `json:"cpu_us_per_msg,omitempty"`
	// Work says what the role was checked to have done.
	Work string `json:"work"`
}

var componentKinds = map[string]string{"batchers": "batcher", "proxy-leaders": "proxy", "acceptor-groups": "acceptor",
	"replicas": "replica", "unbatchers": "unbatcher"}

// Component runs one real instance of role (one of autoscale.LogRoles)
// between synthetic upstream and downstream peers over real sockets,
// floods it with the messages it normally receives, with o.Window slots in
// flight, and measures what it handles at full speed. Then it checks that
// the role did the work: every slot chosen, every vote in pebble, every
// command executed and answered, every reply relayed.
func Component(ctx context.Context, role string, round int, o ComponentOptions) (ComponentResult, error) {
	o = o.withDefaults()
	res := ComponentResult{Role: role, Kind: componentKinds[role], Round: round, Mode: "process", BatchSize: o.BatchSize}
	if o.InProcess {
		res.Mode = "in-process"
	}
	// The role's ports stay bound until it starts, so that the synthetic
	// peers, bound meanwhile, cannot be given them.
	var held []net.Listener
	release := func() {
		for _, l := range held {
			l.Close()
		}
		held = nil
	}
	defer release()
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return res, fmt.Errorf("bind the role's ports: %w", err)
		}
		held = append(held, l)
	}
	addr, httpAddr := held[0].Addr().String(), held[1].Addr().String()
	r, err := newRig(role, addr, o.BatchSize, o.Window)
	if err != nil {
		return res, err
	}
	defer r.close()
	res.Window = r.win.size
	if role == "acceptor-groups" || role == "replicas" || role == "proxy-leaders" {
		res.Window *= int64(o.BatchSize) // slots
	}
	dir, err := os.MkdirTemp("", "tide-bench-component-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	dataDir := filepath.Join(dir, "state")
	d := node.Deployment{Log: r.cfg, HTTP: map[string]string{addr: httpAddr}}
	release()
	running, err := startRole(ctx, o, d, r.kind, addr, dir, dataDir, httpAddr)
	if err != nil {
		return res, err
	}
	defer running.stop()

	fctx, stopFlood := context.WithCancel(ctx)
	defer stopFlood()
	flooded := make(chan error, 1)
	go func() { flooded <- r.flood(fctx) }()
	wait := func(d time.Duration) error {
		select {
		case err := <-flooded:
			return errors.Join(fmt.Errorf("%s: flood ended early", role), err, r.failed())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return r.failed()
		}
	}
	if err := wait(o.Warmup); err != nil {
		return res, err
	}
	start, err := sample(ctx, r, running, httpAddr)
	if err != nil {
		return res, err
	}
	if err := wait(o.Duration); err != nil {
		return res, err
	}
	end, err := sample(ctx, r, running, httpAddr)
	if err != nil {
		return res, err
	}
	stopFlood()
	if err := <-flooded; err != nil {
		return res, err
	}
	if err := r.win.drain(ctx, 10*time.Second); err != nil {
		m, _ := Scrape(ctx, httpAddr)
		return res, fmt.Errorf("%s: %w (role inbox dropped %.0f)", role, err, m["tide_paxos_inbox_dropped_total"][""])
	}
	st, err := roleStatus(ctx, httpAddr, addr)
	if err != nil {
		return res, err
	}
	metrics, err := Scrape(ctx, httpAddr)
	if err != nil {
		return res, err
	}
	running.stop()
	if err := r.failed(); err != nil {
		return res, fmt.Errorf("%s: %w", role, err)
	}
	if v := metrics["tide_paxos_invariant_violations_total"][""]; v > 0 {
		return res, fmt.Errorf("%s: %.0f invariant violations", role, v)
	}
	if res.Work, err = r.check(final{status: st, metrics: metrics, dataDir: dataDir}); err != nil {
		return res, fmt.Errorf("%s did not do its work: %w", role, err)
	}

	res.Seconds = end.at.Sub(start.at).Seconds()
	res.MessagesIn, res.MessagesOut = end.in-start.in, end.out-start.out
	res.Commands = end.commands - start.commands
	res.MsgsPerSec = float64(res.MessagesIn) / res.Seconds
	res.CmdsPerSec = float64(res.Commands) / res.Seconds
	res.PeersCPU = (end.peersCPU - start.peersCPU).Seconds()
	if !o.InProcess {
		res.RoleCPU = (end.roleCPU - start.roleCPU).Seconds()
		if res.MessagesIn > 0 {
			res.CPUusPerMsg = res.RoleCPU * 1e6 / float64(res.MessagesIn)
		}
	}
	fmt.Fprintf(o.Log, "%-16s round %d  %9.0f msgs/s  %9.0f cmds/s  role CPU %.2f cores  peers CPU %.2f cores  %s\n",
		role, round, res.MsgsPerSec, res.CmdsPerSec, res.RoleCPU/res.Seconds, res.PeersCPU/res.Seconds, res.Work)
	return res, nil
}

// Components measures each role of roles once per round, alternating
// roles within a round, so that a noisy spell on the machine spreads over
// all of them.
func Components(ctx context.Context, roles []string, rounds int, o ComponentOptions) ([]ComponentResult, error) {
	var out []ComponentResult
	for round := 1; round <= rounds; round++ {
		for _, role := range roles {
			res, err := Component(ctx, role, round, o)
			if err != nil {
				return out, err
			}
			out = append(out, res)
		}
	}
	return out, nil
}

// runningRole is the role under test, in a child process or in this one.
type runningRole struct {
	pid  int // 0 in process
	stop func()
}

func startRole(ctx context.Context, o ComponentOptions, d node.Deployment, kind, addr, dir, dataDir, httpAddr string) (*runningRole, error) {
	if o.InProcess {
		rctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- node.ServeRoles(rctx, d, []node.RoleSpec{{Addr: addr, Kind: kind}}, dataDir, httpAddr,
				slog.New(slog.NewTextHandler(io.Discard, nil)))
		}()
		rr := &runningRole{}
		stopped := false
		rr.stop = func() {
			if !stopped {
				stopped = true
				cancel()
				<-done
			}
		}
		if err := awaitHealthy(ctx, httpAddr, done); err != nil {
			rr.stop()
			return nil, fmt.Errorf("%s in process: %w", kind, err)
		}
		return rr, nil
	}
	depPath := filepath.Join(dir, "deployment.json")
	if err := d.Save(depPath); err != nil {
		return nil, err
	}
	local := &cluster.Local{Binary: o.Binary, Dir: dir}
	args := []string{"log", "serve", "--deployment", depPath, "--role", addr, "--data-dir", dataDir, "--http-addr", httpAddr}
	p, err := local.Start(ctx, kind, args, "http://"+httpAddr+"/healthz")
	if err != nil {
		return nil, err
	}
	return &runningRole{pid: p.Pid(), stop: func() { p.Stop(10 * time.Second) }}, nil
}

func awaitHealthy(ctx context.Context, httpAddr string, done <-chan error) error {
	c := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if resp, err := c.Get("http://" + httpAddr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return errors.New("not healthy after 10s")
}

// componentSample is the counters at one moment of a measurement.
type componentSample struct {
	at                time.Time
	in, out, commands int64
	roleCPU, peersCPU time.Duration
}

func sample(ctx context.Context, r *rig, running *runningRole, httpAddr string) (componentSample, error) {
	s := componentSample{at: time.Now(), commands: r.commands()}
	var err error
	if running.pid != 0 {
		if s.roleCPU, err = ProcCPU([]int{running.pid}); err != nil {
			return s, err
		}
	}
	if s.peersCPU, err = ProcCPU([]int{os.Getpid()}); err != nil {
		return s, err
	}
	m, err := Scrape(ctx, httpAddr)
	if err != nil {
		return s, fmt.Errorf("%s metrics: %w", r.role, err)
	}
	s.in = int64(m["tide_paxos_messages_in_total"][""])
	s.out = int64(m["tide_paxos_messages_out_total"][""])
	return s, nil
}

func roleStatus(ctx context.Context, httpAddr, addr string) (node.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return node.Status{}, err
	}
	defer resp.Body.Close()
	var sts []node.Status
	if err := json.NewDecoder(resp.Body).Decode(&sts); err != nil {
		return node.Status{}, fmt.Errorf("status of %s: %w", addr, err)
	}
	for _, st := range sts {
		if st.Addr == addr {
			return st, nil
		}
	}
	return node.Status{}, fmt.Errorf("status of %s: role not listed", addr)
}

// Capacity is a capacity profile, what `tide bench component --profile
// FILE` writes and `tide log up --autoscale --capacity FILE` reads: each
// role (autoscale.LogRoles) mapped to the messages one instance receives
// per second at full speed (for acceptor-groups, one acceptor), the form
// of autoscale.LogConfig.Capacity. As JSON it is that map and nothing
// else.
type Capacity map[string]float64

// Summary is each role's figures over the rounds measured: its capacity
// (the best round), and the commands per second of that round and the
// median CPU time per message over all rounds.
type Summary struct {
	Capacity       Capacity
	CommandsPerSec map[string]float64
	CPUusPerMsg    map[string]float64
}

// Summarize reduces results to a summary. A role's best round is its
// capacity: on a shared machine, slower rounds are other work's.
func Summarize(results []ComponentResult) Summary {
	s := Summary{Capacity: Capacity{}, CommandsPerSec: map[string]float64{}, CPUusPerMsg: map[string]float64{}}
	cpu := map[string][]float64{}
	for _, r := range results {
		if r.MsgsPerSec > s.Capacity[r.Role] {
			s.Capacity[r.Role], s.CommandsPerSec[r.Role] = math.Round(r.MsgsPerSec), math.Round(r.CmdsPerSec)
		}
		if r.CPUusPerMsg > 0 {
			cpu[r.Role] = append(cpu[r.Role], r.CPUusPerMsg)
		}
	}
	for role, xs := range cpu {
		s.CPUusPerMsg[role] = math.Round(10*Percentile(xs, 50)) / 10
	}
	return s
}

// ForCPUs is the profile for instances limited to cpus CPUs (a
// container's --cpus): each role's best rate, or what its CPU time per
// message lets cpus CPUs handle, whichever is lower. A role whose CPU
// time was not measured keeps its best rate.
func (s Summary) ForCPUs(cpus float64) Capacity {
	out := Capacity{}
	for role, v := range s.Capacity {
		if us := s.CPUusPerMsg[role]; us > 0 && cpus > 0 {
			v = min(v, math.Round(cpus*1e6/us))
		}
		out[role] = v
	}
	return out
}

// Merge returns c with the roles of newer replaced, so that roles
// measured one at a time build one profile.
func (c Capacity) Merge(newer Capacity) Capacity {
	out := Capacity{}
	for role, v := range c {
		out[role] = v
	}
	for role, v := range newer {
		out[role] = v
	}
	return out
}

// LoadCapacity reads a capacity profile.
func LoadCapacity(path string) (Capacity, error) {
	var c Capacity
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parse capacity profile %s: %w", path, err)
	}
	return c, nil
}

// Save writes the profile as indented JSON.
func (c Capacity) Save(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

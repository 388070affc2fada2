// Package local is the provisioner that runs tide nodes as child
// processes of the controller on this machine: the default, and the one
// `tide up --autoscale` uses.
//
// Each instance has a directory under Dir holding its data, its log and an
// instance.json record with its addresses and process id, so a controller
// that restarts (after a crash, say) finds and manages the nodes an
// earlier one started.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"tide/autoscale/provision"
	"tide/cluster"
)

// Config configures the local provisioner.
type Config struct {
	// Dir holds one directory per instance. Required.
	Dir string
	// Binary is the tide executable. Default: this process's executable.
	Binary string
	// Layout gives instance i its addresses, which may have port 0 (the
	// node binds a free port and reports it). Default: 127.0.0.1:0.
	Layout func(i int) (chordAddr, httpAddr string, err error)
	// RESP has every node serve the Redis protocol on its chord host, at
	// RESPPort (0: a free port, which the node reports).
	RESP     bool
	RESPPort int
	// Capacity, Replicas and Extra apply when a Spec leaves them zero.
	Capacity int64
	Replicas int
	Extra    []string
	// Outlive lets the nodes run on if the controller dies without
	// stopping them, for the next controller to adopt (see
	// cluster.Local.Outlive); otherwise they die with it.
	Outlive bool
	// StopGrace is how long Terminate waits after SIGTERM before SIGKILL.
	// Default 10s.
	StopGrace time.Duration
	// HTTPClient drains nodes (POST /internal/leave): with mutual TLS
	// among the nodes, one that presents a certificate of their CA.
	// Default: plain HTTP with a 10-minute timeout.
	HTTPClient *http.Client
}

// record is an instance's instance.json.
type record struct {
	provision.Instance
	Index int `json:"index"`
	Pid   int `json:"pid"`
}

// Provisioner runs nodes as local processes.
type Provisioner struct {
	cfg   Config
	local *cluster.Local
	mu    sync.Mutex
	procs map[string]*cluster.Proc // started by this process
	drain map[string]bool
	http  *http.Client
}

// New returns a local provisioner.
func New(cfg Config) (*Provisioner, error) {
	if cfg.Dir == "" {
		return nil, errors.New("local provisioner: Dir is required")
	}
	abs, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = abs
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if cfg.Layout == nil {
		cfg.Layout = func(int) (string, string, error) { return "127.0.0.1:0", "127.0.0.1:0", nil }
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Minute}
	}
	return &Provisioner{cfg: cfg, local: &cluster.Local{Binary: cfg.Binary, Dir: cfg.Dir, Outlive: cfg.Outlive},
		procs: map[string]*cluster.Proc{}, drain: map[string]bool{}, http: hc}, nil
}

// Name implements provision.Provisioner.
func (p *Provisioner) Name() string { return "local" }

func (p *Provisioner) recordPath(id string) string {
	return filepath.Join(p.cfg.Dir, id, "instance.json")
}

func (p *Provisioner) records() ([]record, error) {
	ents, err := os.ReadDir(p.cfg.Dir)
	if err != nil {
		return nil, err
	}
	var out []record
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(p.recordPath(e.Name()))
		if err != nil {
			continue
		}
		var r record
		if json.Unmarshal(b, &r) == nil && r.ID == e.Name() {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

func (p *Provisioner) save(r record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	path := p.recordPath(r.ID)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Launch implements provision.Provisioner: it starts `tide node` and
// returns once the node serves HTTP.
func (p *Provisioner) Launch(ctx context.Context, s provision.Spec) (provision.Instance, error) {
	recs, err := p.records()
	if err != nil {
		return provision.Instance{}, err
	}
	idx := 1
	for _, r := range recs {
		idx = max(idx, r.Index+1)
	}
	id := s.Name
	if id == "" {
		id = "node" + strconv.Itoa(idx)
	}
	if strings.ContainsAny(id, "/\\") || id == "." || id == ".." {
		return provision.Instance{}, fmt.Errorf("bad instance name %q", id)
	}
	for _, r := range recs {
		if r.ID == id && r.State != provision.StateTerminated {
			return provision.Instance{}, fmt.Errorf("instance %s already exists", id)
		}
	}
	ca, ha, err := p.cfg.Layout(idx - 1)
	if err != nil {
		return provision.Instance{}, fmt.Errorf("addresses for %s: %w", id, err)
	}
	spec := cluster.NodeSpec{Name: id, ChordAddr: ca, HTTPAddr: ha, Join: s.Join,
		Replicas: s.Replicas, Capacity: s.Capacity, Extra: append(append([]string{}, p.cfg.Extra...), s.Extra...)}
	if spec.Replicas == 0 {
		spec.Replicas = p.cfg.Replicas
	}
	if spec.Capacity == 0 {
		spec.Capacity = p.cfg.Capacity
	}
	if s.Token != "" {
		spec.Extra = append(spec.Extra, "--token", s.Token)
	}
	if p.cfg.RESP {
		host, _, _ := net.SplitHostPort(ca)
		spec.Extra = append(spec.Extra, "--resp-addr", net.JoinHostPort(host, strconv.Itoa(p.cfg.RESPPort)))
	}
	in := provision.Instance{ID: id, HTTPAddr: ha, ChordAddr: ca, State: provision.StatePending, Started: time.Now()}
	if err := p.save(record{Instance: in, Index: idx}); err != nil {
		return provision.Instance{}, err
	}
	proc, err := p.local.Launch(ctx, spec)
	if err != nil {
		in.State = provision.StateTerminated
		p.save(record{Instance: in, Index: idx})
		return provision.Instance{}, err
	}
	in.State = provision.StateRunning
	in.ChordAddr, in.HTTPAddr, in.RESPAddr = proc.Spec.ChordAddr, proc.Spec.HTTPAddr, proc.Ready.RESPAddr // what the node bound
	if err := p.save(record{Instance: in, Index: idx, Pid: proc.Pid()}); err != nil {
		proc.Kill()
		return provision.Instance{}, err
	}
	p.mu.Lock()
	p.procs[id] = proc
	p.mu.Unlock()
	return in, nil
}

// alive reports whether the instance's process runs.
func (p *Provisioner) alive(r record) bool {
	p.mu.Lock()
	proc := p.procs[r.ID]
	p.mu.Unlock()
	if proc != nil {
		select {
		case <-proc.Done():
			return false
		default:
			return true
		}
	}
	if r.Pid <= 0 {
		return false
	}
	// Started by an earlier controller: check the pid is still a tide
	// process with this instance's data directory.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", r.Pid))
	if err != nil {
		return false
	}
	return strings.Contains(string(cmdline), filepath.Join(p.cfg.Dir, r.ID))
}

// List implements provision.Provisioner.
func (p *Provisioner) List(ctx context.Context) ([]provision.Instance, error) {
	recs, err := p.records()
	if err != nil {
		return nil, err
	}
	var out []provision.Instance
	for _, r := range recs {
		in := r.Instance
		if in.State != provision.StateTerminated && !p.alive(r) {
			if in.State == provision.StatePending {
				continue // a launch in progress in another process, or one that died
			}
			in.State = provision.StateTerminated
		}
		p.mu.Lock()
		if p.drain[in.ID] && in.State == provision.StateRunning {
			in.State = provision.StateDraining
		}
		p.mu.Unlock()
		out = append(out, in)
	}
	return out, nil
}

// Drain implements provision.Provisioner: the node hands its data off and
// exits.
func (p *Provisioner) Drain(ctx context.Context, in provision.Instance) error {
	p.mu.Lock()
	p.drain[in.ID] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.drain, in.ID)
		p.mu.Unlock()
	}()
	if _, err := provision.DrainNode(ctx, p.http, in.HTTPAddr); err != nil {
		return err
	}
	return nil
}

// Terminate implements provision.Provisioner: SIGTERM, then SIGKILL after
// the grace period. The instance's directory is removed.
func (p *Provisioner) Terminate(ctx context.Context, in provision.Instance) error {
	b, err := os.ReadFile(p.recordPath(in.ID))
	if errors.Is(err, os.ErrNotExist) {
		return nil // already gone
	}
	if err != nil {
		return err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("instance %s: %w", in.ID, err)
	}
	p.mu.Lock()
	proc := p.procs[in.ID]
	delete(p.procs, in.ID)
	p.mu.Unlock()
	if proc != nil {
		proc.Stop(p.cfg.StopGrace)
	} else if p.alive(r) {
		syscall.Kill(r.Pid, syscall.SIGTERM)
		deadline := time.Now().Add(p.cfg.StopGrace)
		for p.alive(r) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if p.alive(r) {
			syscall.Kill(r.Pid, syscall.SIGKILL)
		}
	}
	// Keep the log beside the directory for post-mortems; drop the data.
	return os.RemoveAll(filepath.Join(p.cfg.Dir, in.ID))
}

// Resume restarts, on their data and addresses, the instances an earlier
// provisioner left running when it stopped (StopAll keeps their records
// and data): the first without --join (it rejoins the ring it remembers,
// or recreates it), the others through it. It returns the instances it
// restarted and reports each to progress (optional).
func (p *Provisioner) Resume(ctx context.Context, progress func(provision.Instance)) ([]provision.Instance, error) {
	recs, err := p.records()
	if err != nil {
		return nil, err
	}
	var out []provision.Instance
	join := ""
	for _, r := range recs {
		if r.State != provision.StateRunning || p.alive(r) {
			if r.State == provision.StateRunning && join == "" {
				join = r.ChordAddr
			}
			continue
		}
		spec := cluster.NodeSpec{Name: r.ID, ChordAddr: r.ChordAddr, HTTPAddr: r.HTTPAddr, Join: join,
			Replicas: p.cfg.Replicas, Capacity: p.cfg.Capacity, Extra: append([]string{}, p.cfg.Extra...)}
		if r.RESPAddr != "" {
			spec.Extra = append(spec.Extra, "--resp-addr", r.RESPAddr)
		}
		proc, err := p.local.Launch(ctx, spec)
		if err != nil {
			return out, fmt.Errorf("restart %s: %w", r.ID, err)
		}
		r.Pid = proc.Pid()
		r.Started = time.Now()
		if err := p.save(r); err != nil {
			proc.Kill()
			return out, err
		}
		p.mu.Lock()
		p.procs[r.ID] = proc
		p.mu.Unlock()
		if join == "" {
			join = r.ChordAddr
		}
		out = append(out, r.Instance)
		if progress != nil {
			progress(r.Instance)
		}
	}
	return out, nil
}

// OnExit has f called when a node exits without being asked to.
func (p *Provisioner) OnExit(f func(id string, err error, logTail string)) {
	p.local.OnExit(func(pr *cluster.Proc, err error, tail string) { f(pr.Name, err, tail) })
}

// StopAll stops the processes this provisioner started, leaving their
// data: `tide up` calls it on Ctrl-C.
func (p *Provisioner) StopAll(grace time.Duration) { p.local.StopAll(grace) }

// Logs implements provision.LogTailer: up to the last tail lines of the
// instance's log file, which outlives the instance.
func (p *Provisioner) Logs(ctx context.Context, id string, tail int) (string, error) {
	if strings.ContainsAny(id, "/\\") || id == "." || id == ".." {
		return "", fmt.Errorf("bad instance name %q", id)
	}
	f, err := os.Open(filepath.Join(p.cfg.Dir, id+".log"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	const window = 64 << 10
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := max(st.Size()-window, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimRight(string(buf), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first may be cut
	}
	if tail > 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	return strings.Join(lines, "\n"), nil
}

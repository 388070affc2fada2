package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moby/moby/client"

	"tide/autoscale"
	"tide/autoscale/provision"
	dockerprov "tide/autoscale/provision/docker"
	localprov "tide/autoscale/provision/local"
	"tide/cluster"
)

// AWSReference is the reaction of the seed's AWS setup, which tide's
// autoscaler replaces. It is quoted, not measured.
const AWSReference = "CloudWatch alarm: 60 s metric period + EC2 boot (minutes)"

// AutoscaleConfig is what `tide bench autoscale` measures and how.
type AutoscaleConfig struct {
	// Provisioners to measure the reaction time with: "local", "docker".
	Provisioners []string
	// Runs is the number of reaction measurements per provisioner, each
	// on a fresh ring. Default 1.
	Runs int
	// Period and Periods are the controller's evaluation period and K,
	// the consecutive periods the disk threshold must hold.
	Period  time.Duration
	Periods int
	// High is the scale-out disk threshold in percent. Default 70.
	High float64
	// Capacity of each node in the reaction runs. Default 16 MiB.
	Capacity int64
	// FileSize of the uploads that fill the ring. Default 256 KiB.
	FileSize int64
	// DrainBytes is how much data the drained node holds in the drain
	// measurement; 0 skips it. DrainFileSize is the size of its files
	// (default 4 MiB).
	DrainBytes    int64
	DrainFileSize int64
	// Binary is the tide executable local nodes run. Default: this
	// process's executable.
	Binary string
	// DockerImage is an existing node image to use; empty builds one
	// (and removes it afterwards).
	DockerImage string
	// Log receives progress lines.
	Log io.Writer
}

func (c *AutoscaleConfig) fill() error {
	if c.Runs == 0 {
		c.Runs = 1
	}
	if c.Period == 0 {
		c.Period = 500 * time.Millisecond
	}
	if c.Periods == 0 {
		c.Periods = 3
	}
	if c.High == 0 {
		c.High = 70
	}
	if c.Capacity == 0 {
		c.Capacity = 16 << 20
	}
	if c.FileSize == 0 {
		c.FileSize = 256 << 10
	}
	if c.DrainFileSize == 0 {
		c.DrainFileSize = 4 << 20
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	switch {
	case c.Runs < 0:
		return fmt.Errorf("runs %d: want at least 1", c.Runs)
	case c.Period < 10*time.Millisecond:
		return fmt.Errorf("period %s: too short (at least 10ms)", c.Period)
	case c.Periods < 1:
		return fmt.Errorf("periods %d: want at least 1", c.Periods)
	case c.High <= 0 || c.High >= 100:
		return fmt.Errorf("high %v: want a percentage in (0, 100)", c.High)
	case c.Capacity < 1<<20:
		return fmt.Errorf("capacity %d bytes: want at least 1 MiB", c.Capacity)
	case c.FileSize <= 0 || c.FileSize*4 > c.Capacity:
		return fmt.Errorf("file size %d bytes: want more than 0 and at most a quarter of the capacity (%d bytes)", c.FileSize, c.Capacity)
	case c.DrainBytes < 0:
		return fmt.Errorf("drain bytes %d: must not be negative", c.DrainBytes)
	case c.DrainFileSize <= 0 || c.DrainFileSize > 1<<30:
		return fmt.Errorf("drain file size %d bytes: want more than 0 and at most 1 GiB", c.DrainFileSize)
	}
	for _, p := range c.Provisioners {
		if p != "local" && p != "docker" {
			return fmt.Errorf("provisioner %q: want local or docker", p)
		}
	}
	return nil
}

// AutoscaleResult is what `tide bench autoscale` reports.
type AutoscaleResult struct {
	PeriodSeconds float64 `json:"period_seconds"`
	Periods       int     `json:"periods"`
	// DetectBoundSeconds is Periods x Period: how long the threshold must
	// hold before the controller acts.
	DetectBoundSeconds float64           `json:"detect_bound_seconds"`
	HighPercent        float64           `json:"high_percent"`
	CapacityBytes      int64             `json:"capacity_bytes"`
	Reaction           []ReactionSummary `json:"reaction"`
	Drain              *DrainResult      `json:"drain,omitempty"`
	Reference          map[string]string `json:"reference"`
}

// ReactionSummary is one provisioner's reaction runs.
type ReactionSummary struct {
	Provisioner string        `json:"provisioner"`
	Skipped     string        `json:"skipped,omitempty"`
	Runs        []ReactionRun `json:"runs,omitempty"`
	// Median of each column over the runs.
	Median *ReactionRun `json:"median,omitempty"`
}

// ReactionRun is one measurement, from the upload that takes a node to the
// threshold until a new node serves a read.
type ReactionRun struct {
	Run      int    `json:"run,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Files and bytes uploaded until a node reached High, and that node's
	// disk use then.
	FilesToCross       int     `json:"files_to_cross,omitempty"`
	DiskPercentAtCross float64 `json:"disk_percent_at_cross,omitempty"`
	// DetectSecs: threshold crossed until the scale_out "started" event.
	DetectSecs float64 `json:"detect_seconds"`
	// LaunchJoinSecs: "started" until "succeeded" (the node serves and is
	// a ring member).
	LaunchJoinSecs float64 `json:"launch_join_seconds"`
	// FirstReadSecs: "succeeded" until a GET of a file through the new
	// node returned the file.
	FirstReadSecs float64 `json:"first_read_seconds"`
	// TotalSecs: threshold crossed until that first read.
	TotalSecs float64 `json:"total_seconds"`
}

// DrainResult is the time to drain a node of a loaded ring.
type DrainResult struct {
	Nodes    int   `json:"nodes"`
	Replicas int   `json:"replicas"`
	Files    int   `json:"files"`
	FileSize int64 `json:"file_size_bytes"`
	// NodeFiles and NodeBytes: what the drained node held.
	NodeFiles int   `json:"node_files"`
	NodeBytes int64 `json:"node_bytes"`
	// LoadSecs: time to upload the data.
	LoadSecs float64 `json:"load_seconds"`
	// Moved is the node's own count of files handed off.
	Moved int `json:"moved"`
	// DrainSecs: POST /internal/leave until it answered (the node handed
	// everything off); DrainMBps is NodeBytes over that time.
	DrainSecs float64 `json:"drain_seconds"`
	DrainMBps float64 `json:"drain_mb_per_sec"`
	// HeldSecs: until the remaining nodes list every file with Replicas
	// copies; HeldMBps is NodeBytes over that time.
	HeldSecs float64 `json:"all_files_held_seconds"`
	HeldMBps float64 `json:"all_files_held_mb_per_sec"`
	// Verified files downloaded byte-identical after the drain.
	Verified int `json:"verified_downloads"`
}

// Autoscale measures the autoscaler's reaction time with each provisioner
// and, unless DrainBytes is 0, the time to drain a loaded node.
func Autoscale(ctx context.Context, cfg AutoscaleConfig) (AutoscaleResult, error) {
	if err := cfg.fill(); err != nil {
		return AutoscaleResult{}, err
	}
	res := AutoscaleResult{
		PeriodSeconds: cfg.Period.Seconds(), Periods: cfg.Periods,
		DetectBoundSeconds: (time.Duration(cfg.Periods) * cfg.Period).Seconds(),
		HighPercent:        cfg.High, CapacityBytes: cfg.Capacity,
		Reference: map[string]string{"aws": AWSReference},
	}
	for _, name := range cfg.Provisioners {
		sum, err := reactionFor(ctx, cfg, name)
		if err != nil {
			return res, fmt.Errorf("%s reaction: %w", name, err)
		}
		res.Reaction = append(res.Reaction, sum)
	}
	if cfg.DrainBytes > 0 {
		d, err := drainBench(ctx, cfg)
		if err != nil {
			return res, fmt.Errorf("drain: %w", err)
		}
		res.Drain = &d
	}
	return res, nil
}

// reactionFor runs the reaction measurement cfg.Runs times with one
// provisioner, a fresh ring each time.
func reactionFor(ctx context.Context, cfg AutoscaleConfig, name string) (ReactionSummary, error) {
	sum := ReactionSummary{Provisioner: name}
	var newProv func(run int) (provision.Provisioner, func(), error)
	switch name {
	case "local":
		newProv = func(run int) (provision.Provisioner, func(), error) {
			dir, err := os.MkdirTemp("", "tide-bench-autoscale-")
			if err != nil {
				return nil, nil, err
			}
			p, err := localprov.New(localprov.Config{Dir: filepath.Join(dir, "nodes"), Binary: cfg.Binary, Capacity: cfg.Capacity, Replicas: 3, StopGrace: 5 * time.Second})
			if err != nil {
				os.RemoveAll(dir)
				return nil, nil, err
			}
			return p, func() { p.StopAll(5 * time.Second); os.RemoveAll(dir) }, nil
		}
	case "docker":
		image, done, skip, err := dockerImage(ctx, cfg)
		if err != nil {
			return sum, err
		}
		if skip != "" {
			sum.Skipped = skip
			fmt.Fprintf(cfg.Log, "docker: skipped: %s\n", skip)
			return sum, nil
		}
		defer done()
		suffix := randSuffix()
		newProv = func(run int) (provision.Provisioner, func(), error) {
			p, err := dockerprov.New(dockerprov.Config{Image: image, Cluster: fmt.Sprintf("tidebench-%s-%d", suffix, run), Capacity: cfg.Capacity, Replicas: 3, StopTimeout: 5 * time.Second})
			if err != nil {
				return nil, nil, err
			}
			return p, func() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
				defer cancel()
				if err := p.Cleanup(cctx); err != nil {
					fmt.Fprintf(cfg.Log, "docker: cleanup: %v\n", err)
				}
				p.Close()
			}, nil
		}
	default:
		return sum, fmt.Errorf("unknown provisioner %q", name)
	}
	for run := 1; run <= cfg.Runs; run++ {
		p, done, err := newProv(run)
		if err != nil {
			return sum, err
		}
		r, err := reactionRun(ctx, cfg, p, run)
		done()
		if err != nil {
			return sum, fmt.Errorf("run %d: %w", run, err)
		}
		fmt.Fprintf(cfg.Log, "%s run %d: detect %.2fs, launch+join %.2fs, first read %.3fs, total %.2fs\n",
			name, run, r.DetectSecs, r.LaunchJoinSecs, r.FirstReadSecs, r.TotalSecs)
		sum.Runs = append(sum.Runs, r)
	}
	sum.Median = medianRun(sum.Runs)
	return sum, nil
}

func medianRun(runs []ReactionRun) *ReactionRun {
	if len(runs) == 0 {
		return nil
	}
	med := func(f func(ReactionRun) float64) float64 {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, f(r))
		}
		sort.Float64s(xs)
		if n := len(xs); n%2 == 0 {
			return (xs[n/2-1] + xs[n/2]) / 2
		}
		return xs[len(xs)/2]
	}
	return &ReactionRun{
		DetectSecs:     med(func(r ReactionRun) float64 { return r.DetectSecs }),
		LaunchJoinSecs: med(func(r ReactionRun) float64 { return r.LaunchJoinSecs }),
		FirstReadSecs:  med(func(r ReactionRun) float64 { return r.FirstReadSecs }),
		TotalSecs:      med(func(r ReactionRun) float64 { return r.TotalSecs }),
	}
}

// reactionRun starts a ring of 3 nodes through the provisioner, runs a
// controller over it, fills the ring until a node crosses the threshold,
// and times the controller's reaction up to the new node's first read.
func reactionRun(ctx context.Context, cfg AutoscaleConfig, prov provision.Provisioner, run int) (ReactionRun, error) {
	res := ReactionRun{Run: run}
	log := cfg.Log
	fmt.Fprintf(log, "%s run %d: starting 3 nodes\n", prov.Name(), run)
	var ins []provision.Instance
	join := ""
	for range 3 {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		in, err := prov.Launch(lctx, provision.Spec{Join: join, Capacity: cfg.Capacity, Replicas: 3})
		if err == nil {
			err = provision.WaitHealthy(lctx, nil, in.HTTPAddr)
		}
		cancel()
		if err != nil {
			return res, err
		}
		if join == "" {
			join = in.ChordAddr
		}
		ins = append(ins, in)
	}
	for _, in := range ins {
		if err := waitMembers(ctx, in.HTTPAddr, 3); err != nil {
			return res, err
		}
	}

	low := min(30, cfg.High/2)
	c := &autoscale.Controller{
		Policy: autoscale.StorePolicy{
			Cfg: autoscale.StoreConfig{Min: 3, Max: 4, High: cfg.High, Low: low, Periods: cfg.Periods,
				ScaleOutCooldown: autoscale.Duration(10 * time.Second), ScaleInCooldown: autoscale.Duration(time.Hour)},
			StaleAfter: 3 * cfg.Period,
		},
		Prov: prov, Period: cfg.Period,
		Template: provision.Spec{Capacity: cfg.Capacity, Replicas: 3},
		Log:      slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if err := c.Init(); err != nil {
		return res, err
	}
	events := make(chan autoscale.Event, 1024)
	c.Events.OnEvent(func(ev autoscale.Event) {
		select {
		case events <- ev:
		default:
		}
	})
	cctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- c.Run(cctx) }()
	defer func() { stop(); <-ran }()

	// Let the controller observe the ring below the threshold first, so
	// the measurement starts from a steady state.
	for deadline := time.Now().Add(time.Minute); ; {
		st := c.Status()
		if st.Last != nil && len(st.Last.Obs) == 3 {
			break
		}
		if time.Now().After(deadline) {
			return res, errors.New("the controller did not read the nodes' metrics within a minute")
		}
		time.Sleep(cfg.Period / 4)
	}
	time.Sleep(time.Duration(cfg.Periods+1) * cfg.Period)

	// Fill the ring through one node until some node reaches the
	// threshold; the crossing is when that upload returned.
	data := make([]byte, cfg.FileSize)
	rand.Read(data)
	var crossed time.Time
	var lastName string
	for i := 0; ; i++ {
		if int64(i)*cfg.FileSize > 2*cfg.Capacity {
			return res, fmt.Errorf("no node reached %.0f%% after %d uploads", cfg.High, i)
		}
		lastName = fmt.Sprintf("fill-%04d", i)
		binary.BigEndian.PutUint64(data, uint64(i))
		if err := PutFile(ctx, ins[0].HTTPAddr, lastName, data); err != nil {
			return res, err
		}
		done := time.Now()
		var top float64
		for _, in := range ins {
			p, err := DiskPercent(ctx, in.HTTPAddr)
			if err != nil {
				return res, err
			}
			top = max(top, p)
		}
		if top >= cfg.High {
			crossed, res.FilesToCross, res.DiskPercentAtCross = done, i+1, top
			break
		}
	}
	want := slices.Clone(data)
	fmt.Fprintf(log, "%s run %d: a node reached %.1f%% after %d files; waiting for the controller\n", prov.Name(), run, res.DiskPercentAtCross, res.FilesToCross)

	var started, succeeded time.Time
	timeout := time.After(5 * time.Minute)
	for succeeded.IsZero() {
		select {
		case ev := <-events:
			if ev.Action != autoscale.ActScaleOut {
				continue
			}
			switch ev.Outcome {
			case "started":
				if started.IsZero() {
					started = ev.Time
				}
			case "succeeded":
				succeeded, res.Instance = ev.Time, ev.Instance
			case "failed":
				return res, fmt.Errorf("scale out failed: %s", ev.Error)
			}
		case <-timeout:
			return res, fmt.Errorf("no scale out within 5 minutes of crossing %.0f%%", cfg.High)
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	list, err := prov.List(ctx)
	if err != nil {
		return res, err
	}
	var added provision.Instance
	for _, in := range list {
		if in.ID == res.Instance {
			added = in
		}
	}
	if added.HTTPAddr == "" {
		return res, fmt.Errorf("new instance %s is not listed", res.Instance)
	}
	var read time.Time
	hc := &http.Client{Timeout: 10 * time.Second}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		got, err := getFile(ctx, hc, added.HTTPAddr, lastName)
		if err == nil && bytes.Equal(got, want) {
			read = time.Now()
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("the new node %s did not serve %s within 2 minutes: %v", added.HTTPAddr, lastName, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	res.DetectSecs = started.Sub(crossed).Seconds()
	res.LaunchJoinSecs = succeeded.Sub(started).Seconds()
	res.FirstReadSecs = read.Sub(succeeded).Seconds()
	res.TotalSecs = read.Sub(crossed).Seconds()
	if len(res.Instance) > 12 && prov.Name() == "docker" {
		res.Instance = res.Instance[:12]
	}
	return res, nil
}

// dockerImage returns the node image to run: cfg.DockerImage, or one
// built now around a static tide binary (done removes it). skip says why
// Docker cannot be measured, if it cannot.
func dockerImage(ctx context.Context, cfg AutoscaleConfig) (image string, done func(), skip string, err error) {
	done = func() {}
	cli, err := dockerprov.NewClient()
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = cli.Ping(pctx, client.PingOptions{NegotiateAPIVersion: true})
		cancel()
	}
	if err != nil {
		if cli != nil {
			cli.Close()
		}
		return "", done, fmt.Sprintf("Docker engine unreachable (%v)", err), nil
	}
	if cfg.DockerImage != "" {
		cli.Close()
		return cfg.DockerImage, done, "", nil
	}
	bin := cfg.Binary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			cli.Close()
			return "", done, "", err
		}
	}
	var tmp string
	if dockerprov.CheckStatic(bin) != nil {
		root, rerr := dockerprov.ModuleRoot(".")
		if rerr != nil {
			cli.Close()
			return "", done, fmt.Sprintf("%s is not a static binary and the current directory is not in the tide repository to build one; pass --docker-image or run a tide built with CGO_ENABLED=0", bin), nil
		}
		if tmp, err = os.MkdirTemp("", "tide-bench-image-"); err != nil {
			cli.Close()
			return "", done, "", err
		}
		bin = filepath.Join(tmp, "tide")
		fmt.Fprintf(cfg.Log, "docker: building a static tide binary from %s\n", root)
		if err := dockerprov.BuildBinary(ctx, root, bin); err != nil {
			os.RemoveAll(tmp)
			cli.Close()
			return "", done, "", err
		}
	}
	image = "tide-node:bench-" + randSuffix()
	fmt.Fprintf(cfg.Log, "docker: building image %s\n", image)
	err = dockerprov.BuildImage(ctx, cli, bin, image)
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	if err != nil {
		cli.Close()
		return "", done, "", err
	}
	return image, func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := dockerprov.RemoveImage(rctx, cli, image); err != nil {
			fmt.Fprintf(cfg.Log, "docker: %v\n", err)
		}
		cli.Close()
	}, "", nil
}

// drainBench loads a ring of 4 local nodes (replicas 3) until one node
// holds cfg.DrainBytes, then drains that node and times the hand-off.
func drainBench(ctx context.Context, cfg AutoscaleConfig) (DrainResult, error) {
	const nodes, replicas = 4, 3
	res := DrainResult{Nodes: nodes, Replicas: replicas, FileSize: cfg.DrainFileSize}
	log := cfg.Log
	dir, err := os.MkdirTemp("", "tide-bench-drain-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	local := &cluster.Local{Binary: cfg.Binary, Dir: dir}
	defer local.StopAll(10 * time.Second)
	procs, err := StartRing(ctx, local, nodes, replicas, nil, log)
	if err != nil {
		return res, err
	}
	for _, p := range procs {
		if err := waitMembers(ctx, p.Spec.HTTPAddr, nodes); err != nil {
			return res, err
		}
	}
	victim := procs[1]
	rest := slices.DeleteFunc(slices.Clone(procs), func(p *cluster.Proc) bool { return p == victim })

	fmt.Fprintf(log, "drain: loading files of %d bytes until %s holds %d bytes\n", cfg.DrainFileSize, victim.Spec.Name, cfg.DrainBytes)
	base := make([]byte, cfg.DrainFileSize)
	rand.Read(base)
	var (
		enough   atomic.Bool
		next     atomic.Int64
		uploaded atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		loadErr  error
	)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := slices.Clone(base)
			for !enough.Load() && lctx.Err() == nil {
				i := next.Add(1) - 1
				binary.BigEndian.PutUint64(buf, uint64(i))
				if err := PutFile(lctx, procs[(int(i)+w)%nodes].Spec.HTTPAddr, drainName(int(i)), buf); err != nil {
					errOnce.Do(func() { loadErr = err; cancel() })
					return
				}
				uploaded.Add(1)
			}
		}()
	}
	lastLog := time.Time{}
	for !enough.Load() {
		var info struct {
			Files int64 `json:"files"`
			Bytes int64 `json:"bytes"`
		}
		if err := getJSONCtx(lctx, "http://"+victim.Spec.HTTPAddr+"/internal/info", &info); err != nil {
			if lctx.Err() != nil {
				break
			}
			return res, err
		}
		if info.Bytes >= cfg.DrainBytes {
			enough.Store(true)
		}
		if time.Since(lastLog) >= time.Second || enough.Load() {
			lastLog = time.Now()
			n := uploaded.Load()
			fmt.Fprintf(log, "  %6.1fs  uploaded %d files (%.0f MB); %s holds %.0f of %.0f MB\n",
				time.Since(start).Seconds(), n, float64(n*cfg.DrainFileSize)/1e6, victim.Spec.Name, float64(info.Bytes)/1e6, float64(cfg.DrainBytes)/1e6)
		}
		select {
		case <-lctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	enough.Store(true)
	wg.Wait()
	if loadErr != nil {
		return res, fmt.Errorf("load: %w", loadErr)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.LoadSecs = time.Since(start).Seconds()
	res.Files = int(uploaded.Load())
	// Uploads that were in flight when the count was reached finished
	// since: read what the node holds now.
	held, err := localNames(ctx, victim.Spec.HTTPAddr)
	if err != nil {
		return res, err
	}
	var heldNames []string
	for _, m := range held {
		if !m.Deleted {
			res.NodeFiles++
			res.NodeBytes += m.Size
			heldNames = append(heldNames, m.Name)
		}
	}
	names := make([]string, 0, res.Files)
	for i := range int(next.Load()) {
		names = append(names, drainName(i))
	}
	fmt.Fprintf(log, "drain: %d files (%.0f MB) in the ring, %s holds %d (%.0f MB); draining it\n",
		res.Files, float64(int64(res.Files)*cfg.DrainFileSize)/1e6, victim.Spec.Name, res.NodeFiles, float64(res.NodeBytes)/1e6)

	start = time.Now()
	moved, err := provision.DrainNode(ctx, &http.Client{Timeout: 30 * time.Minute}, victim.Spec.HTTPAddr)
	if err != nil {
		return res, err
	}
	res.Moved = moved
	res.DrainSecs = time.Since(start).Seconds()
	fmt.Fprintf(log, "drain: %s answered after %.2fs (moved %d); checking the remaining nodes\n", victim.Spec.Name, res.DrainSecs, moved)
	for deadline := time.Now().Add(10 * time.Minute); ; {
		copies, err := copiesByName(ctx, rest)
		if err == nil {
			missing := 0
			for _, n := range names {
				if copies[n] < replicas {
					missing++
				}
			}
			if missing == 0 {
				break
			}
			err = fmt.Errorf("%d files have fewer than %d copies", missing, replicas)
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("after the drain: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.HeldSecs = time.Since(start).Seconds()
	res.DrainMBps = float64(res.NodeBytes) / 1e6 / res.DrainSecs
	res.HeldMBps = float64(res.NodeBytes) / 1e6 / res.HeldSecs

	// Spot-check contents: a few of the drained node's files, through each
	// remaining node.
	hc := &http.Client{Timeout: time.Minute}
	sort.Strings(heldNames)
	for i := 0; i < len(heldNames) && res.Verified < 8; i += max(1, len(heldNames)/8) {
		name := heldNames[i]
		var idx int
		if _, err := fmt.Sscanf(name, "drain-%d", &idx); err != nil {
			return res, fmt.Errorf("unexpected file %q on the drained node", name)
		}
		wantData := slices.Clone(base)
		binary.BigEndian.PutUint64(wantData, uint64(idx))
		via := rest[res.Verified%len(rest)].Spec.HTTPAddr
		got, err := getFile(ctx, hc, via, name)
		if err != nil {
			return res, fmt.Errorf("after the drain: %w", err)
		}
		if !bytes.Equal(got, wantData) {
			return res, fmt.Errorf("after the drain: %s through %s differs (%d bytes)", name, via, len(got))
		}
		res.Verified++
	}
	return res, nil
}

func drainName(i int) string { return fmt.Sprintf("drain-%07d", i) }

func randSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// PutFile stores data as the file name through the node at httpAddr
// (PUT /files/{name}).
func PutFile(ctx context.Context, httpAddr, name string, data []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+httpAddr+"/files/"+name, bytes.NewReader(data))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("put %s through %s: %s: %s", name, httpAddr, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// GetFile downloads the file name through the node at httpAddr.
func GetFile(ctx context.Context, httpAddr, name string) ([]byte, error) {
	return getFile(ctx, &http.Client{Timeout: time.Minute}, httpAddr, name)
}

func getFile(ctx context.Context, hc *http.Client, httpAddr, name string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/files/"+name, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("get %s through %s: %s: %s", name, httpAddr, resp.Status, strings.TrimSpace(string(msg)))
	}
	return io.ReadAll(resp.Body)
}

// DeleteFile deletes the file name through the node at httpAddr.
func DeleteFile(ctx context.Context, httpAddr, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://"+httpAddr+"/files/"+name, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("delete %s through %s: %s: %s", name, httpAddr, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// DiskPercent reads tide_disk_used_percent from a node's /metrics.
func DiskPercent(ctx context.Context, httpAddr string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s/metrics: %s", httpAddr, resp.Status)
	}
	o, err := autoscale.ParseMetrics(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("%s/metrics: %w", httpAddr, err)
	}
	return o.DiskPercent, nil
}

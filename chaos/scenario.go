package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/moby/moby/client"

	"tide/paxos/node"
)

// Scenario is a cluster, the workloads run against it, and the faults
// injected while they run.
type Scenario struct {
	Name  string
	About string
	// Nodes is the ring's size at the start; Replicas is N (0: 3).
	Nodes    int
	Replicas int
	// DiskBytes, when above 0, gives every node a tmpfs data directory of
	// that size (a disk that can fill). Its data does not survive a kill.
	DiskBytes int64
	// Capacity, when above 0, is what the nodes take their disks' size
	// to be: set above DiskBytes, the disk runs out of space (ENOSPC)
	// before a node refuses a write for being full.
	Capacity int64
	// Duration is how long the workloads run; faults happen within it.
	Duration time.Duration
	KV       *KV
	Files    *Files
	// Log, when set, starts a tide log of LogShape (0: the default
	// shape of `tide log up`), every role in a container of its own, and
	// runs this workload against it; faults name its roles acceptor1,
	// proxy2, ... Nodes may then be 0: no storage ring.
	Log      *Log
	LogShape *node.Shape
	Steps    []Step
	// Open names a bug the scenario finds that is not fixed yet: `tide
	// chaos` runs it and reports it; the Go test skips it, naming the
	// bug, so that CI stays green until the fix lands with it.
	Open string
}

// Options are a run's settings that are not part of the scenario.
type Options struct {
	// Image is the node image, built FROM scratch around a static tide.
	Image string
	// Client is the Docker engine client; nil connects from the
	// environment.
	Client *client.Client
	// Timeout is every client request's deadline (default 3s).
	Timeout time.Duration
	// Scale multiplies the scenario's Duration and step times (default 1:
	// the small CI version; the long version by hand uses more).
	Scale float64
	// Log receives progress; nil is silent.
	Log *slog.Logger
}

// Report is a scenario's outcome.
type Report struct {
	Scenario string `json:"scenario"`
	// Faults lists what was injected, when, and for how long.
	Faults []string     `json:"faults"`
	KV     *KVResult    `json:"kv,omitempty"`
	Files  *FilesResult `json:"files,omitempty"`
	Log    *LogResult   `json:"log,omitempty"`
	// Problems lists what went wrong outside the workloads' checks (a
	// fault that could not be injected or undone, a ring that did not
	// settle).
	Problems []string `json:"problems,omitempty"`
}

// OK reports whether the scenario lost nothing and its history checked.
func (r Report) OK() bool {
	if len(r.Problems) > 0 {
		return false
	}
	if r.KV != nil && (r.KV.Lost > 0 || r.KV.Linearizable != "ok") {
		return false
	}
	if r.Files != nil && (r.Files.Lost > 0 || len(r.Files.UnderReplicated) > 0 || len(r.Files.Stale) > 0) {
		return false
	}
	if r.Log != nil && !r.Log.OK() {
		return false
	}
	return true
}

// Run starts a fresh cluster for sc, runs its workloads while injecting
// its faults, heals the cluster, checks what the workloads acknowledged,
// removes the cluster and reports. The error is for a run that could not
// happen (no engine, a cluster that never started); what the run found is
// in the Report.
func Run(ctx context.Context, sc Scenario, opt Options) (Report, error) {
	if opt.Timeout == 0 {
		opt.Timeout = 3 * time.Second
	}
	if opt.Scale == 0 {
		opt.Scale = 1
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) * opt.Scale) }
	rep := Report{Scenario: sc.Name}
	var suffix [3]byte
	rand.Read(suffix[:])
	cluster, err := NewCluster(ClusterConfig{Image: opt.Image, Name: "chaos-" + sc.Name + "-" + hex.EncodeToString(suffix[:]),
		Replicas: sc.Replicas, DiskBytes: sc.DiskBytes, Capacity: sc.Capacity, Client: opt.Client})
	if err != nil {
		return rep, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := cluster.Close(cctx); err != nil {
			log.Warn("cleanup", "err", err)
		}
	}()
	log.Info("starting the cluster", "scenario", sc.Name, "nodes", sc.Nodes)
	if err := cluster.Start(ctx, sc.Nodes); err != nil {
		return rep, err
	}
	// The faults strike a cluster at rest, as a test harness waits for a
	// healthy cluster: the joins that formed it have moved their data.
	if err := cluster.WaitSettled(ctx); err != nil {
		return rep, err
	}
	replicas := sc.Replicas
	if replicas == 0 {
		replicas = 3
	}
	var d node.Deployment
	if sc.Log != nil {
		shape := node.DefaultShape
		if sc.LogShape != nil {
			shape = *sc.LogShape
		}
		log.Info("starting the log", "scenario", sc.Name, "roles", shape.Count())
		if d, err = cluster.StartLog(ctx, shape); err != nil {
			return rep, err
		}
	}

	// The workload runs for the scenario's duration, and longer when its
	// steps ran late (a reconfiguration that took longer than planned
	// delays the next): it ends as long after the last step began as
	// planned.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	var kv *kvRun
	if sc.KV != nil {
		kv = &kvRun{cfg: *sc.KV, cluster: cluster, timeout: opt.Timeout, tally: newTally(), recorder: newRecorder()}
		for i := range sc.KV.Clients {
			wg.Go(func() { kv.run(wctx, i) })
		}
	}
	var lg *logRun
	if sc.Log != nil {
		lg = &logRun{cfg: *sc.Log, d: d, timeout: opt.Timeout, tally: newTally(), recorder: newRecorder()}
		for i := range sc.Log.Clients {
			wg.Go(func() { lg.run(wctx, i) })
		}
	}
	var files *filesRun
	if sc.Files != nil {
		files = &filesRun{cfg: *sc.Files, cluster: cluster, timeout: opt.Timeout, tally: newTally(), acked: map[string]string{}, maybe: map[string][]string{}}
		for i := range sc.Files.Clients {
			wg.Go(func() { files.run(wctx, i) })
		}
	}

	// The timeline: each step in order of its time, undone in its own
	// goroutine when its time is up.
	steps := slices.Clone(sc.Steps)
	slices.SortStableFunc(steps, func(a, b Step) int { return int(a.At - b.At) })
	start := time.Now()
	var mu sync.Mutex
	problem := func(format string, args ...any) {
		mu.Lock()
		rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	var undos sync.WaitGroup
	var late time.Duration // how late the last step began
	for _, st := range steps {
		select {
		case <-wctx.Done():
		case <-time.After(time.Until(start.Add(scale(st.At)))):
		}
		if wctx.Err() != nil {
			problem("%s at %s: the run was cancelled first", st.Fault, scale(st.At))
			break
		}
		late = max(0, time.Since(start)-scale(st.At))
		at := time.Since(start).Round(100 * time.Millisecond)
		log.Info("fault", "at", at, "fault", st.Fault.String())
		undo, err := st.Fault.Inject(ctx, cluster)
		took := time.Since(start).Round(100*time.Millisecond) - at
		desc := fmt.Sprintf("%s: %s", at, st.Fault)
		if took >= time.Second {
			desc += fmt.Sprintf(" (took %s)", took)
		}
		if err != nil {
			problem("%s: %v", st.Fault, err)
		}
		if undo != nil && st.For > 0 {
			desc += fmt.Sprintf(" for %s", scale(st.For))
			undos.Go(func() {
				select {
				case <-wctx.Done():
				case <-time.After(time.Until(start.Add(scale(st.At + st.For)))):
				}
				log.Info("undo", "fault", st.Fault.String())
				if err := undo(ctx); err != nil {
					problem("undo %s: %v", st.Fault, err)
				}
			})
		} else if undo != nil {
			undos.Go(func() {
				<-wctx.Done()
				if err := undo(ctx); err != nil {
					problem("undo %s: %v", st.Fault, err)
				}
			})
		}
		mu.Lock()
		rep.Faults = append(rep.Faults, desc)
		mu.Unlock()
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(start.Add(scale(sc.Duration) + late))):
	}
	stop()
	wg.Wait()
	end := time.Now()
	undos.Wait()
	log.Info("workload over; healing", "scenario", sc.Name)
	if err := cluster.Heal(ctx); err != nil {
		problem("heal: %v", err)
	}
	if err := cluster.WaitRing(ctx); err != nil {
		problem("%v", err)
	}
	others := untouched(sc)
	if kv != nil {
		r := kv.verify(ctx, end)
		r.Others = kv.tally.others(others)
		rep.KV = &r
	}
	if files != nil {
		r := files.verify(ctx, end, replicas)
		r.Others = files.tally.others(others)
		rep.Files = &r
	}
	if lg != nil {
		r := lg.verify(ctx, end)
		rep.Log = &r
	}
	if tail := logTail(rep.OK()); tail > 0 {
		for _, n := range cluster.all() {
			log.Info("node log", "node", n.Name, "tail", cluster.Logs(ctx, n, tail))
		}
	}
	return rep, nil
}

// logTail is how many lines of each node's log a scenario prints: the
// last 80 when it failed, and with TIDE_CHAOS_LOGS=N the last N whatever
// its outcome (to look into a slow request of a run that passed).
func logTail(ok bool) int {
	if n, err := strconv.Atoi(os.Getenv("TIDE_CHAOS_LOGS")); err == nil && n > 0 {
		return n
	}
	if !ok {
		return 80
	}
	return 0
}

// untouched are the nodes of sc's starting ring that no step names: the
// ones that remain while the faults strike others.
func untouched(sc Scenario) []string {
	named := map[string]bool{}
	for _, st := range sc.Steps {
		switch f := st.Fault.(type) {
		case nodeFault:
			named[f.node] = true
		case autoscaleFault:
			named[f.victim] = true
		}
	}
	var out []string
	for i := 1; i <= sc.Nodes; i++ {
		if n := fmt.Sprintf("n%d", i); !named[n] {
			out = append(out, n)
		}
	}
	return out
}

// WriteTable prints reports as a table: one row per scenario and
// workload.
func WriteTable(w io.Writer, reps []Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tworkload\tattempted\tacknowledged\tfailed\tunanswered\tlost\tlongest failure\tothers p99 / max\tcheck")
	for _, r := range reps {
		if r.KV != nil {
			c := r.KV.Counts
			fmt.Fprintf(tw, "%s\tkv\t%d\t%d\t%d\t%d\t%d\t%s\t%s\tlinearizable: %s\n", r.Scenario, c.Attempted, c.Acknowledged, c.Failed, c.Unanswered, c.Lost, c.LongestFailure.Round(100*time.Millisecond), c.Others, r.KV.Linearizable)
		}
		if r.Files != nil {
			c := r.Files.Counts
			check := "replicas restored"
			if n := len(r.Files.UnderReplicated); n > 0 {
				check = fmt.Sprintf("%d under-replicated", n)
			}
			check += fmt.Sprintf(", %d of %d reads stale", len(r.Files.Stale), r.Files.Reads)
			fmt.Fprintf(tw, "%s\tfiles\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", r.Scenario, c.Attempted, c.Acknowledged, c.Failed, c.Unanswered, c.Lost, c.LongestFailure.Round(100*time.Millisecond), c.Others, check)
		}
		if r.Log != nil {
			c := r.Log.Counts
			check := "none applied twice"
			if n := len(r.Log.Twice); n > 0 {
				check = fmt.Sprintf("%d applied twice", n)
			}
			fmt.Fprintf(tw, "%s\tlog\t%d\t%d\t%d\t%d\t%d\t%s\t%s\tlinearizable: %s, %s\n", r.Scenario, c.Attempted, c.Acknowledged, c.Failed, c.Unanswered, c.Lost, c.LongestFailure.Round(100*time.Millisecond), c.Others, r.Log.Linearizable, check)
		}
	}
	return tw.Flush()
}

// WriteDetails prints each report's faults, problems and findings.
func WriteDetails(w io.Writer, reps []Report) {
	for _, r := range reps {
		status := "ok"
		if !r.OK() {
			status = "FAILED"
		}
		fmt.Fprintf(w, "%s: %s\n", r.Scenario, status)
		for _, f := range r.Faults {
			fmt.Fprintf(w, "  fault   %s\n", f)
		}
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  problem %s\n", p)
		}
		longest := map[string]*Counts{}
		if r.KV != nil {
			longest["kv"] = &r.KV.Counts
		}
		if r.Files != nil {
			longest["files"] = &r.Files.Counts
		}
		if r.Log != nil {
			longest["log"] = &r.Log.Counts
		}
		for _, name := range []string{"kv", "files"} {
			if c := longest[name]; c != nil && c.Others != nil {
				fmt.Fprintf(w, "  %s through the nodes no fault named (%s): p50 %s, p99 %s, max %s over %d requests\n", name, strings.Join(c.Others.Nodes, ", "),
					roundLatency(c.Others.P50), roundLatency(c.Others.P99), roundLatency(c.Others.Max), c.Others.Requests)
				for _, r := range c.Others.Slowest {
					fmt.Fprintf(w, "          %s\n", r)
				}
			}
		}
		for _, name := range []string{"kv", "files", "log"} {
			if c := longest[name]; c != nil && c.LongestFailure > 0 {
				fmt.Fprintf(w, "  longest %s failure %s, from %s\n", name, c.LongestFailure.Round(100*time.Millisecond), c.LongestFailureAt.Round(100*time.Millisecond))
				for _, f := range c.LongestFailureTrail {
					fmt.Fprintf(w, "          %s\n", f)
				}
			}
		}
		if r.KV != nil {
			fmt.Fprintf(w, "  check   kv history (%d operations) checked in %.1fs\n", r.KV.Attempted, r.KV.CheckSeconds)
			for _, k := range r.KV.LostKeys {
				fmt.Fprintf(w, "  lost    %s\n", k)
			}
			for _, k := range r.KV.Illegal {
				fmt.Fprintf(w, "  %s", k)
			}
			writeErrors(w, r.KV.Errors)
		}
		if r.Files != nil {
			for _, f := range r.Files.LostFiles {
				fmt.Fprintf(w, "  lost    %s\n", f)
			}
			for _, f := range r.Files.UnderReplicated {
				fmt.Fprintf(w, "  under-replicated %s\n", f)
			}
			for _, f := range r.Files.Stale {
				fmt.Fprintf(w, "  stale read %s\n", f)
			}
			writeErrors(w, r.Files.Errors)
		}
		if r.Log != nil {
			for _, k := range r.Log.LostKeys {
				fmt.Fprintf(w, "  lost    %s\n", k)
			}
			for _, k := range r.Log.Twice {
				fmt.Fprintf(w, "  applied twice %s\n", k)
			}
			for _, k := range r.Log.Illegal {
				fmt.Fprintf(w, "  %s", k)
			}
			writeErrors(w, r.Log.Errors)
		}
	}
}

func writeErrors(w io.Writer, errs map[string]int) {
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  error   %dx %s\n", errs[k], k)
	}
}

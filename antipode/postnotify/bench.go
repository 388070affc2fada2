package postnotify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"
)

// Config is a benchmark: one run, or a sweep of delays each run with and
// without antipode.
type Config struct {
	PostStore string // redis or postgres
	Notify    string // nats or tide-log
	// Delays: the delay of a single run, or the delays of a sweep.
	Delays []time.Duration
	// Sweep runs every delay with and without antipode; otherwise one run
	// at Delays[0] with Antipode as given.
	Sweep    bool
	Antipode bool
	// Lag is the replication lag injected into the post store.
	Lag         time.Duration
	N           int
	Concurrency int
	PostBytes   int
	// BarrierTimeout bounds each barrier; zero: 10s + 10 × Lag.
	BarrierTimeout time.Duration
	// Out is the results directory.
	Out string
	// Connect names running stores; nil starts them.
	Connect Connect
	// TideBinary runs the tide log's roles as its child processes; "" in
	// this process.
	TideBinary string
}

// Validate checks c.
func (c Config) Validate() error {
	switch {
	case !slices.Contains(PostStores, c.PostStore):
		return fmt.Errorf("--post-store %q: want one of %v", c.PostStore, PostStores)
	case !slices.Contains(Channels, c.Notify):
		return fmt.Errorf("--notify %q: want one of %v", c.Notify, Channels)
	case len(c.Delays) == 0:
		return errors.New("no delay given")
	case c.N <= 0:
		return fmt.Errorf("-n %d: want at least 1 request", c.N)
	case c.Concurrency <= 0:
		return fmt.Errorf("--concurrency %d: want at least 1", c.Concurrency)
	case c.Lag < 0:
		return fmt.Errorf("--lag %v: negative", c.Lag)
	case c.PostBytes < 0:
		return fmt.Errorf("--post-bytes %d: negative", c.PostBytes)
	case c.Out == "":
		return errors.New("--out: no results directory")
	}
	for _, d := range c.Delays {
		if d < 0 {
			return fmt.Errorf("delay %v: negative", d)
		}
	}
	return nil
}

// Bench sets up the stores, runs, and writes the results under c.Out:
// traces.csv and summary.json per run (in a directory per run for a
// sweep), sweep.json, and the plots. It prints a table of the runs to out
// and progress to progress.
func Bench(ctx context.Context, c Config, out, progress io.Writer) ([]Summary, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return nil, err
	}
	prefix := strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(progress, "starting %s (post store, lag %v) and %s (notifications)...\n", c.PostStore, c.Lag, c.Notify)
	env, err := Setup(ctx, SetupConfig{PostStore: c.PostStore, Notify: c.Notify, Lag: c.Lag, Dir: filepath.Join(c.Out, "servers"),
		Connect: c.Connect, TideBinary: c.TideBinary, Prefix: prefix})
	if err != nil {
		return nil, err
	}
	defer env.Close()
	if c.Connect != nil {
		fmt.Fprintln(progress, "connected to running stores: --lag is theirs, not injected here")
	}

	type plan struct {
		delay time.Duration
		on    bool
	}
	var plans []plan
	if c.Sweep {
		for _, d := range c.Delays {
			plans = append(plans, plan{d, false}, plan{d, true})
		}
	} else {
		plans = []plan{{c.Delays[0], c.Antipode}}
	}
	// A short warm-up fills the connection pools and the servers' caches,
	// so the first measured run is not the slow one.
	warm := RunConfig{N: min(c.N, 2*c.Concurrency), Concurrency: c.Concurrency, Antipode: true, BarrierTimeout: c.BarrierTimeout,
		PostBytes: c.PostBytes, Prefix: prefix + "-warmup"}
	if _, err := Run(ctx, env, warm); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	var results []*Result
	var sums []Summary
	for i, p := range plans {
		mode := "without antipode"
		if p.on {
			mode = "with antipode"
		}
		rc := RunConfig{Delay: p.delay, N: c.N, Concurrency: c.Concurrency, Antipode: p.on, BarrierTimeout: c.BarrierTimeout,
			PostBytes: c.PostBytes, Prefix: fmt.Sprintf("%s-%d", prefix, i), Progress: progress,
			Label: fmt.Sprintf("delay %4dms %-16s", p.delay.Milliseconds(), mode)}
		r, err := Run(ctx, env, rc)
		if err != nil {
			return sums, fmt.Errorf("run at delay %v %s: %w", p.delay, mode, err)
		}
		s := Summarize(r, c.PostStore, c.Notify, env.Lag)
		dir := c.Out
		if c.Sweep {
			dir = filepath.Join(c.Out, RunDir(p.delay, p.on))
		}
		if err := WriteRun(dir, r, s); err != nil {
			return sums, err
		}
		results, sums = append(results, r), append(sums, s)
	}
	if err := writeJSON(filepath.Join(c.Out, "sweep.json"), sums); err != nil {
		return sums, err
	}
	// One consistency-window plot per delay, each with the runs at it.
	for _, d := range c.Delays {
		var rs []*Result
		var ss []Summary
		for i, r := range results {
			if r.Config.Delay == d {
				rs, ss = append(rs, r), append(ss, sums[i])
			}
		}
		if len(rs) == 0 {
			continue
		}
		name := "consistency-window"
		if c.Sweep && len(c.Delays) > 1 {
			name = fmt.Sprintf("consistency-window-delay-%dms", d.Milliseconds())
		}
		if err := PlotConsistencyWindow(c.Out, name, rs, ss, env.Lag); err != nil {
			return sums, err
		}
	}
	if c.Sweep {
		if err := PlotInconsistencies(c.Out, "inconsistencies-vs-delay", sums); err != nil {
			return sums, err
		}
	}
	PrintTable(out, sums)
	fmt.Fprintf(out, "results in %s\n", c.Out)
	return sums, nil
}

// PrintTable prints one line per run.
func PrintTable(w io.Writer, sums []Summary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "post\tnotify\tdelay ms\tlag ms\tantipode\trequests\tinconsistent\t%\tlost\twriter req/s\te2e req/s\tvisibility p50 ms\tp99 ms\tbarrier p50 ms\tp99 ms\tlineage B/msg\tnotification B/msg\tCPU ms/req client\tservers\thost busy %\t")
	for _, s := range sums {
		on := "off"
		if s.Antipode {
			on = "on"
		}
		cpu := "-\t-\t-"
		if c := s.CPU; c != nil {
			cpu = fmt.Sprintf("%.3f\t%.3f\t%.0f", c.ClientMSPerRequest, c.ServersMSPerRequest, c.HostBusyPct)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%.1f\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t\n",
			s.PostStore, s.Notify, s.DelayMS, s.LagMS, on, s.Requests, s.Inconsistent, s.InconsistencyPct, s.Lost,
			s.WriterThroughput, s.EndToEndThroughput, s.VisibilityLatencyMS.P50, s.VisibilityLatencyMS.P99, s.BarrierMS.P50, s.BarrierMS.P99,
			s.LineageBytesPerMessage, s.NotificationBytesPerMessage, cpu)
	}
	tw.Flush()
}

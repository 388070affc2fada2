package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"tide/paxos"
	"tide/paxos/node"
)

// PhaseStat is where one role kind's time went in one phase (see
// node.Metrics.Phase): how many observations, and their mean.
type PhaseStat struct {
	Kind   string  `json:"kind"`
	Phase  string  `json:"phase"`
	Count  float64 `json:"count"`
	MeanUs float64 `json:"mean_us"`
}

// phases in the order a message meets them.
var phases = []string{"decode", "queue", "step", "sync", "durable", "send"}

// kindOrder is the path of a command through the log.
var kindOrder = []string{"batcher", "leader", "proxy", "acceptor", "replica", "unbatcher", "matchmaker"}

// logSample is what the role processes of a log have counted so far: CPU
// seconds (process_cpu_seconds_total), in all and by role kind, and
// tide_paxos_phase_seconds summed by role kind and phase.
type logSample struct {
	cpu    float64
	byKind map[string]float64
	phases []PhaseStat
}

// sampleLog scrapes every role process of d, once each.
func sampleLog(ctx context.Context, d node.Deployment) (logSample, error) {
	type key struct{ kind, phase string }
	sum, count := map[key]float64{}, map[key]float64{}
	out := logSample{byKind: map[string]float64{}}
	seen := map[string]bool{}
	for _, role := range slices.Sorted(maps.Keys(d.HTTP)) {
		addr := d.HTTP[role]
		if seen[addr] {
			continue
		}
		seen[addr] = true
		fams, err := scrapeMetrics(ctx, addr)
		if err != nil {
			return logSample{}, err
		}
		f := fams["process_cpu_seconds_total"]
		if f == nil || len(f.GetMetric()) == 0 {
			return logSample{}, fmt.Errorf("%s reports no process_cpu_seconds_total", addr)
		}
		v := f.GetMetric()[0].GetCounter().GetValue()
		out.cpu += v
		out.byKind[roleKind(d.Log, role)] += v
		addPhases(fams, func(kind, phase string, s, c float64) {
			sum[key{kind, phase}] += s
			count[key{kind, phase}] += c
		})
	}
	for k, c := range count {
		if c > 0 {
			out.phases = append(out.phases, PhaseStat{Kind: k.kind, Phase: k.phase, Count: c, MeanUs: sum[k] / c * 1e6})
		}
	}
	slices.SortFunc(out.phases, func(a, b PhaseStat) int {
		if d := slices.Index(kindOrder, a.Kind) - slices.Index(kindOrder, b.Kind); d != 0 {
			return d
		}
		return slices.Index(phases, a.Phase) - slices.Index(phases, b.Phase)
	})
	return out, nil
}

// subtractPhases returns what happened between two breakdowns of the
// same processes, before (taken first) and after.
func subtractPhases(after, before []PhaseStat) []PhaseStat {
	var out []PhaseStat
	for _, a := range after {
		i := slices.IndexFunc(before, func(b PhaseStat) bool { return b.Kind == a.Kind && b.Phase == a.Phase })
		if i < 0 {
			out = append(out, a)
			continue
		}
		b := before[i]
		if n := a.Count - b.Count; n > 0 {
			out = append(out, PhaseStat{Kind: a.Kind, Phase: a.Phase, Count: n, MeanUs: (a.MeanUs*a.Count - b.MeanUs*b.Count) / n})
		}
	}
	return out
}

// addPhases hands add each tide_paxos_phase_seconds histogram of fams.
func addPhases(fams map[string]*dto.MetricFamily, add func(kind, phase string, sum, count float64)) {
	f := fams["tide_paxos_phase_seconds"]
	if f == nil {
		return
	}
	for _, m := range f.GetMetric() {
		var kind, phase string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "role":
				kind = l.GetValue()
			case "phase":
				phase = l.GetValue()
			}
		}
		h := m.GetHistogram()
		add(kind, phase, h.GetSampleSum(), float64(h.GetSampleCount()))
	}
}

// scrapeMetrics reads the Prometheus metrics of the process at httpAddr.
func scrapeMetrics(ctx context.Context, httpAddr string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", httpAddr, resp.Status)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation) // tide's metric names are all legacy (tide_...) names
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse metrics of %s: %w", httpAddr, err)
	}
	return fams, nil
}

// roleKind names the kind of the role at addr in cfg, as the breakdown
// does; "server" for an address cfg does not list (the unreplicated
// baseline).
func roleKind(cfg paxos.Config, addr string) string {
	for _, g := range cfg.Groups {
		if slices.Contains(g.Acceptors, addr) {
			return "acceptor"
		}
	}
	for _, k := range []struct {
		kind  string
		addrs []string
	}{{"matchmaker", cfg.Matchmakers}, {"batcher", cfg.Batchers}, {"leader", cfg.Leaders}, {"proxy", cfg.ProxyLeaders}, {"replica", cfg.Replicas}, {"unbatcher", cfg.Unbatchers}} {
		if slices.Contains(k.addrs, addr) {
			return k.kind
		}
	}
	return "server"
}

// selfCPU is this process's CPU time so far, user and system, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// PrintBreakdown prints the mean microseconds of each phase by role kind,
// in the order a command travels, with the count of each as a share of
// the messages the kind received.
func PrintBreakdown(w io.Writer, r LogResult) error {
	stats := r.Breakdown
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tCPU µs/OP\tMESSAGES/OP\tDECODE µs\tQUEUE µs\tSTEP µs\tSYNCS/OP\tSYNC µs\tDURABLE µs\tSENDS/OP\tSEND µs")
	perOp := func(n float64) float64 {
		if r.Ops == 0 {
			return 0
		}
		return n / float64(r.Ops)
	}
	by := map[string]map[string]PhaseStat{}
	var kinds []string
	for _, s := range stats {
		if by[s.Kind] == nil {
			by[s.Kind] = map[string]PhaseStat{}
			kinds = append(kinds, s.Kind)
		}
		by[s.Kind][s.Phase] = s
	}
	for _, k := range kinds {
		p := by[k]
		fmt.Fprintf(tw, "%s\t%.1f\t%.3f\t%.1f\t%.1f\t%.1f\t%.3f\t%.1f\t%.1f\t%.3f\t%.1f\n", k, r.RoleCPUus[k], perOp(p["step"].Count), p["decode"].MeanUs, p["queue"].MeanUs, p["step"].MeanUs,
			perOp(p["sync"].Count), p["sync"].MeanUs, p["durable"].MeanUs, perOp(p["send"].Count), p["send"].MeanUs)
	}
	return tw.Flush()
}

package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

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

// LogBreakdown reads tide_paxos_phase_seconds from every role process of
// d and sums it by role kind and phase.
func LogBreakdown(ctx context.Context, d node.Deployment) ([]PhaseStat, error) {
	type key struct{ kind, phase string }
	sum, count := map[key]float64{}, map[key]float64{}
	seen := map[string]bool{}
	for _, addr := range d.HTTP {
		if seen[addr] {
			continue
		}
		seen[addr] = true
		if err := scrapePhases(ctx, addr, func(kind, phase string, s, c float64) {
			sum[key{kind, phase}] += s
			count[key{kind, phase}] += c
		}); err != nil {
			return nil, err
		}
	}
	var out []PhaseStat
	for k, c := range count {
		if c > 0 {
			out = append(out, PhaseStat{Kind: k.kind, Phase: k.phase, Count: c, MeanUs: sum[k] / c * 1e6})
		}
	}
	slices.SortFunc(out, func(a, b PhaseStat) int {
		if d := slices.Index(kindOrder, a.Kind) - slices.Index(kindOrder, b.Kind); d != 0 {
			return d
		}
		return slices.Index(phases, a.Phase) - slices.Index(phases, b.Phase)
	})
	return out, nil
}

func scrapePhases(ctx context.Context, httpAddr string, add func(kind, phase string, sum, count float64)) error {
	fams, err := scrapeMetrics(ctx, httpAddr)
	if err != nil {
		return err
	}
	f := fams["tide_paxos_phase_seconds"]
	if f == nil {
		return nil
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
	return nil
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

// LogCPU is the CPU time, in seconds, that every role process of d has
// used so far (their process_cpu_seconds_total).
func LogCPU(ctx context.Context, d node.Deployment) (float64, error) {
	var total float64
	seen := map[string]bool{}
	for _, addr := range d.HTTP {
		if seen[addr] {
			continue
		}
		seen[addr] = true
		fams, err := scrapeMetrics(ctx, addr)
		if err != nil {
			return 0, err
		}
		f := fams["process_cpu_seconds_total"]
		if f == nil || len(f.GetMetric()) == 0 {
			return 0, fmt.Errorf("%s reports no process_cpu_seconds_total", addr)
		}
		total += f.GetMetric()[0].GetCounter().GetValue()
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

// PrintBreakdown prints the mean microseconds of each phase by role kind,
// in the order a command travels, with the count of each as a share of
// the messages the kind received.
func PrintBreakdown(w io.Writer, stats []PhaseStat) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tMESSAGES\tDECODE µs\tQUEUE µs\tSTEP µs\tSYNCS\tSYNC µs\tDURABLE µs\tSENDS\tSEND µs")
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
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%.1f\t%.1f\t%.0f\t%.1f\t%.1f\t%.0f\t%.1f\n", k, p["step"].Count, p["decode"].MeanUs, p["queue"].MeanUs, p["step"].MeanUs,
			p["sync"].Count, p["sync"].MeanUs, p["durable"].MeanUs, p["send"].Count, p["send"].MeanUs)
	}
	return tw.Flush()
}

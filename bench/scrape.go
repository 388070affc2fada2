// Package bench holds tide's benchmark harnesses: each starts real node
// processes, drives them, and reports measured numbers.
package bench

import "context"

// Scrape reads one node's /metrics and returns the sum of each counter or
// gauge family, optionally restricted to samples whose label has a value.
func Scrape(ctx context.Context, httpAddr string) (map[string]map[string]float64, error) {
	fams, err := scrapeMetrics(ctx, httpAddr)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]float64{}
	for name, f := range fams {
		m := map[string]float64{}
		for _, s := range f.GetMetric() {
			label := ""
			for _, l := range s.GetLabel() {
				label = l.GetValue()
			}
			v := s.GetCounter().GetValue() + s.GetGauge().GetValue() + s.GetUntyped().GetValue()
			m[label] += v
			m[""] += v * boolf(label != "")
		}
		out[name] = m
	}
	return out, nil
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Package bench holds tide's benchmark harnesses: each starts real node
// processes, drives them, and reports measured numbers.
package bench

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape reads one node's /metrics and returns the sum of each counter or
// gauge family, optionally restricted to samples whose label has a value.
func Scrape(ctx context.Context, httpAddr string) (map[string]map[string]float64, error) {
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
	p := expfmt.NewTextParser(model.LegacyValidation) // tide's metric names are all legacy (tide_...) names
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse metrics of %s: %w", httpAddr, err)
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

package autoscale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"tide/autoscale/provision"
)

// Source reads the current metrics of instances. An instance it could not
// read is absent from the result; that is not an error.
type Source interface {
	Collect(ctx context.Context, ins []provision.Instance) map[string]Observation
}

// Scraper reads each node's /metrics directly, in parallel.
type Scraper struct {
	Client *http.Client // default: 2s timeout
	Now    func() time.Time
}

// Collect implements Source.
func (s *Scraper) Collect(ctx context.Context, ins []provision.Instance) map[string]Observation {
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 2 * time.Second}
	}
	now := s.Now
	if now == nil {
		now = time.Now
	}
	out := map[string]Observation{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, in := range ins {
		if in.HTTPAddr == "" || in.State == provision.StateTerminated {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := scrapeOne(ctx, c, in.HTTPAddr)
			if err != nil {
				return
			}
			o.Time = now()
			mu.Lock()
			out[in.ID] = o
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func scrapeOne(ctx context.Context, c *http.Client, addr string) (Observation, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return Observation{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Observation{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Observation{}, fmt.Errorf("%s/metrics: %s", addr, resp.Status)
	}
	return ParseMetrics(io.LimitReader(resp.Body, 16<<20))
}

// ParseMetrics reads the series the policies use from a node's metrics in
// the Prometheus text format.
func ParseMetrics(r io.Reader) (Observation, error) {
	p := expfmt.NewTextParser(model.LegacyValidation) // tide's metric names are all legacy (tide_...) names
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Observation{}, fmt.Errorf("parse metrics: %w", err)
	}
	sum := func(name string) (float64, bool) {
		f, ok := fams[name]
		if !ok {
			return 0, false
		}
		var t float64
		for _, m := range f.GetMetric() {
			t += value(m)
		}
		return t, true
	}
	var o Observation
	var ok bool
	if o.DiskPercent, ok = sum("tide_disk_used_percent"); !ok {
		return Observation{}, errors.New("metrics lack tide_disk_used_percent: not a tide storage node")
	}
	o.DiskUsed, _ = sum("tide_disk_used_bytes")
	o.DiskCap, _ = sum("tide_disk_capacity_bytes")
	o.RingViews, _ = sum("tide_kv_ring_views")
	files, _ := sum("tide_http_requests_total")
	kvs, _ := sum("tide_kv_requests_total")
	o.Ops = files + kvs
	return o, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// PrometheusSource reads the same series from a Prometheus server that
// scrapes the nodes; an instance's "instance" label must be its HTTP
// address (host:port, Prometheus's default for a static target).
type PrometheusSource struct {
	URL    string // e.g. http://127.0.0.1:9090
	Client *http.Client
	Now    func() time.Time
}

// Collect implements Source.
func (s *PrometheusSource) Collect(ctx context.Context, ins []provision.Instance) map[string]Observation {
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	byAddr := map[string]string{}
	for _, in := range ins {
		byAddr[in.HTTPAddr] = in.ID
	}
	out := map[string]Observation{}
	get := func(query string, set func(*Observation, float64)) error {
		vec, err := promQuery(ctx, c, s.URL, query)
		if err != nil {
			return err
		}
		for _, smp := range vec {
			id, ok := byAddr[smp.instance]
			if !ok {
				continue
			}
			o, seen := out[id]
			if !seen {
				o.Time = smp.at
			}
			o.Time = minTime(o.Time, smp.at)
			set(&o, smp.v)
			out[id] = o
		}
		return nil
	}
	if err := get("tide_disk_used_percent", func(o *Observation, v float64) { o.DiskPercent = v }); err != nil {
		return nil
	}
	have := map[string]bool{}
	for id := range out {
		have[id] = true
	}
	// The time of the sample is when Prometheus scraped it, not when the
	// query ran: a target that stopped answering goes stale.
	_ = get("timestamp(tide_disk_used_percent)", func(o *Observation, v float64) {
		sec := int64(v)
		o.Time = time.Unix(sec, int64((v-float64(sec))*1e9))
	})
	_ = get("tide_disk_used_bytes", func(o *Observation, v float64) { o.DiskUsed = v })
	_ = get("tide_disk_capacity_bytes", func(o *Observation, v float64) { o.DiskCap = v })
	_ = get("tide_kv_ring_views", func(o *Observation, v float64) { o.RingViews = v })
	_ = get("sum by (instance) (tide_http_requests_total) + on(instance) sum by (instance) (tide_kv_requests_total)",
		func(o *Observation, v float64) { o.Ops = v })
	for id := range out {
		if !have[id] {
			delete(out, id) // a node without the disk series is not usable
		}
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

type promSample struct {
	instance string
	at       time.Time
	v        float64
}

// promQuery runs an instant query against Prometheus's HTTP API.
func promQuery(ctx context.Context, c *http.Client, base, query string) ([]promSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("prometheus query %q: %w", query, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("prometheus query %q: %s", query, body.Error)
	}
	var out []promSample
	for _, r := range body.Data.Result {
		ts, _ := r.Value[0].(float64)
		vs, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(vs, 64)
		if err != nil {
			continue
		}
		sec := int64(ts)
		out = append(out, promSample{instance: r.Metric["instance"], at: time.Unix(sec, int64((ts-float64(sec))*1e9)), v: v})
	}
	return out, nil
}

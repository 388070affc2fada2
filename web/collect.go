package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"tide/autoscale"
	"tide/autoscale/provision"
	"tide/paxos/node"
	"tide/store"
)

// nodeCounters are one node's cumulative counters from its /metrics.
type nodeCounters struct {
	ops     float64
	bounds  []float64 // latency histogram bucket upper bounds
	buckets []float64 // cumulative counts per bound
}

// hashRing is a node's GET /hash_ring.
type hashRing struct {
	Ring map[string]string `json:"ring"`
}

func (d *Dashboard) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := d.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v)
}

// sampleStore reads the ring from a seed, then every node's info and
// metrics at once.
func (d *Dashboard) sampleStore(ctx context.Context) (Store, map[string]nodeCounters) {
	var st Store
	if d.Src.StoreSeeds == nil {
		return st, nil
	}
	var instances []provision.Instance
	if d.Src.Instances != nil {
		instances, _ = d.Src.Instances(ctx)
	}
	seeds := d.Src.StoreSeeds()
	// Seeds and running instances both lead to the ring.
	for _, in := range instances {
		if in.State == provision.StateRunning {
			seeds = append(seeds, in.HTTPAddr)
		}
	}
	var ring hashRing
	var err error
	for _, s := range seeds {
		if err = d.getJSON(ctx, "http://"+s+"/hash_ring", &ring); err == nil && len(ring.Ring) > 0 {
			break
		}
	}
	if len(ring.Ring) == 0 {
		if err == nil {
			err = fmt.Errorf("no ring")
		}
		st.Error = fmt.Sprintf("no store node answered (%d tried): %v", len(seeds), err)
	}
	type member struct {
		token uint32
		http  string
	}
	var members []member
	for tok, addr := range ring.Ring {
		t, err := strconv.ParseUint(tok, 10, 32)
		if err == nil {
			members = append(members, member{uint32(t), addr})
		}
	}
	sort.Slice(members, func(i, j int) bool { return members[i].token < members[j].token })
	st.Members = len(members)
	byAddr := map[string]*Node{}
	for i, m := range members {
		prev := members[(i+len(members)-1)%len(members)].token
		frac := float64(uint32(m.token-prev)) / (1 << 32)
		if len(members) == 1 {
			frac = 1
		}
		n := &Node{HTTP: m.http, Token: m.token, RangeStart: prev, RangeFraction: frac, State: "member"}
		st.Nodes = append(st.Nodes, n)
		byAddr[m.http] = n
	}
	// Instances the provisioner runs that are not members yet are
	// joining; those it drains are draining.
	for _, in := range instances {
		n, ok := byAddr[in.HTTPAddr]
		switch {
		case in.State == provision.StateTerminated:
			continue
		case !ok:
			n = &Node{HTTP: in.HTTPAddr, Chord: in.ChordAddr, State: "joining"}
			st.Nodes = append(st.Nodes, n)
			byAddr[in.HTTPAddr] = n
		case in.State == provision.StateDraining:
			n.State = "draining"
		}
		n.ID = in.ID
	}
	counters := map[string]nodeCounters{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range st.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var info store.Info
			if err := d.getJSON(ctx, "http://"+n.HTTP+"/internal/info", &info); err != nil {
				if n.State == "member" {
					n.State = "down"
				}
				return
			}
			n.Chord, n.RESP = info.ChordAddr, info.RESPAddr
			n.Files, n.Bytes, n.Keys = info.Files, info.Bytes, info.KVKeys
			n.DiskUsed, n.DiskCap, n.DiskPercent = info.DiskUsed, info.DiskCap, info.DiskPercent
			n.replicas = info.Replicas
			switch {
			case info.Leaving && n.State != "draining":
				n.State = "leaving"
			case info.State == "standby" || info.State == "idle":
				if n.State != "joining" {
					n.State = info.State
				}
			}
			c, err := d.scrape(ctx, n.HTTP)
			if err == nil {
				mu.Lock()
				counters[n.HTTP] = c
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	copies := 1
	for _, n := range st.Nodes {
		st.Files += n.Files
		st.Keys += int64(n.Keys)
		copies = max(copies, n.replicas)
	}
	// Each file and key is held by N nodes.
	copies = min(copies, max(st.Members, 1))
	st.Files /= int64(copies)
	st.Keys /= int64(copies)
	return st, counters
}

// scrape reads a node's request counters and latency histogram.
func (d *Dashboard) scrape(ctx context.Context, addr string) (nodeCounters, error) {
	var c nodeCounters
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return c, err
	}
	resp, err := d.HTTP.Do(req)
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return c, err
	}
	for _, name := range []string{"tide_kv_requests_total", "tide_http_requests_total"} {
		if f, ok := fams[name]; ok {
			for _, m := range f.GetMetric() {
				c.ops += m.GetCounter().GetValue()
			}
		}
	}
	if f, ok := fams["tide_request_duration_seconds"]; ok {
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			for i, b := range h.GetBucket() {
				if i >= len(c.bounds) {
					c.bounds = append(c.bounds, b.GetUpperBound())
					c.buckets = append(c.buckets, 0)
				}
				c.buckets[i] += float64(b.GetCumulativeCount())
			}
		}
	}
	return c, nil
}

// rates turns two samples of counters into request rates and latency
// quantiles per node, and the ring's totals.
func (d *Dashboard) rates(st *Store, now map[string]nodeCounters, secs float64) {
	var total []float64
	var bounds []float64
	for _, n := range st.Nodes {
		c, ok := now[n.HTTP]
		p, okp := d.prevN[n.HTTP]
		if !ok || !okp || secs <= 0 || c.ops < p.ops {
			continue
		}
		n.OpsPerSec = (c.ops - p.ops) / secs
		if len(c.buckets) == 0 || len(c.buckets) != len(p.buckets) {
			continue
		}
		delta := make([]float64, len(c.buckets))
		for i := range delta {
			delta[i] = c.buckets[i] - p.buckets[i]
		}
		n.P50Millis = 1000 * quantile(0.5, c.bounds, delta)
		n.P99Millis = 1000 * quantile(0.99, c.bounds, delta)
		if total == nil {
			total, bounds = make([]float64, len(delta)), c.bounds
		}
		if len(delta) == len(total) {
			for i := range delta {
				total[i] += delta[i]
			}
		}
		st.OpsPerSec += n.OpsPerSec
	}
	if total != nil {
		st.P99Millis = 1000 * quantile(0.99, bounds, total)
	}
}

// quantile estimates quantile q of a histogram's observations from its
// cumulative bucket counts, interpolating linearly within a bucket as
// Prometheus's histogram_quantile does. 0 if there are none.
func quantile(q float64, bounds, cum []float64) float64 {
	if len(cum) == 0 || cum[len(cum)-1] <= 0 {
		return 0
	}
	rank := q * cum[len(cum)-1]
	lo, prev := 0.0, 0.0
	for i, c := range cum {
		if c >= rank {
			hi := bounds[i]
			if math.IsInf(hi, 1) {
				return lo
			}
			if c == prev {
				return hi
			}
			return lo + (hi-lo)*(rank-prev)/(c-prev)
		}
		lo, prev = bounds[i], c
	}
	return lo
}

// kinds lists the log's role kinds in pipeline order.
var kinds = []string{"matchmaker", "batcher", "leader", "proxy", "acceptor", "replica", "unbatcher"}

// sampleLog reads the log's newest configuration and every role's
// status.
func (d *Dashboard) sampleLog(ctx context.Context) (*Log, map[string]node.Status) {
	if d.Src.Log == nil {
		return nil, nil
	}
	dep, ok := d.Src.Log()
	if !ok {
		return nil, nil
	}
	lg := &Log{}
	cur, err := newest(ctx, d, dep)
	if err != nil {
		lg.Error = err.Error()
	}
	dep = cur
	c := dep.Log
	lg.Epoch = c.Epoch
	for _, h := range c.History {
		lg.History = append(lg.History, Change{Epoch: h.Epoch, At: time.UnixMilli(h.At), What: h.What, Why: h.Why})
	}
	httpOf := dep.HTTPMap()
	statuses := map[string]node.Status{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	seen := map[string]bool{}
	for _, h := range httpOf {
		if seen[h] {
			continue
		}
		seen[h] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sts []node.Status
			if err := d.getJSON(ctx, "http://"+h+"/status", &sts); err != nil {
				return
			}
			mu.Lock()
			for _, s := range sts {
				statuses[s.Addr] = s
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	lists := map[string][]string{
		"matchmaker": c.Matchmakers, "batcher": c.Batchers, "leader": c.Leaders, "proxy": c.ProxyLeaders,
		"replica": c.Replicas, "unbatcher": c.Unbatchers,
	}
	for _, k := range kinds {
		r := Role{Kind: k, Instances: []Instance{}}
		add := func(a string, group int) {
			in := Instance{Addr: a, HTTP: httpOf[a], Group: group}
			if s, ok := statuses[a]; ok {
				in.Up, in.Active, in.Ballot, in.Epoch, in.Executed = true, s.Active, s.Ballot, s.Epoch, s.Executed
				in.messagesIn, in.messagesOut, in.cpuSeconds = s.MessagesIn, s.MessagesOut, s.CPUSeconds
				if k == "leader" && s.Active {
					lg.Leader, lg.Ballot, lg.Chosen = a, s.Ballot, s.Chosen
				}
			}
			r.Instances = append(r.Instances, in)
		}
		if k == "acceptor" {
			for gi, g := range c.Groups {
				for _, a := range g.Acceptors {
					add(a, gi)
				}
			}
		} else {
			for _, a := range lists[k] {
				add(a, 0)
			}
		}
		lg.Roles = append(lg.Roles, r)
	}
	if lg.Leader == "" && lg.Error == "" {
		lg.Error = "no active leader (an election is under way, or the leaders are down)"
	}
	return lg, statuses
}

// newest asks the roles of dep for the newest configuration any of them
// knows, as cluster.Newest does, within ctx.
func newest(ctx context.Context, d *Dashboard, dep node.Deployment) (node.Deployment, error) {
	best := dep
	answered := false
	seen := map[string]bool{}
	queue := []node.Deployment{dep}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		addrs := make([]string, 0)
		for _, h := range cur.HTTPMap() {
			if !seen[h] {
				seen[h] = true
				addrs = append(addrs, h)
			}
		}
		sort.Strings(addrs)
		for _, h := range addrs {
			var got node.Deployment
			if err := d.getJSON(ctx, "http://"+h+"/deployment", &got); err != nil || got.Log.Validate() != nil {
				continue
			}
			answered = true
			if got.Log.Epoch > best.Log.Epoch {
				best.Log = got.Log
				queue = append(queue, got)
			}
			if got.Log.Epoch == best.Log.Epoch && len(queue) == 0 {
				// One answer at the newest epoch known is enough for a
				// dashboard refresh.
				break
			}
		}
	}
	if !answered {
		return dep, fmt.Errorf("no role of the log answered")
	}
	best.HTTP = best.HTTPMap()
	return best, nil
}

// logRates fills message rates, CPU use and the log's throughput from two
// samples of the roles' statuses.
func logRates(lg *Log, now, prev map[string]node.Status, secs float64) {
	for ri := range lg.Roles {
		r := &lg.Roles[ri]
		for ii := range r.Instances {
			in := &r.Instances[ii]
			p, ok := prev[in.Addr]
			if !ok || !in.Up || secs <= 0 || in.messagesIn < p.MessagesIn {
				continue
			}
			in.InPerSec = float64(in.messagesIn-p.MessagesIn) / secs
			in.OutPerSec = float64(in.messagesOut-p.MessagesOut) / secs
			in.CPUPercent = 100 * (in.cpuSeconds - p.CPUSeconds) / secs
			switch r.Kind {
			case "batcher":
				lg.OpsPerSec += in.InPerSec
			}
			if r.Kind == "leader" && in.Active {
				if s, ok := now[in.Addr]; ok && s.Chosen >= p.Chosen {
					lg.SlotsPerSec = float64(s.Chosen-p.Chosen) / secs
				}
			}
		}
	}
	if lg.OpsPerSec == 0 {
		// Without batchers, clients send to the leaders.
		for _, r := range lg.Roles {
			if r.Kind == "batcher" && len(r.Instances) > 0 {
				return
			}
		}
		for _, r := range lg.Roles {
			if r.Kind == "leader" {
				for _, in := range r.Instances {
					if in.Active {
						lg.OpsPerSec += in.InPerSec
					}
				}
			}
		}
	}
}

// HTTPEvents reads a controller's events over HTTP (GET /events?since=N
// on its --listen address).
type HTTPEvents struct {
	Addr   string
	Client *http.Client
}

// Since implements EventSource; an unreachable controller has no events.
func (h HTTPEvents) Since(seq uint64) []autoscale.Event {
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: 2 * time.Second}
	}
	resp, err := c.Get(fmt.Sprintf("http://%s/events?since=%d", h.Addr, seq))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var evs []autoscale.Event
	if json.NewDecoder(resp.Body).Decode(&evs) != nil {
		return nil
	}
	return evs
}

package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tide/kv"
)

// Regions (see kv/regions.go): every region is a ring of its own, and a
// node that knows other regions (Config.RegionPeers) replicates the writes
// it coordinates to them asynchronously. The driver's part is to learn
// each other region's ring, by walking it from the peers given, and to
// export the replication lag.

// regionName is what a region may be called.
var regionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// validateRegions checks the region settings.
func (c *Config) validateRegions() error {
	if c.Region != "" && !regionName.MatchString(c.Region) {
		return fmt.Errorf("store: region %q: want letters, digits, '.', '_' or '-', at most 64", c.Region)
	}
	if len(c.RegionPeers) > 0 && c.Region == "" {
		return errors.New("store: region peers need this node's own region (--region)")
	}
	if c.RegionDelay < 0 {
		return fmt.Errorf("store: negative region delay %s", c.RegionDelay)
	}
	c.KV.Regions = nil
	for name, addrs := range c.RegionPeers {
		switch {
		case !regionName.MatchString(name):
			return fmt.Errorf("store: region %q: want letters, digits, '.', '_' or '-', at most 64", name)
		case name == c.Region:
			return fmt.Errorf("store: region peer %q is this node's own region; its members are found through --join", name)
		case len(addrs) == 0:
			return fmt.Errorf("store: region %q: no peer address", name)
		}
		for _, a := range addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("store: region %q: peer %q is not host:port: %w", name, a, err)
			}
		}
		c.KV.Regions = append(c.KV.Regions, name)
	}
	sort.Strings(c.KV.Regions)
	c.KV.RegionDelay = uint64(c.RegionDelay.Nanoseconds())
	return nil
}

// regionLoop keeps the member table of every other region: a walk of its
// ring from the peers given, or from the members found last, every
// second until it is known and every 5 seconds after.
func (n *Node) regionLoop(ctx context.Context) {
	follow := map[string][]string{}
	for name, addrs := range n.cfg.RegionPeers {
		follow[name] = slices.Clone(addrs)
	}
	last := map[string]string{}
	cache := addrCache{}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		allKnown := true
		for _, name := range n.cfg.KV.Regions {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ms, via, err := n.walkRegion(wctx, name, follow[name], cache)
			cancel()
			if err != nil {
				allKnown = allKnown && last[name] != ""
				n.log.Warn("region: cannot learn the ring of another region; its writes wait in the outbox", "region", name, "err", err)
				continue
			}
			next := []string{via}
			for _, m := range ms {
				if a := m.ref.Addr(); !slices.Contains(next, a) {
					next = append(next, a)
				}
			}
			for _, a := range n.cfg.RegionPeers[name] {
				if !slices.Contains(next, a) {
					next = append(next, a)
				}
			}
			follow[name] = next
			if f := fmtRing(ms); f != last[name] {
				last[name] = f
				n.log.Info("region ring", "region", name, "members", len(ms))
				var kms []kv.Member
				for _, m := range ms {
					kms = append(kms, kv.Member{Addr: m.addrs["peer"], Token: uint32(m.ref.ID)})
				}
				r := &kvRing{StaticRing: kv.NewStaticRing(n.pos, kms), members: ms}
				if n.kv.SetRegionRing(ctx, name, r) != nil {
					return
				}
			}
		}
		if allKnown {
			t.Reset(5 * time.Second)
		} else {
			t.Reset(time.Second)
		}
	}
}

// walkRegion walks the ring of region from the first of via that
// answers. Every member must say it is in that region: a peer address
// that names a node of another region (this one, say) is refused rather
// than sent writes that would never reach the region meant.
func (n *Node) walkRegion(ctx context.Context, region string, via []string, cache addrCache) ([]member, string, error) {
	var errs []error
	for _, a := range via {
		start, err := n.rpc.CallRef(ctx, a, "get_info")
		if err == nil {
			var ms []member
			if ms, err = n.walkFrom(ctx, start, cache); err == nil {
				for _, m := range ms {
					if got := m.addrs["region"]; got != region {
						if got == "" {
							got = "none"
						}
						err = fmt.Errorf("member %s is in region %s, not %s", m.ref.Addr(), got, region)
						break
					}
				}
				if err == nil {
					return ms, a, nil
				}
			}
		}
		errs = append(errs, fmt.Errorf("walk from %s: %w", a, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, "", errors.Join(errs...)
}

// regionCollector exports the replication to other regions.
type regionCollector struct {
	n       *Node
	lag     *prometheus.Desc
	pending *prometheus.Desc
	sent    *prometheus.Desc
}

func newRegionCollector(n *Node) *regionCollector {
	return &regionCollector{n: n,
		lag: prometheus.NewDesc("tide_kv_region_lag_seconds",
			"How far another region is behind this node: the age of the oldest write this node coordinated that the region has not acknowledged at its write quorum, or, with none pending, how long the last acknowledged one took (write to acknowledgement).",
			[]string{"region"}, nil),
		pending: prometheus.NewDesc("tide_kv_region_pending",
			"Writes this node coordinated that another region has not acknowledged yet (held durably in the outbox).",
			[]string{"region"}, nil),
		sent: prometheus.NewDesc("tide_kv_region_sent_total",
			"Writes sent to another region, resends included.",
			[]string{"region"}, nil),
	}
}

func (c *regionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.pending
	ch <- c.sent
}

func (c *regionCollector) Collect(ch chan<- prometheus.Metric) {
	if c.n.kv == nil {
		return
	}
	now := uint64(time.Now().UnixNano())
	for _, st := range c.n.kv.RegionStatus() {
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, regionLag(st, now).Seconds(), st.Region)
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending), st.Region)
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(st.Sent), st.Region)
	}
}

// regionLag is how far a region is behind, at now (nanoseconds).
func regionLag(st kv.RegionStatus, now uint64) time.Duration {
	if st.Pending > 0 && st.Oldest != 0 {
		if t := kv.VersionTime(st.Oldest); now > t {
			return time.Duration(now - t)
		}
		return 0
	}
	return time.Duration(st.LastLag)
}

// RegionStatus reports the replication to each other region.
func (n *Node) RegionStatus() []kv.RegionStatus {
	if n.kv == nil {
		return nil
	}
	return n.kv.RegionStatus()
}

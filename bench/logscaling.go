package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"tide/cluster"
	"tide/paxos/node"
)

// ScalingSweep varies one compartment (a cluster.Roles name) over Counts.
type ScalingSweep struct {
	Role   string
	Counts []int
}

// ScalingConfig is a `tide bench log --scaling` run: a log of Shape on
// Host, then for each sweep in order, each count in order, the role
// resized to it (the sweeps before stay where they ended) and Clients
// closed-loop clients measured for Duration.
type ScalingConfig struct {
	Host     cluster.RoleHost
	Shape    node.Shape
	Sweeps   []ScalingSweep
	Clients  int
	Duration time.Duration
	// CPUs is each kind's CPU limit in billionths of a CPU ("" for the
	// default), as the host applies it; 0 or absent means none, and
	// utilization is then in cores.
	CPUs map[string]int64
	// Dir holds the deployment file.
	Dir string
}

// ScalingPoint is one measured shape.
type ScalingPoint struct {
	Role      string         `json:"role"`
	Count     int            `json:"count"`
	Instances map[string]int `json:"instances"`
	LogResult
	// Util is, for each role kind, its busiest instance's CPU use over
	// the measurement as a fraction of its limit (or in cores without
	// one).
	Util map[string]float64 `json:"cpu_util"`
	// Bottleneck is the kind with the highest Util.
	Bottleneck string `json:"bottleneck"`
}

// LogScaling runs the sweeps and returns a point per count.
func LogScaling(ctx context.Context, sc ScalingConfig, log io.Writer) ([]ScalingPoint, error) {
	depPath := filepath.Join(sc.Dir, "deployment.json")
	defer sc.Host.StopAll(context.WithoutCancel(ctx))
	fmt.Fprintf(log, "starting %d roles on %s\n", sc.Shape.Count(), sc.Host.Name())
	d, err := sc.Host.StartNew(ctx, cluster.ShapePlan(sc.Shape, ""), func(d node.Deployment) error { return d.Save(depPath) })
	if err != nil {
		return nil, err
	}
	ctl := cluster.NewLogControl(sc.Host, d, depPath)
	var points []ScalingPoint
	for _, sw := range sc.Sweeps {
		for _, n := range sw.Counts {
			if err := ctl.Scale(ctx, sw.Role, n, io.Discard); err != nil {
				return points, fmt.Errorf("scale %s to %d: %w", sw.Role, n, err)
			}
			cur, err := ctl.Current()
			if err != nil {
				return points, err
			}
			before, err := roleCPU(ctx, cur)
			if err != nil {
				return points, err
			}
			t0 := time.Now()
			res, err := Log(ctx, cur, fmt.Sprintf("%s=%d", sw.Role, n), sc.Clients, sc.Duration, log)
			if err != nil {
				return points, err
			}
			secs := time.Since(t0).Seconds()
			after, err := roleCPU(ctx, cur)
			if err != nil {
				return points, err
			}
			p := ScalingPoint{Role: sw.Role, Count: n, LogResult: res, Util: map[string]float64{}, Instances: map[string]int{}}
			for role, kind := range cluster.Roles {
				p.Instances[role] = countKind(cur, kind)
			}
			for addr, c := range after {
				kind, _, err := cur.RoleOf(addr)
				if err != nil {
					continue
				}
				limit, ok := sc.CPUs[kind]
				if !ok {
					limit = sc.CPUs[""]
				}
				u := (c - before[addr]) / secs
				if limit > 0 {
					u /= float64(limit) / 1e9
				}
				p.Util[kind] = max(p.Util[kind], u)
			}
			for _, kind := range slices.Sorted(maps.Keys(p.Util)) {
				if p.Bottleneck == "" || p.Util[kind] > p.Util[p.Bottleneck] {
					p.Bottleneck = kind
				}
			}
			fmt.Fprintf(log, "  busiest: %s at %.0f%%\n", p.Bottleneck, 100*p.Util[p.Bottleneck])
			points = append(points, p)
		}
	}
	return points, nil
}

// countKind is how many instances of a role kind d's configuration has.
func countKind(d node.Deployment, kind string) int {
	n := 0
	for _, a := range d.Roles() {
		if k, _, _ := d.RoleOf(a); k == kind {
			n++
		}
	}
	return n
}

// roleCPU reads each role process's CPU seconds (process_cpu_seconds_total).
func roleCPU(ctx context.Context, d node.Deployment) (map[string]float64, error) {
	out := map[string]float64{}
	for _, a := range d.Roles() {
		m, err := Scrape(ctx, d.HTTPMap()[a])
		if err != nil {
			return nil, fmt.Errorf("CPU of %s: %w", a, err)
		}
		out[a] = m["process_cpu_seconds_total"][""]
	}
	return out, nil
}

// PrintScaling writes the points as a table.
func PrintScaling(w io.Writer, points []ScalingPoint) error {
	kinds := map[string]bool{}
	for _, p := range points {
		for k := range p.Util {
			kinds[k] = true
		}
	}
	order := slices.DeleteFunc(slices.Clone(node.Kinds), func(k string) bool { return !kinds[k] })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "VARIED\tN\tOPS/S\tP50 MS\tP99 MS\tERRORS\tBOTTLENECK")
	for _, k := range order {
		fmt.Fprintf(tw, "\t%s", k)
	}
	fmt.Fprintln(tw)
	for _, p := range points {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%d\t%s", p.Role, p.Count, p.OpsPerSec, p.P50ms, p.P99ms, p.Errors, p.Bottleneck)
		for _, k := range order {
			fmt.Fprintf(tw, "\t%.0f%%", 100*p.Util[k])
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "(per kind: the busiest instance's CPU use over the measurement, as a share of its CPU limit)")
	return tw.Flush()
}

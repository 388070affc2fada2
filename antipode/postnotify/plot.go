package postnotify

import (
	"fmt"
	"image/color"
	"path/filepath"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

var (
	colorWithout = color.RGBA{R: 200, G: 60, B: 40, A: 255}
	colorWith    = color.RGBA{R: 30, G: 100, B: 200, A: 255}
)

// save writes p as dir/name.png and dir/name.svg.
func save(p *plot.Plot, dir, name string) error {
	for _, ext := range []string{".png", ".svg"} {
		if err := p.Save(16*vg.Centimeter, 10*vg.Centimeter, filepath.Join(dir, name+ext)); err != nil {
			return fmt.Errorf("plot %s%s: %w", name, ext, err)
		}
	}
	return nil
}

// cdf returns the empirical CDF of the visibility latencies of r's reads.
func cdf(r *Result) plotter.XYs {
	var ms []float64
	for _, t := range r.Traces {
		if t.done {
			ms = append(ms, float64(t.Visibility)/float64(time.Millisecond))
		}
	}
	slices.Sort(ms)
	xy := make(plotter.XYs, len(ms))
	for i, v := range ms {
		xy[i] = plotter.XY{X: v, Y: float64(i+1) / float64(len(ms))}
	}
	return xy
}

// PlotConsistencyWindow plots the CDF of visibility latency (writer start
// to the reader's read) for runs at one delay, with and without antipode,
// with the injected lag marked.
func PlotConsistencyWindow(dir, name string, runs []*Result, sums []Summary, lag time.Duration) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Consistency window: %s posts, %s notifications, delay %dms, lag %dms",
		sums[0].PostStore, sums[0].Notify, sums[0].DelayMS, lag.Milliseconds())
	p.X.Label.Text = "visibility latency (ms, writer start to read)"
	p.Y.Label.Text = "fraction of requests"
	p.Y.Min, p.Y.Max = 0, 1
	// Room on the right for the legend.
	p.Legend.Top = true
	maxX := float64(lag) / float64(time.Millisecond)
	for _, r := range runs {
		if xy := cdf(r); len(xy) > 0 {
			maxX = max(maxX, xy[len(xy)-1].X)
		}
	}
	p.X.Min, p.X.Max = 0, maxX*1.7+1
	for i, r := range runs {
		l, err := plotter.NewLine(cdf(r))
		if err != nil {
			return err
		}
		l.Width = vg.Points(1.5)
		label := fmt.Sprintf("without antipode (%.1f%% inconsistent)", sums[i].InconsistencyPct)
		l.Color = colorWithout
		if r.Config.Antipode {
			label = fmt.Sprintf("with antipode (%.1f%% inconsistent)", sums[i].InconsistencyPct)
			l.Color = colorWith
		}
		p.Add(l)
		p.Legend.Add(label, l)
	}
	if lag > 0 {
		ms := float64(lag) / float64(time.Millisecond)
		mark, err := plotter.NewLine(plotter.XYs{{X: ms, Y: 0}, {X: ms, Y: 1}})
		if err != nil {
			return err
		}
		mark.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		mark.Color = color.Gray{Y: 120}
		p.Add(mark)
		p.Legend.Add("injected replication lag", mark)
	}
	p.Add(plotter.NewGrid())
	return save(p, dir, name)
}

// PlotInconsistencies plots % inconsistencies against delay, with and
// without antipode.
func PlotInconsistencies(dir, name string, sums []Summary) error {
	if len(sums) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Inconsistencies vs delay: %s posts, %s notifications, lag %dms", sums[0].PostStore, sums[0].Notify, sums[0].LagMS)
	p.X.Label.Text = "delay before the notification (ms)"
	p.Y.Label.Text = "inconsistent reads (%)"
	p.Y.Min, p.Y.Max = 0, 100
	p.Legend.Top = false
	p.Legend.YOffs = 3 * vg.Centimeter
	for _, on := range []bool{false, true} {
		var xy plotter.XYs
		for _, s := range sums {
			if s.Antipode == on {
				xy = append(xy, plotter.XY{X: float64(s.DelayMS), Y: s.InconsistencyPct})
			}
		}
		if len(xy) == 0 {
			continue
		}
		slices.SortFunc(xy, func(a, b plotter.XY) int { return int(a.X - b.X) })
		l, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return err
		}
		c, label := colorWithout, "without antipode"
		if on {
			c, label = colorWith, "with antipode"
		}
		l.Color, pts.Color = c, c
		l.Width = vg.Points(1.5)
		p.Add(l, pts)
		p.Legend.Add(label, l, pts)
	}
	p.Add(plotter.NewGrid())
	return save(p, dir, name)
}

package bench

import (
	"fmt"
	"image/color"
	"io"
	"maps"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"tide/autoscale"
)

// RampStep sums up one step of a ramp: the throughput and messages per
// second averaged over its seconds, its worst per-second p99, its errors,
// the instances each role had when it ended, and the instances the
// capacity profile predicts for its average load.
type RampStep struct {
	Step      int                `json:"step"`
	Clients   int                `json:"clients"`
	OpsPerSec float64            `json:"ops_per_sec"`
	P99ms     float64            `json:"p99_ms"`
	Errors    int                `json:"errors"`
	Instances map[string]int     `json:"instances"`
	Rates     map[string]float64 `json:"msgs_per_sec"`
	Predicted map[string]int     `json:"predicted,omitempty"`
	// CPU is each role's busiest instance's CPU use over its limit,
	// averaged over the step (CPU-limited roles only).
	CPU map[string]float64 `json:"cpu_util,omitempty"`
}

// RampSteps groups a ramp's points by step (step seconds each).
func RampSteps(points []RampPoint, step time.Duration, capacity map[string]float64) []RampStep {
	per := max(int(step/time.Second), 1)
	profile := autoscale.LogConfig{Capacity: capacity}
	var out []RampStep
	for i := 0; i < len(points); i += per {
		group := points[i:min(i+per, len(points))]
		st := RampStep{Step: len(out) + 1, Clients: group[0].Clients, Rates: map[string]float64{}, CPU: map[string]float64{}}
		counted, cpuCounted := map[string]int{}, map[string]int{}
		for _, p := range group {
			st.OpsPerSec += p.OpsPerSec / float64(len(group))
			st.P99ms = max(st.P99ms, p.P99ms)
			st.Errors += p.Errors
			for role, r := range p.Rates {
				st.Rates[role] += r
				counted[role]++
			}
			for role, u := range p.CPU {
				st.CPU[role] += u
				cpuCounted[role]++
			}
		}
		for role, n := range counted {
			st.Rates[role] /= float64(n)
		}
		for role, n := range cpuCounted {
			st.CPU[role] /= float64(n)
		}
		st.Instances = group[len(group)-1].Instances
		if len(capacity) > 0 {
			st.Predicted = map[string]int{}
			for role, r := range st.Rates {
				if n := profile.Needed(role, r); n >= 0 {
					st.Predicted[role] = n
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// PrintRampSteps writes the steps as a table: per role, the instances at
// the step's end, and in brackets the profile's prediction.
func PrintRampSteps(w io.Writer, steps []RampStep) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "STEP\tCLIENTS\tOPS/S\tP99 MS\tERRORS")
	for _, role := range autoscale.LogRoles {
		fmt.Fprintf(tw, "\t%s", role)
	}
	fmt.Fprintln(tw)
	for _, s := range steps {
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.1f\t%d", s.Step, s.Clients, s.OpsPerSec, s.P99ms, s.Errors)
		for _, role := range autoscale.LogRoles {
			cell := fmt.Sprint(s.Instances[role])
			if p, ok := s.Predicted[role]; ok {
				cell += fmt.Sprintf(" (%d)", p)
			}
			if r, ok := s.Rates[role]; ok {
				cell += fmt.Sprintf(" %.0f/s", r)
			}
			if u, ok := s.CPU[role]; ok {
				cell += fmt.Sprintf(" cpu %.0f%%", 100*u)
			}
			fmt.Fprintf(tw, "\t%s", cell)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "(role cells: instances at the step's end, (the capacity profile's prediction for the step's load), messages/s received, busiest instance's CPU over its limit)")
	return tw.Flush()
}

// PlotRamp draws a ramp as a PNG: throughput and client count, p99
// latency, and each role's instances over time, one panel each.
func PlotRamp(points []RampPoint, path string) error {
	if len(points) == 0 {
		return fmt.Errorf("no points to plot")
	}
	xy := func(f func(RampPoint) float64) plotter.XYs {
		out := make(plotter.XYs, len(points))
		for i, p := range points {
			out[i] = plotter.XY{X: float64(p.Second), Y: f(p)}
		}
		return out
	}
	panel := func(title, ylabel string) *plot.Plot {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = "seconds"
		p.Y.Label.Text = ylabel
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
		return p
	}
	palette := []color.Color{
		color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{44, 160, 44, 255},
		color.RGBA{214, 39, 40, 255}, color.RGBA{148, 103, 189, 255}, color.RGBA{140, 86, 75, 255},
	}
	line := func(p *plot.Plot, name string, data plotter.XYs, i int) error {
		l, err := plotter.NewLine(data)
		if err != nil {
			return err
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(name, l)
		return nil
	}

	tput := panel("throughput and load", "ops/s")
	if err := line(tput, "ops/s", xy(func(p RampPoint) float64 { return p.OpsPerSec }), 0); err != nil {
		return err
	}
	peakOps, peakClients := 1.0, 1.0
	for _, p := range points {
		peakOps, peakClients = max(peakOps, p.OpsPerSec), max(peakClients, float64(p.Clients))
	}
	scale := peakOps / peakClients
	if err := line(tput, fmt.Sprintf("clients (x%.3g)", scale), xy(func(p RampPoint) float64 { return float64(p.Clients) * scale }), 1); err != nil {
		return err
	}
	lat := panel("p99 latency", "ms")
	if err := line(lat, "p99", xy(func(p RampPoint) float64 { return p.P99ms }), 3); err != nil {
		return err
	}
	inst := panel("instances per role", "instances")
	roles := slices.Sorted(maps.Keys(points[0].Instances))
	for i, role := range roles {
		// Offset each role a little so that equal counts stay visible.
		off := 0.06 * (float64(i) - float64(len(roles)-1)/2)
		if err := line(inst, role, xy(func(p RampPoint) float64 { return float64(p.Instances[role]) + off }), i); err != nil {
			return err
		}
	}

	const w, h = 10 * vg.Inch, 10 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(4), PadY: vg.Points(8)}
	plots := [][]*plot.Plot{{tput}, {lat}, {inst}}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

package bench

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRampStepsAndPlot(t *testing.T) {
	var points []RampPoint
	for sec := 1; sec <= 6; sec++ {
		clients, proxies := 1, 2
		if sec > 3 {
			clients, proxies = 50, 4
		}
		points = append(points, RampPoint{Second: sec, Clients: clients, OpsPerSec: float64(100 * clients), P99ms: float64(sec),
			Instances: map[string]int{"proxy-leaders": proxies, "replicas": 2},
			Rates:     map[string]float64{"proxy-leaders": float64(400 * clients)}})
	}
	steps := RampSteps(points, 3*time.Second, map[string]float64{"proxy-leaders": 10000})
	if len(steps) != 2 {
		t.Fatalf("%d steps for two 3-second steps", len(steps))
	}
	if s := steps[1]; s.Clients != 50 || s.OpsPerSec != 5000 || s.P99ms != 6 || s.Instances["proxy-leaders"] != 4 {
		t.Errorf("second step %+v", s)
	}
	// 20000 msgs/s at 10000 each and the 0.6 target: 4 proxy leaders.
	if got := steps[1].Predicted["proxy-leaders"]; got != 4 {
		t.Errorf("predicted %d proxy leaders for 20000 msgs/s, want 4", got)
	}
	if got := steps[0].Predicted["proxy-leaders"]; got != 1 {
		t.Errorf("predicted %d proxy leaders for 400 msgs/s, want 1", got)
	}
	path := filepath.Join(t.TempDir(), "ramp.png")
	if err := PlotRamp(points, path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the plot is no PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 500 || b.Dy() < 500 {
		t.Errorf("plot is %dx%d", b.Dx(), b.Dy())
	}
	if err := PlotRamp(nil, path); err == nil {
		t.Error("plotting no points succeeded")
	}
}

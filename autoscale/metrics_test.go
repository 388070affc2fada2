package autoscale

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tide/autoscale/provision"
	"tide/store"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startNode runs a real storage node with a capacity and stores one file
// on it.
func startNode(t *testing.T, capacity int64, fileBytes int) *store.Node {
	t.Helper()
	n, err := store.Start(context.Background(), store.Config{ChordAddr: freeAddr(t), HTTPAddr: freeAddr(t), DataDir: t.TempDir(),
		Replicas: 1, Capacity: capacity, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	req, _ := http.NewRequest(http.MethodPut, "http://"+n.HTTPAddr()+"/files/blob", strings.NewReader(strings.Repeat("x", fileBytes)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return n
}

// The scraper reads a real node's disk use.
func TestScraperReadsNode(t *testing.T) {
	n := startNode(t, 1<<20, 256<<10)
	obs := (&Scraper{}).Collect(t.Context(), []provision.Instance{
		{ID: "a", HTTPAddr: n.HTTPAddr(), State: provision.StateRunning},
		{ID: "gone", HTTPAddr: "127.0.0.1:1", State: provision.StateRunning},
	})
	o, ok := obs["a"]
	if !ok {
		t.Fatalf("no observation of a live node: %+v", obs)
	}
	if _, ok := obs["gone"]; ok {
		t.Fatal("an unreachable node was observed")
	}
	if o.DiskPercent != 25 || o.DiskCap != 1<<20 || o.DiskUsed != 256<<10 {
		t.Fatalf("observation %+v: want 256 KiB of 1 MiB, 25%%", o)
	}
}

// PrometheusSource reads the same figures through a real Prometheus server
// that scrapes the node.
func TestPrometheusSource(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed (Debian: prometheus; `make deps` installs it)")
	}
	n := startNode(t, 1<<20, 512<<10)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global: {scrape_interval: 1s}
scrape_configs:
  - job_name: tide
    static_configs: [{targets: [%q]}]
`, n.HTTPAddr())), 0o644)
	listen := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+listen)
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	src := &PrometheusSource{URL: "http://" + listen}
	ins := []provision.Instance{{ID: "a", HTTPAddr: n.HTTPAddr(), State: provision.StateRunning}}
	deadline := time.Now().Add(60 * time.Second)
	var o Observation
	for {
		obs := src.Collect(t.Context(), ins)
		var ok bool
		if o, ok = obs["a"]; ok && o.DiskCap > 0 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Fatalf("Prometheus never reported the node: %+v\n%s", obs, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if o.DiskPercent != 50 || o.DiskCap != 1<<20 || o.DiskUsed != 512<<10 {
		t.Fatalf("observation through Prometheus %+v: want 512 KiB of 1 MiB, 50%%", o)
	}
	if time.Since(o.Time) > time.Minute || o.Time.IsZero() {
		t.Fatalf("sample time %v is not the scrape's", o.Time)
	}
	// A Prometheus that does not answer yields no observations, which the
	// policy treats as stale.
	if obs := (&PrometheusSource{URL: "http://127.0.0.1:1"}).Collect(t.Context(), ins); len(obs) != 0 {
		t.Fatalf("observations from a dead Prometheus: %+v", obs)
	}
}

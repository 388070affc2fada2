package web

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestGrafanaDashboard checks deploy/kubernetes/grafana-dashboard.json:
// it is a dashboard whose panels query only metrics tide registers (a
// renamed metric would leave a panel silently empty), and it covers what
// the built-in dashboard shows.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "deploy", "kubernetes", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	// Every metric name the Go sources (not tests) register.
	known := map[string]bool{}
	name := regexp.MustCompile(`"(tide_[a-z_]+)"`)
	filepath.WalkDir("..", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		src, _ := os.ReadFile(p)
		for _, m := range name.FindAllStringSubmatch(string(src), -1) {
			known[m[1]] = true
		}
		return nil
	})
	used := regexp.MustCompile(`tide_[a-z_]+`)
	var titles []string
	for _, p := range d.Panels {
		titles = append(titles, strings.ToLower(p.Title))
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range used.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
				if !known[base] {
					t.Errorf("panel %q queries %s, which no tide process registers", p.Title, m)
				}
			}
		}
	}
	all := strings.Join(titles, "\n")
	for _, want := range []string{"disk", "files and keys", "requests/s per node", "latency", "log", "leader", "autoscaler", "throughput"} {
		if !strings.Contains(all, want) {
			t.Errorf("no panel about %q (the built-in dashboard has one)", want)
		}
	}
}

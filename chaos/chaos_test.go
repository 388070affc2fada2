package chaos

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moby/moby/client"

	dockerprov "tide/autoscale/provision/docker"
)

// testImage skips the test without a Docker engine, and otherwise builds
// the node image FROM scratch around a static tide built from this tree,
// under a tag of its own that is removed when the test ends.
func testImage(t *testing.T) (*client.Client, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cli, err := dockerprov.Engine(ctx)
	if err != nil {
		t.Skipf("Docker engine unreachable (%v): the chaos scenarios need one on this host", err)
	}
	t.Cleanup(func() { cli.Close() })
	root, err := dockerprov.ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "tide")
	if err := dockerprov.BuildBinary(ctx, root, bin); err != nil {
		t.Fatal(err)
	}
	image, err := dockerprov.BuildImageAs(ctx, cli, bin, "tide-node", "chaos")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := dockerprov.RemoveImage(ctx, cli, image); err != nil {
			t.Errorf("remove image: %v", err)
		}
	})
	return cli, image
}

// TestScenarios runs every built-in scenario, small, on real containers:
// each must lose no acknowledged write, keep its single-writer keys
// linearizable, end with every file at its full replica count, and keep
// the log's history linearizable with no command applied twice.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Docker containers")
	}
	cli, image := testImage(t)
	only := os.Getenv("TIDE_CHAOS")
	for _, sc := range Scenarios {
		if only != "" && only != sc.Name {
			continue
		}
		t.Run(sc.Name, func(t *testing.T) {
			if sc.Open != "" && only != sc.Name {
				t.Skipf("open bug: %s (TIDE_CHAOS=%s runs it)", sc.Open, sc.Name)
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			rep, err := Run(context.Background(), sc, Options{Image: image, Client: cli, Log: log})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			WriteTable(&out, []Report{rep})
			WriteDetails(&out, []Report{rep})
			t.Logf("\n%s", out.String())
			if (sc.KV != nil && (rep.KV == nil || rep.KV.Acknowledged == 0)) || (sc.Files != nil && (rep.Files == nil || rep.Files.Acknowledged == 0)) ||
				(sc.Log != nil && (rep.Log == nil || rep.Log.Acknowledged == 0)) {
				t.Errorf("a workload acknowledged nothing: the scenario tested nothing")
			}
			if len(rep.Faults) != len(sc.Steps) {
				t.Errorf("%d faults injected, want %d", len(rep.Faults), len(sc.Steps))
			}
			if !rep.OK() {
				t.Errorf("scenario %s failed; its log:\n%s", sc.Name, logs.String())
			} else if os.Getenv("TIDE_CHAOS_LOGS") != "" {
				t.Logf("scenario %s's log:\n%s", sc.Name, logs.String())
			}
		})
	}
}

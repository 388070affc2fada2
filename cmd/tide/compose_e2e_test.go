package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	dockerprov "tide/autoscale/provision/docker"
)

// TestCompose starts deploy/docker/compose.yaml on the machine's Docker
// engine (a 3-node store, a log, the autoscaler with the Docker
// provisioner and the dashboard, on a network and image of the test's
// own), writes and reads a key, a file and a log entry, checks the
// dashboard sees the ring and the log, and takes it all down again.
func TestCompose(t *testing.T) {
	compose, err := exec.LookPath("docker-compose")
	var composeArgs []string
	if err != nil {
		if exec.Command("docker", "compose", "version").Run() != nil {
			t.Skip("neither docker-compose nor docker compose is installed")
		}
		compose, composeArgs = "docker", []string{"compose"}
	}
	cli, err := dockerprov.NewClient()
	if err != nil {
		t.Skipf("no Docker engine: %v", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		t.Skipf("no Docker engine: %v", err)
	}
	root, err := dockerprov.ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	image := "tide-node:compose-" + id
	if err := dockerprov.BuildImage(ctx, cli, tideBin, image); err != nil {
		t.Fatal(err)
	}
	defer exec.Command("docker", "image", "rm", "-f", image).Run()
	cluster := "tide-compose-" + id
	net := fmt.Sprintf("10.214.%d", 1+rand.IntN(250))
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, compose, append(append(append([]string{}, composeArgs...), "-p", cluster, "-f", filepath.Join(root, "deploy", "docker", "compose.yaml")), args...)...)
		cmd.Env = append(os.Environ(), "TIDE_IMAGE="+image, "TIDE_NET="+net, "TIDE_CLUSTER="+cluster, "TIDE_DASHBOARD_PORT=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("up", "-d"); err != nil {
		if strings.Contains(out, "overlap") {
			t.Skipf("subnet %s.0/24 is taken on this engine: %s", net, out)
		}
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	defer func() {
		if t.Failed() {
			out, _ := run("logs", "--tail", "30")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := run("down", "-v", "--remove-orphans", "-t", "10"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
		// Nodes the autoscaler added are the provisioner's, not compose's.
		ids, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=tide.cluster="+cluster).Output()
		if f := strings.Fields(string(ids)); len(f) > 0 {
			exec.Command("docker", append([]string{"rm", "-f"}, f...)...).Run()
		}
		exec.Command("docker", "network", "rm", cluster).Run()
		left, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+cluster).Output()
		if len(bytes.TrimSpace(left)) > 0 {
			t.Errorf("containers left after compose down: %s", left)
		}
	}()

	node := func(i int) string { return fmt.Sprintf("%s.%d:5058", net, 10+i) }
	waitFor(t, "a ring of the 3 compose nodes", 2*time.Minute, func() error {
		var ring struct{ Ring map[string]string }
		if err := getJSON(ctx, "http://"+node(3)+"/hash_ring", &ring); err != nil {
			return err
		}
		if len(ring.Ring) != 3 {
			return fmt.Errorf("ring %v", ring.Ring)
		}
		return nil
	})
	put := func(url string, body string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("PUT %s: %s", url, resp.Status)
		}
	}
	put("http://"+node(1)+"/kv/greeting", "hello from compose")
	put("http://"+node(2)+"/files/compose.txt", "a file through compose")
	if code, b := httpDo(t, http.MethodGet, "http://"+node(3)+"/kv/greeting", nil); code != 200 || string(b) != "hello from compose" {
		t.Fatalf("kv get: %d %q", code, b)
	}
	if code, b := httpDo(t, http.MethodGet, "http://"+node(1)+"/files/compose.txt", nil); code != 200 || string(b) != "a file through compose" {
		t.Fatalf("file get: %d %q", code, b)
	}
	// The log: a put and a get by the tide binary inside its container.
	waitFor(t, "a log put", 2*time.Minute, func() error {
		out, err := run("exec", "-T", "log", "/tide", "log", "put", "/data/deployment.json", "greeting", "hello log")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if out, err := run("exec", "-T", "log", "/tide", "log", "get", "/data/deployment.json", "greeting"); err != nil || strings.TrimSpace(out) != "hello log" {
		t.Fatalf("log get: %v %q", err, out)
	}
	// The dashboard and the autoscaler see all of it.
	waitFor(t, "the dashboard to show the ring, the log and the autoscaler's events", 2*time.Minute, func() error {
		var st struct {
			Store  struct{ Members int }
			Log    *struct{ Leader string }
			Events []struct{ System string }
		}
		if err := getJSON(ctx, "http://"+net+".40:7080/api/state", &st); err != nil {
			return err
		}
		if st.Store.Members != 3 || st.Log == nil || st.Log.Leader == "" || len(st.Events) == 0 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	out, _ := exec.Command("docker", "ps", "-q", "--filter", "label=tide.cluster="+cluster).Output()
	if n := len(strings.Fields(string(out))); n != 3 {
		t.Errorf("%d containers labelled as the autoscaler's nodes, want the 3 of compose (it adopts them)", n)
	}
}

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dockerprov "tide/autoscale/provision/docker"
	"tide/tlsconf"
)

// TestTLSAutoscaleDocker runs `tide autoscale --provisioner docker` with
// --tls-*: the files go into every node container, the nodes form their
// ring over mutual TLS, the controller reads them with its certificate,
// and a node's HTTP port on its container's address (not loopback) takes
// no plain-text client.
func TestTLSAutoscaleDocker(t *testing.T) {
	cli, image := dockerTestImage(t)
	clusterName := "tide-e2e-tlsas-" + dockerE2ESuffix()
	prov, err := dockerprov.New(dockerprov.Config{Image: image, Cluster: clusterName, Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := prov.Cleanup(ctx); err != nil {
			t.Errorf("clean up containers: %v", err)
		}
		prov.Close()
	})
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	networkCert(t, cli, prov.Config().Network, certs, "nodes")

	cfg := filepath.Join(dir, "autoscale.yaml")
	os.WriteFile(cfg, []byte(`period: 500ms
store: {min: 3, max: 3, high: 90, low: 10, periods: 2}
launch: {capacity: 1GiB}
`), 0o644)
	cmd := exec.Command(tideBin, append([]string{"autoscale", "--provisioner", "docker", "--docker-image", image, "--docker-cluster", clusterName,
		"--config", cfg, "--state-dir", filepath.Join(dir, "state"), "--listen", "127.0.0.1:0"}, tlsFlags(certs, "nodes")...)...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	listen := controllerAddr(t, out)
	waitFor(t, "the controller to launch 3 TLS node containers into one ring", 4*time.Minute, func() error {
		st := asStatus(t, listen)
		if len(running(st)) != 3 || len(st.Ring) != 3 || st.InFlight {
			return fmt.Errorf("%d running, ring of %d, in flight %v; controller output:\n%s", len(running(st)), len(st.Ring), st.InFlight, out.String())
		}
		return nil
	})
	nodeHTTP := running(asStatus(t, listen))[0].HTTPAddr
	if strings.HasPrefix(nodeHTTP, "127.") {
		t.Fatalf("node HTTP address %s is loopback, want the container's", nodeHTTP)
	}
	tls, err := tlsconf.Load(tlsconf.NodeFiles(certs, "nodes"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tls.HTTPClient(30 * time.Second).Get("http://" + nodeHTTP + "/hash_ring")
	if err != nil {
		t.Fatalf("GET /hash_ring of a node container over mutual TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /hash_ring of a node container over mutual TLS: %s", resp.Status)
	}
	if resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + nodeHTTP + "/hash_ring"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain GET /hash_ring of a node container at %s was served", nodeHTTP)
		}
	}
}

package main

import (
	"context"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	dockerprov "tide/autoscale/provision/docker"
	"tide/paxos/node"
	"tide/tlsconf"
	"tide/web"
)

// TestTLSLogDocker runs `tide log up --provisioner docker` with --tls-*:
// the files go into every role container, the roles speak mutual TLS to
// each other and to the client on the host, and their HTTP ports, on the
// containers' addresses (not loopback), take mutual TLS only. The
// certificate names every address of the network, as the roles' do.
func TestTLSLogDocker(t *testing.T) {
	cli, image := dockerTestImage(t)
	cluster := "tide-e2e-tlslog-" + dockerE2ESuffix()
	// Make the network first, to learn the addresses the certificate
	// must name.
	prov, err := dockerprov.New(dockerprov.Config{Image: image, Cluster: cluster, Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := prov.Cleanup(ctx); err != nil {
			t.Errorf("clean up containers: %v", err)
		}
	})
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	networkCert(t, cli, prov.Config().Network, certs, "roles")
	creds := tlsFlags(certs, "roles")

	logDir := filepath.Join(dir, "log")
	startLogUp(t, 4*time.Minute, 2*time.Minute, append([]string{"--provisioner", "docker", "--docker-image", image, "--docker-cluster", cluster,
		"--data-dir", logDir, "--matchmakers", "0", "--batchers", "0", "--leaders", "1", "--proxy-leaders", "1", "--replicas", "1", "--unbatchers", "0"}, creds...)...)
	dep := filepath.Join(logDir, "deployment.json")
	d, err := node.LoadDeployment(dep)
	if err != nil {
		t.Fatal(err)
	}
	if !d.TLS {
		t.Fatalf("the deployment of a TLS log does not say so")
	}
	logCmd := func(creds []string, args ...string) (string, error) {
		b, err := exec.Command(tideBin, append(append([]string{"log"}, args...), creds...)...).CombinedOutput()
		return strings.TrimSpace(string(b)), err
	}
	if got, err := logCmd(creds, "put", dep, "greeting", "hello", "--timeout", "60s"); err != nil || got != "OK" {
		t.Fatalf("put with a certificate of the CA: %v: %s", err, got)
	}
	if got, err := logCmd(creds, "get", dep, "greeting", "--timeout", "60s"); err != nil || got != "hello" {
		t.Fatalf("get with a certificate of the CA: %v: %q", err, got)
	}
	if got, err := logCmd(nil, "get", dep, "greeting", "--timeout", "5s"); err == nil || !strings.Contains(got, "speaks mutual TLS") {
		t.Errorf("get without a certificate: %v: %q, want an error that says the log speaks mutual TLS", err, got)
	}

	// A role's HTTP port on its container's address: mutual TLS only.
	roleHTTP := d.HTTP[d.Log.Replicas[0]]
	tide, err := tlsconf.Load(tlsconf.NodeFiles(certs, "roles"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tide.HTTPClient(30 * time.Second).Get("http://" + roleHTTP + "/status")
	if err != nil {
		t.Fatalf("GET /status of a role container over mutual TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /status of a role container over mutual TLS: %s", resp.Status)
	}
	if resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + roleHTTP + "/status"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain GET /status of a role container at %s was served", roleHTTP)
		}
	}

	// The dashboard reads the roles' /deployment and /status with the
	// certificate, and cannot without it.
	// (With it, wait for the leader: a sample may time out on a loaded
	// machine.)
	dashboardState(t, append([]string{"--log", dep}, creds...), func(st web.State) bool { return st.Log != nil && st.Log.Leader == d.Log.Leaders[0] })
	if st := dashboardState(t, []string{"--log", dep}, func(st web.State) bool { return st.Log != nil && st.Log.Error != "" }); st.Log.Leader != "" {
		t.Errorf("dashboard without a certificate: leader %q, error %q; want no leader", st.Log.Leader, st.Log.Error)
	}
}

// networkCert makes a CA in dir and a certificate NAME of it that names
// every address of the Docker network (and loopback): the containers the
// test starts there take addresses of the provisioner's choosing.
func networkCert(t *testing.T, cli *client.Client, network, dir, name string) {
	t.Helper()
	nw, err := cli.NetworkInspect(context.Background(), network, client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var subnet netip.Prefix
	for _, c := range nw.Network.IPAM.Config {
		if c.Subnet.IsValid() && c.Subnet.Addr().Is4() {
			subnet = c.Subnet
		}
	}
	if !subnet.IsValid() || subnet.Bits() < 22 {
		t.Fatalf("network %s: subnet %v, want an IPv4 one of at most 1024 addresses", network, subnet)
	}
	ips := []string{"127.0.0.1"}
	for a := subnet.Masked().Addr().Next(); subnet.Contains(a); a = a.Next() {
		ips = append(ips, a.String())
	}
	runTide(t, "cert", "init", "--dir", dir)
	runTide(t, "cert", "node", name, "--ip", strings.Join(ips, ","), "--dir", dir)
}

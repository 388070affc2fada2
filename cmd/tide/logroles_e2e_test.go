package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"tide/paxos/node"
)

// testNetDeployment lays out the default shape on addresses of TEST-NET-1
// (192.0.2.0/24, RFC 5737), which no machine has: a process that tried to
// bind one would fail.
func testNetDeployment(t *testing.T) node.Deployment {
	t.Helper()
	s := node.DefaultShape
	var roles, https []string
	for i := range s.Count() {
		roles = append(roles, fmt.Sprintf("192.0.2.%d:5057", i+1))
		https = append(https, fmt.Sprintf("192.0.2.%d:5058", i+1))
	}
	d, err := node.LayoutDeployment(s, roles, https)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestLogServeListensApartFromItsAddress runs `tide log serve` for one
// role whose address (192.0.2.x, as a Kubernetes Service's ClusterIP would
// be) is not on this machine, with --listen 127.0.0.1:0: the process must
// bind the listen address, serve the role under its own address, and
// accept the log's connections there. Without --listen, the same command
// fails to bind. Both addresses it binds are port 0, read back from its
// log.
func TestLogServeListensApartFromItsAddress(t *testing.T) {
	d := testNetDeployment(t)
	dep, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	role := d.Log.Batchers[0]
	base := []string{"log", "serve", "--log-format", "json", "--deployment-json", string(dep), "--role", role, "--http-addr", "127.0.0.1:0"}

	// Without --listen, the role binds its own address, which is not here.
	out, err := exec.Command(tideBin, append(base, "--data-dir", t.TempDir())...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), role) {
		t.Fatalf("tide log serve --role %s (not an address of this machine) without --listen: err %v, output:\n%s", role, err, out)
	}

	cmd := exec.Command(tideBin, append(base, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0")...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	// Read the process's log for the addresses it bound.
	type line struct {
		Msg, Addr, Listen string
	}
	bound := make(chan line, 16)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var l line
			if json.Unmarshal(sc.Bytes(), &l) == nil && (l.Msg == "role listening" || l.Msg == "http listening") {
				bound <- l
			}
		}
		io.Copy(io.Discard, stderr)
		exited <- cmd.Wait()
		close(bound)
	}()
	var roleListen, httpListen string
	deadline := time.After(time.Minute)
	for roleListen == "" || httpListen == "" {
		select {
		case l, ok := <-bound:
			if !ok {
				t.Fatalf("tide log serve exited before it listened")
			}
			if l.Msg == "role listening" {
				if l.Addr != role {
					t.Fatalf("role listening as %q, want %q", l.Addr, role)
				}
				roleListen = l.Listen
			} else {
				httpListen = l.Listen
			}
		case <-deadline:
			t.Fatal("tide log serve did not report its addresses within a minute")
		}
	}
	if h, _, _ := net.SplitHostPort(roleListen); h != "127.0.0.1" {
		t.Fatalf("role bound %q, want an address on 127.0.0.1 (--listen)", roleListen)
	}

	// The HTTP server says the role runs under its own address.
	var st []node.Status
	waitFor(t, "/status", 30*time.Second, func() error {
		resp, err := http.Get("http://" + httpListen + "/status")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&st)
	})
	if len(st) != 1 || st[0].Addr != role || st[0].Kind != "batcher" {
		t.Fatalf("/status = %+v, want one batcher at %s", st, role)
	}
	// And the log's messages reach it at the listen address.
	c, err := net.DialTimeout("tcp", roleListen, 10*time.Second)
	if err != nil {
		t.Fatalf("dial the role at its listen address %s: %v", roleListen, err)
	}
	c.Close()
}

// TestLogUpProvisionerFlags: tide log up refuses flags of another
// provisioner and bad provisioner settings, before it starts anything.
func TestLogUpProvisionerFlags(t *testing.T) {
	certs := filepath.Join(t.TempDir(), "certs")
	runTide(t, "cert", "init", "--dir", certs)
	runTide(t, "cert", "node", "node", "--ip", "127.0.0.1", "--dir", certs)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--provisioner", "local", "--k8s-image", "x"}, "--k8s-image do not apply to --provisioner local"},
		{[]string{"--provisioner", "docker", "--aws-subnet", "s"}, "--aws-subnet do not apply to --provisioner docker"},
		{[]string{"--provisioner", "aws", "--cpus", "1"}, "--cpus do not apply to --provisioner aws"},
		{[]string{"--provisioner", "aws", "--aws-image", "ami-1", "--aws-region", "us-east-1"}, "subnet"},
		{[]string{"--provisioner", "aws", "--aws-subnet", "subnet-1", "--aws-region", "us-east-1"}, "AMI"},
		{[]string{"--provisioner", "aws", "--aws-subnet", "subnet-1", "--aws-image", "ami-1", "--aws-region", "us-east-1", "--aws-instance-types", "proxie=c7i.large"}, `unknown kind "proxie"`},
		{[]string{"--provisioner", "kubernetes", "--k8s-pull-policy", "Sometimes"}, "pull policy"},
		{[]string{"--provisioner", "kubernetes", "--k8s-cluster", "Bad_Name"}, "cluster name"},
		{[]string{"--provisioner", "kubernetes", "--role-cpus", "proxy=-1"}, "--role-cpus"},
		{[]string{"--provisioner", "kubernetes"}, "no API server configuration"},
		{[]string{"--provisioner", "ec2"}, "want local, docker, kubernetes or aws"},
		// --tls-* is taken: it gets as far as the API server.
		{append([]string{"--provisioner", "kubernetes"}, tlsFlags(certs, "node")...), "no API server configuration"},
		{append([]string{"--provisioner", "aws", "--aws-subnet", "subnet-1", "--aws-region", "us-east-1"}, tlsFlags(certs, "node")...), "AMI"},
		// --tls-ca-key: tide log up issues its own certificate and goes on.
		{[]string{"--provisioner", "kubernetes", "--tls-ca", filepath.Join(certs, "ca.crt"), "--tls-ca-key", filepath.Join(certs, "ca.key")}, "no API server configuration"},
		{[]string{"--provisioner", "docker", "--tls-ca", filepath.Join(certs, "ca.crt"), "--tls-ca-key", filepath.Join(certs, "ca.key")}, "--tls-ca-key applies to --provisioner kubernetes and aws"},
		{[]string{"--provisioner", "kubernetes", "--tls-ca", filepath.Join(certs, "ca.crt"), "--tls-ca-key", filepath.Join(certs, "node.key")}, "--tls-ca-key: load the CA"},
	} {
		cmd := exec.Command(tideBin, append([]string{"log", "up", "--data-dir", t.TempDir()}, c.args...)...)
		// No kubeconfig anywhere, and not in a pod.
		home := t.TempDir()
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
			return strings.HasPrefix(e, "KUBECONFIG=") || strings.HasPrefix(e, "KUBERNETES_SERVICE_") || strings.HasPrefix(e, "HOME=")
		}), "HOME="+home, "KUBECONFIG="+filepath.Join(home, "none"))
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("tide log up %s: err %v, want an error with %q; output:\n%s", strings.Join(c.args, " "), err, c.want, out)
		}
	}
}

// TestLogManifestFlags: the arguments deploy/kubernetes/log gives tide log
// up are flags it has.
func TestLogManifestFlags(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "log", "tide-log.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc struct {
			Kind string
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct{ Args []string }
					}
				}
			}
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc.Kind == "Deployment" && len(doc.Spec.Template.Spec.Containers) == 1 {
			args = doc.Spec.Template.Spec.Containers[0].Args
		}
	}
	if len(args) < 2 || args[0] != "log" || args[1] != "up" {
		t.Fatalf("the manifest's Deployment runs %v, want log up ...", args)
	}
	cmd := newLogUpCmd()
	if err := cmd.ParseFlags(args[2:]); err != nil {
		t.Fatalf("tide log up %v: %v", args[2:], err)
	}
	if p := cmd.Flags().Lookup("provisioner").Value.String(); p != "kubernetes" {
		t.Errorf("--provisioner %s", p)
	}
}

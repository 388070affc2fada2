package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"tide/autoscale"
	"tide/tlsconf"
	"tide/web"
)

// TestTLSAutoscaleListen runs controllers with --tls-* and checks their
// --listen: `tide autoscale status|events` with a certificate of the CA
// read it; on loopback a plain-text client reads it too; a certificate of
// another CA is refused; and on an interface other than loopback (when
// the machine has one) a plain-text client is refused while the
// certificate still reads.
func TestTLSAutoscaleListen(t *testing.T) {
	dir := t.TempDir()
	certs, other := filepath.Join(dir, "certs"), filepath.Join(dir, "other")
	ext := nonLoopbackIPv4()
	ips := "127.0.0.1"
	if ext != "" {
		ips += "," + ext
	}
	runTide(t, "cert", "init", "--dir", certs)
	runTide(t, "cert", "node", "node", "--ip", ips, "--dir", certs)
	runTide(t, "cert", "node", "admin", "--ip", "127.0.0.1", "--dir", certs)
	runTide(t, "cert", "init", "--dir", other)
	runTide(t, "cert", "node", "admin", "--ip", "127.0.0.1", "--dir", other)
	state := filepath.Join(dir, "state")
	cfg := filepath.Join(dir, "autoscale.yaml")
	if err := os.WriteFile(cfg, []byte("period: 300ms\nstore: {min: 1, max: 1}\nlaunch: {replicas: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	killStateNodes(t, state) // the nodes outlive their controllers
	start := func(listen string) (string, *syncBuffer) {
		cmd := exec.Command(tideBin, append([]string{"autoscale", "--config", cfg, "--state-dir", state, "--listen", listen}, tlsFlags(certs, "node")...)...)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
		return controllerAddr(t, out), out
	}
	tide := func(args ...string) (string, error) {
		out, err := exec.Command(tideBin, args...).CombinedOutput()
		return string(out), err
	}
	admin := tlsFlags(certs, "admin")

	addr, out := start("127.0.0.1:0")
	defer func() {
		if t.Failed() {
			t.Logf("controller:\n%s", out.String())
		}
	}()
	// With the certificate: its status, then the event of the node it
	// launched.
	waitFor(t, "tide autoscale status with a certificate to show the leader", 2*time.Minute, func() error {
		o, err := tide(append([]string{"autoscale", "status", "--json", "--addr", addr}, admin...)...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, o)
		}
		var st autoscale.Status
		if err := json.Unmarshal([]byte(o), &st); err != nil {
			return fmt.Errorf("%v: %s", err, o)
		}
		if !st.Leader {
			return fmt.Errorf("not the leader yet: %s", o)
		}
		return nil
	})
	waitFor(t, "tide autoscale events with a certificate to list an event", 2*time.Minute, func() error {
		o, err := tide(append([]string{"autoscale", "events", "--json", "--addr", addr}, admin...)...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, o)
		}
		var ev autoscale.Event
		if err := json.Unmarshal([]byte(strings.SplitN(o, "\n", 2)[0]), &ev); err != nil || ev.Seq == 0 {
			return fmt.Errorf("no event yet (%v): %q", err, o)
		}
		return nil
	})
	// Plain text on loopback still reads.
	if o, err := tide("autoscale", "status", "--json", "--addr", addr); err != nil || !strings.Contains(o, `"leader": true`) {
		t.Fatalf("plain tide autoscale status on loopback: %v: %s", err, o)
	}
	// A certificate of another CA does not.
	if o, err := tide(append([]string{"autoscale", "status", "--addr", addr}, tlsFlags(other, "admin")...)...); err == nil || !strings.Contains(o, "certificate") {
		t.Fatalf("tide autoscale status with a certificate of another CA: %v: %s, want a handshake error", err, o)
	}

	if ext == "" {
		t.Log("no interface other than loopback: its half is not run")
		return
	}
	// A standby controller on another interface: mutual TLS only.
	extAddr, _ := start(net.JoinHostPort(ext, "0"))
	waitFor(t, "the standby's status with a certificate", 2*time.Minute, func() error {
		o, err := tide(append([]string{"autoscale", "status", "--json", "--addr", extAddr}, admin...)...)
		if err != nil {
			return fmt.Errorf("%v: %s", err, o)
		}
		var st autoscale.Status
		return json.Unmarshal([]byte(o), &st)
	})
	if o, err := tide("autoscale", "status", "--addr", extAddr); err == nil || !strings.Contains(o, "--tls-ca") {
		t.Fatalf("plain tide autoscale status on %s: %v: %s, want a refusal that names --tls-ca", extAddr, err, o)
	}
	if o, err := tide("autoscale", "events", "--addr", extAddr); err == nil {
		t.Fatalf("plain tide autoscale events on %s was answered: %s", extAddr, o)
	}
	if resp, err := http.Get("http://" + extAddr + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("plain GET /metrics on %s: %s", extAddr, resp.Status)
		}
	}

	// The dashboard's --autoscale: with the certificate it shows the
	// controller's events; without, none (its store on loopback it reads
	// either way).
	var nodeHTTP string
	waitFor(t, "the controller's node to run", 2*time.Minute, func() error {
		r := running(asStatus(t, addr))
		if len(r) == 0 {
			return fmt.Errorf("no node running yet")
		}
		nodeHTTP = r[0].HTTPAddr
		return nil
	})
	dashboardState(t, append([]string{"--nodes", nodeHTTP, "--autoscale", extAddr}, admin...), func(st web.State) bool { return len(st.Events) > 0 })
	if st := dashboardState(t, []string{"--nodes", nodeHTTP, "--autoscale", extAddr}, func(st web.State) bool { return st.Store.Members > 0 }); len(st.Events) != 0 {
		t.Errorf("dashboard without a certificate shows %d events of a controller off loopback", len(st.Events))
	}

	// The dashboard's own page off loopback: over mutual TLS only with
	// --tls-*, and refused in plain text unless --insecure.
	if o, err := tide("dashboard", "--nodes", nodeHTTP, "--listen", net.JoinHostPort(ext, "0")); err == nil || !strings.Contains(o, "--insecure") {
		t.Fatalf("a plain dashboard on %s: %v: %s, want a refusal naming --insecure", ext, err, o)
	}
	dash := exec.Command(tideBin, append([]string{"dashboard", "--nodes", nodeHTTP, "--listen", net.JoinHostPort(ext, "0")}, tlsFlags(certs, "node")...)...)
	dout := &syncBuffer{}
	dash.Stdout, dash.Stderr = dout, dout
	if err := dash.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { dash.Process.Signal(os.Interrupt); dash.Wait() }()
	re := regexp.MustCompile(`dashboard\s+https://(\S+)/`)
	var page string
	waitFor(t, "the dashboard's https address", time.Minute, func() error {
		m := re.FindStringSubmatch(dout.String())
		if m == nil {
			return fmt.Errorf("not yet:\n%s", dout.String())
		}
		page = m[1]
		return nil
	})
	if resp, err := http.Get("http://" + page + "/api/state"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("a plain client read the dashboard on %s: %s", page, resp.Status)
		}
	}
	adminTLS, err := tlsconf.Load(tlsconf.NodeFiles(certs, "admin"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := adminTLS.HTTPClient(10 * time.Second).Get("http://" + page + "/api/state")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the dashboard on %s with a certificate: %v %v", page, resp, err)
	}
	resp.Body.Close()
}

// nonLoopbackIPv4 is an IPv4 address of this machine other than loopback
// that a socket can bind, or "".
func nonLoopbackIPv4() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() || n.IP.To4() == nil || n.IP.IsLinkLocalUnicast() {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(n.IP.String(), "0"))
		if err != nil {
			continue
		}
		ln.Close()
		return n.IP.String()
	}
	return ""
}

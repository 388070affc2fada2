package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"tide/autoscale"
	"tide/web"
)

// TestTLSAutoscaleAndDashboard runs the autoscaler and the dashboard
// against a ring of real nodes that speak mutual TLS and take bearer
// tokens, so that a client without a certificate of the CA (and no token)
// is refused even its reads on loopback. A controller with --tls-* starts
// the nodes with its files, sees the ring form, and a second one drains a
// node (POST /internal/leave, which only a certificate of the CA may do);
// the dashboard with --tls-* shows the ring, and one without it shows the
// refusal.
func TestTLSAutoscaleAndDashboard(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	runTide(t, "cert", "init", "--dir", certs)
	runTide(t, "cert", "node", "node", "--ip", "127.0.0.1", "--dir", certs)
	runTide(t, "cert", "node", "admin", "--ip", "127.0.0.1", "--dir", certs)
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("admin an-admin-token-of-this-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	var listen string
	start := func(min int) (*exec.Cmd, *syncBuffer) {
		cfg := filepath.Join(dir, fmt.Sprintf("min%d.yaml", min))
		os.WriteFile(cfg, []byte(fmt.Sprintf(`period: 300ms
store: {min: %d, max: 4, high: 90, low: 50, periods: 2, scale_out_cooldown: 1s, scale_in_cooldown: 1s}
launch: {capacity: 4GiB, replicas: 2, flags: ["--http-tokens", %q]}
`, min, tokens)), 0o644)
		cmd := exec.Command(tideBin, append([]string{"autoscale", "--config", cfg, "--state-dir", state, "--listen", "127.0.0.1:0"}, tlsFlags(certs, "node")...)...)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		listen = controllerAddr(t, out)
		return cmd, out
	}
	killStateNodes(t, state) // the nodes outlive their controllers

	a, aOut := start(3)
	waitFor(t, "the controller to launch 3 TLS nodes and see their ring", 3*time.Minute, func() error {
		st := asStatus(t, listen)
		if len(running(st)) != 3 || len(st.Ring) != 3 || st.InFlight {
			return fmt.Errorf("%d running, ring of %d, in flight %v; controller output:\n%s", len(running(st)), len(st.Ring), st.InFlight, aOut.String())
		}
		return nil
	})
	nodeHTTP := running(asStatus(t, listen))[0].HTTPAddr
	// A client without a certificate or a token reads nothing.
	resp, err := http.Get("http://" + nodeHTTP + "/hash_ring")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("plain GET /hash_ring of a node with tokens: %s, want 401", resp.Status)
	}
	a.Process.Kill() // the nodes keep running for the next controller
	a.Wait()

	_, bOut := start(2)
	defer func() {
		if t.Failed() {
			t.Logf("second controller:\n%s", bOut.String())
		}
	}()
	waitFor(t, "the second controller to drain a node over mutual TLS", 3*time.Minute, func() error {
		st := asStatus(t, listen)
		if !st.Leader || st.InFlight || len(running(st)) != 2 || len(st.Ring) != 2 {
			return fmt.Errorf("leader %v, in flight %v, %d running, ring of %d", st.Leader, st.InFlight, len(running(st)), len(st.Ring))
		}
		return nil
	})
	drained := false
	for _, ev := range asEvents(listen) {
		drained = drained || (ev.Action == autoscale.ActScaleIn && ev.Outcome == "succeeded")
	}
	if !drained {
		t.Fatalf("no successful scale in among the events")
	}

	// The dashboard: with a certificate it shows the ring; without one
	// the nodes refuse it.
	nodeHTTP = running(asStatus(t, listen))[0].HTTPAddr
	// With a certificate: wait for the ring of 2 (a sample may time out
	// on a loaded machine); without: for the error, and no ring.
	dashboardState(t, append([]string{"--nodes", nodeHTTP}, tlsFlags(certs, "admin")...), func(st web.State) bool { return st.Store.Members == 2 })
	if st := dashboardState(t, []string{"--nodes", nodeHTTP}, func(st web.State) bool { return st.Store.Error != "" }); st.Store.Members != 0 || !strings.Contains(st.Store.Error, "401") {
		t.Errorf("dashboard without a certificate: %d members, error %q; want the nodes' refusal", st.Store.Members, st.Store.Error)
	}
}

// dashboardState runs `tide dashboard args...` on a free port until its
// /api/state satisfies ready, and returns that state.
func dashboardState(t *testing.T, args []string, ready func(web.State) bool) web.State {
	t.Helper()
	cmd := exec.Command(tideBin, append([]string{"dashboard", "--listen", "127.0.0.1:0"}, args...)...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	re := regexp.MustCompile(`dashboard\s+(http://\S+)/`)
	var url string
	waitFor(t, "the dashboard's address", time.Minute, func() error {
		m := re.FindStringSubmatch(out.String())
		if m == nil {
			return fmt.Errorf("not yet:\n%s", out.String())
		}
		url = m[1]
		return nil
	})
	var st web.State
	waitFor(t, "the dashboard's first sample", time.Minute, func() error {
		st = web.State{}
		if err := getJSON(context.Background(), url+"/api/state", &st); err != nil {
			return err
		}
		if !ready(st) {
			return fmt.Errorf("no sample yet")
		}
		return nil
	})
	return st
}

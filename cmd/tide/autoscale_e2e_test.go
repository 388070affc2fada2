package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tide/autoscale"
	"tide/autoscale/provision"
)

// asStatus reads a controller's /status.
func asStatus(t *testing.T, addr string) autoscale.Status {
	t.Helper()
	var st autoscale.Status
	if err := getJSON(context.Background(), "http://"+addr+"/status", &st); err != nil {
		return autoscale.Status{}
	}
	return st
}

func asEvents(addr string) []autoscale.Event {
	var evs []autoscale.Event
	getJSON(context.Background(), "http://"+addr+"/events", &evs)
	return evs
}

func running(st autoscale.Status) []provision.Instance {
	var out []provision.Instance
	for _, in := range st.Instances {
		if in.State == provision.StateRunning {
			out = append(out, in)
		}
	}
	return out
}

func diskPercent(httpAddr string) (float64, error) {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	o, err := autoscale.ParseMetrics(resp.Body)
	return o.DiskPercent, err
}

func putFile(httpAddr, name string, data []byte) error {
	req, _ := http.NewRequest(http.MethodPut, "http://"+httpAddr+"/files/"+name, bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("put %s: %s %s", name, resp.Status, b)
	}
	return nil
}

func fetchFile(httpAddr, name string) ([]byte, error) {
	resp, err := http.Get("http://" + httpAddr + "/files/" + name)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s from %s: %s", name, httpAddr, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// TestAutoscaleLocal is the seed's autoscaling scenario for real: `tide up
// --autoscale` runs 3 nodes of 16 MiB; files are uploaded until a node
// crosses the disk threshold; a 4th node launches, joins and takes data,
// the full node's use drops, and every file still downloads. Deleting the
// files drains the ring back to its minimum, losing nothing that was kept.
func TestAutoscaleLocal(t *testing.T) {
	const bigFiles = 48
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "autoscale.yaml")
	os.WriteFile(cfgPath, []byte(`period: 500ms
store: {min: 3, max: 6, high: 70, low: 30, periods: 3, scale_out_cooldown: 10s, scale_in_cooldown: 3s}
launch: {capacity: 16MiB}
`), 0o644)
	// Every node, and the controller, binds free ports and reports them:
	// nothing is picked here for a child to bind later.
	cmd := exec.Command(tideBin, "up", "--autoscale", "--autoscale-config", cfgPath, "--autoscale-listen", "127.0.0.1:0",
		"--log=false", "--dashboard", "", "--host-per-node=false", "--base-port", "0", "--data-dir", filepath.Join(dir, "data"))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("tide up output:\n%s", out.String())
		}
	}()
	var listen string
	waitFor(t, "tide up's banner", time.Minute, func() error {
		for _, line := range strings.Split(out.String(), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == "autoscale" && strings.Contains(line, "--addr ") {
				listen = f[len(f)-1]
				return nil
			}
		}
		return fmt.Errorf("no autoscale line yet in:\n%s", out.String())
	})
	waitFor(t, "3 running nodes under a leading controller", time.Minute, func() error {
		st := asStatus(t, listen)
		if !st.Leader || len(running(st)) != 3 || len(st.Ring) != 3 {
			return fmt.Errorf("leader %v, %d running, ring of %d", st.Leader, len(running(st)), len(st.Ring))
		}
		return nil
	})
	first := running(asStatus(t, listen))[0].HTTPAddr

	// Two small files are kept throughout; 48 of 256 KiB fill the ring
	// (3 copies each, so every node holds 12 MiB of 16: 75%). Many small
	// files, not a few big ones: a 4th node's ranges hold 5/6 of the keys,
	// and with 12 files it held all of them (and stayed at 75%) about one
	// run in nine.
	files := map[string][]byte{}
	rng := rand.New(rand.NewPCG(1, 2))
	mk := func(name string, n int) {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		files[name] = b
		if err := putFile(first, name, b); err != nil {
			t.Fatal(err)
		}
	}
	mk("keep-a", 10_000)
	mk("keep-b", 20_000)
	for i := range bigFiles {
		mk(fmt.Sprintf("big-%02d", i), 12<<20/bigFiles)
	}
	full := 0.0
	for _, in := range running(asStatus(t, listen)) {
		p, err := diskPercent(in.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		full = max(full, p)
	}
	if full < 70 {
		t.Fatalf("fullest node at %.1f%% after the uploads; the scenario needs >= 70%%", full)
	}

	var added provision.Instance
	waitFor(t, "a scale out", 2*time.Minute, func() error {
		for _, ev := range asEvents(listen) {
			if ev.Action == autoscale.ActScaleOut && ev.Outcome == "succeeded" {
				for _, in := range asStatus(t, listen).Instances {
					if in.ID == ev.Instance {
						added = in
						return nil
					}
				}
			}
		}
		return fmt.Errorf("no scale out yet")
	})
	t.Logf("added %s at %s", added.ID, added.HTTPAddr)
	// The new node serves reads, and receives data of its own.
	waitFor(t, "the new node to serve a read", time.Minute, func() error {
		got, err := fetchFile(added.HTTPAddr, "big-00")
		if err != nil {
			return err
		}
		if !bytes.Equal(got, files["big-00"]) {
			return fmt.Errorf("big-00 differs through %s", added.HTTPAddr)
		}
		return nil
	})
	waitFor(t, "data to move to the new node and the full nodes to drop", 2*time.Minute, func() error {
		p, err := diskPercent(added.HTTPAddr)
		if err != nil || p == 0 {
			return fmt.Errorf("new node at %.1f%% (%v)", p, err)
		}
		for _, in := range running(asStatus(t, listen)) {
			q, err := diskPercent(in.HTTPAddr)
			if err != nil {
				return err
			}
			if q >= full {
				return fmt.Errorf("%s still at %.1f%%", in.ID, q)
			}
		}
		return nil
	})
	checkAll := func(names []string) {
		t.Helper()
		ins := running(asStatus(t, listen))
		for i, name := range names {
			via := ins[i%len(ins)].HTTPAddr
			waitFor(t, "download of "+name, time.Minute, func() error {
				got, err := fetchFile(via, name)
				if err != nil {
					return err
				}
				if !bytes.Equal(got, files[name]) {
					return fmt.Errorf("%s differs through %s", name, via)
				}
				return nil
			})
		}
	}
	var all []string
	for name := range files {
		all = append(all, name)
	}
	checkAll(all)

	// Delete the big files: the ring drains back to its minimum of 3.
	for i := range bigFiles {
		name := fmt.Sprintf("big-%02d", i)
		req, _ := http.NewRequest(http.MethodDelete, "http://"+first+"/files/"+name, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	waitFor(t, "the ring to drain back to 3 nodes", 3*time.Minute, func() error {
		st := asStatus(t, listen)
		if n := len(running(st)); n != 3 || len(st.Ring) != 3 || st.InFlight {
			return fmt.Errorf("%d running, ring of %d, in flight %v", n, len(st.Ring), st.InFlight)
		}
		return nil
	})
	scaleIns := 0
	for _, ev := range asEvents(listen) {
		if ev.Action == autoscale.ActScaleIn && ev.Outcome == "succeeded" {
			scaleIns++
		}
		if ev.Outcome == "failed" {
			t.Errorf("failed event: %+v", ev)
		}
	}
	if scaleIns == 0 {
		t.Fatal("back at 3 nodes without a scale in event")
	}
	checkAll([]string{"keep-a", "keep-b"})
	if !strings.Contains(out.String(), "autoscale: store scale in succeeded") {
		t.Errorf("the controller's log lacks the scale in")
	}
}

// TestAutoscaleControllerCrashResumesDrain kills controllers with SIGKILL:
// one right after it launched the ring, and one in the middle of a drain.
// The next controller, on the same state directory, adopts the nodes the
// dead ones started, finds the drain in flight and finishes it; no file is
// lost.
func TestAutoscaleControllerCrashResumesDrain(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	var listen string // each controller's, on a port of its own
	writeCfg := func(min int) string {
		p := filepath.Join(dir, fmt.Sprintf("min%d.yaml", min))
		os.WriteFile(p, []byte(fmt.Sprintf(`period: 300ms
store: {min: %d, max: 5, high: 90, low: 50, periods: 2, scale_out_cooldown: 1s, scale_in_cooldown: 1s}
launch: {capacity: 4GiB, replicas: 2}
`, min)), 0o644)
		return p
	}
	start := func(cfg string) (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(tideBin, "autoscale", "--config", cfg, "--state-dir", state, "--listen", "127.0.0.1:0")
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

	a, aOut := start(writeCfg(4))
	// Longer than the controller's 2-minute ReadyTimeout, so that a launch
	// whose node never joins shows up as its failure and retry in the
	// controller's output below rather than as this wait's timeout.
	waitFor(t, "the first controller to launch 4 nodes", 3*time.Minute, func() error {
		st := asStatus(t, listen)
		if len(running(st)) != 4 || len(st.Ring) != 4 || st.InFlight {
			return fmt.Errorf("%d running, ring of %d, change in flight %v; controller output:\n%s", len(running(st)), len(st.Ring), st.InFlight, aOut.String())
		}
		return nil
	})
	files := map[string][]byte{}
	first := running(asStatus(t, listen))[0].HTTPAddr
	// Enough data that a drain takes a while (the victim holds about
	// 60 MB), so the controller can be killed in the middle of it.
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 120 {
		name := fmt.Sprintf("f%03d", i)
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		files[name] = b
		if err := putFile(first, name, b); err != nil {
			t.Fatal(err)
		}
	}
	a.Process.Kill() // crash: the nodes keep running
	a.Wait()
	_ = aOut

	b, bOut := start(writeCfg(3))
	pending := filepath.Join(state, "pending.json")
	var victim string
	for deadline := time.Now().Add(2 * time.Minute); victim == ""; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the second controller never started a drain:\n%s", bOut.String())
		}
		raw, err := os.ReadFile(pending)
		if err != nil {
			continue
		}
		var p autoscale.Pending
		if json.Unmarshal(raw, &p) == nil && p.Action == autoscale.ActScaleIn {
			victim = p.Instance
		}
	}
	b.Process.Kill() // crash in the middle of the drain
	b.Wait()
	t.Logf("second controller killed while draining %s", victim)
	if _, err := os.Stat(pending); err != nil {
		t.Fatalf("the drain's state is gone after the crash: %v\n%s", err, bOut.String())
	}

	_, cOut := start(writeCfg(3))
	defer func() {
		if t.Failed() {
			t.Logf("third controller:\n%s", cOut.String())
		}
	}()
	waitFor(t, "the third controller to finish the drain", 2*time.Minute, func() error {
		st := asStatus(t, listen)
		if !st.Leader || st.InFlight || len(running(st)) != 3 || len(st.Ring) != 3 {
			return fmt.Errorf("leader %v, in flight %v, %d running, ring of %d", st.Leader, st.InFlight, len(running(st)), len(st.Ring))
		}
		for _, in := range running(st) {
			if in.ID == victim {
				return fmt.Errorf("%s still runs", victim)
			}
		}
		return nil
	})
	resumed := false
	for _, ev := range asEvents(listen) {
		resumed = resumed || (ev.Outcome == "resumed" && ev.Instance == victim)
	}
	if !resumed {
		t.Fatalf("no resumed event for %s:\n%s", victim, cOut.String())
	}
	if _, err := os.Stat(pending); !os.IsNotExist(err) {
		t.Fatalf("state left after the resumed drain: %v", err)
	}
	ins := running(asStatus(t, listen))
	i := 0
	for name, want := range files {
		via := ins[i%len(ins)].HTTPAddr
		i++
		waitFor(t, "download of "+name, time.Minute, func() error {
			got, err := fetchFile(via, name)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, want) {
				return fmt.Errorf("%s differs through %s", name, via)
			}
			return nil
		})
	}
}

// killStateNodes stops, at the end of the test, every node a local
// provisioner recorded under the controller state directory state: the
// nodes outlive the controllers that started them.
func killStateNodes(t *testing.T, state string) {
	t.Cleanup(func() {
		ents, _ := os.ReadDir(filepath.Join(state, "nodes"))
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(state, "nodes", e.Name(), "instance.json"))
			if err != nil {
				continue
			}
			var r struct{ Pid int }
			if json.Unmarshal(b, &r) == nil && r.Pid > 0 {
				syscall.Kill(r.Pid, syscall.SIGKILL)
			}
		}
	})
}

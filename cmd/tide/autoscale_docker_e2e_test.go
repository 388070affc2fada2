package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"tide/autoscale"
	"tide/autoscale/provision"
	dockerprov "tide/autoscale/provision/docker"
	"tide/bench"
)

// TestAutoscaleDocker is the seed's autoscaling scenario with real
// containers: `tide autoscale --provisioner docker` runs as a child
// process and, with store.min 3, launches the first three node containers
// itself on a network of their own. Files are uploaded until a node
// crosses the disk threshold; the controller adds a fourth container that
// serves reads, takes data and relieves the full nodes, and every file
// still downloads. Deleting all but two small files drains the ring back
// to three containers, and the kept files still download.
func TestAutoscaleDocker(t *testing.T) {
	cli, image := dockerTestImage(t)
	ctx := context.Background()
	suffix := dockerE2ESuffix()
	work := t.TempDir()

	// A provisioner on the same cluster, to list the containers and to
	// remove them and the network at the end whatever happens.
	clusterName := "tide-e2e-" + suffix
	prov, err := dockerprov.New(dockerprov.Config{Image: image, Cluster: clusterName, Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	network := prov.Config().Network
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := prov.Cleanup(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if left, err := prov.List(ctx); err != nil || len(left) != 0 {
			t.Errorf("containers left after cleanup: %+v (%v)", left, err)
		}
		if _, err := cli.NetworkInspect(ctx, network, client.NetworkInspectOptions{}); err == nil {
			t.Errorf("network %s left after cleanup", network)
		}
		prov.Close()
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		list, _ := prov.List(ctx)
		for _, in := range list {
			logs, _ := prov.Logs(ctx, in.ID, 30)
			t.Logf("container %.12s (%s, %s):\n%s", in.ID, in.HTTPAddr, in.State, logs)
		}
	})

	// The controller, as a user runs it.
	const high, low = 70.0, 30.0
	cfgPath := filepath.Join(work, "autoscale.yaml")
	// max 4 keeps the scenario to one scale out: with uneven ranges a node
	// could stay over the threshold after it and ask for a fifth.
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`period: 500ms
store: {min: 3, max: 4, high: %v, low: %v, periods: 3, scale_out_cooldown: 10s, scale_in_cooldown: 5s}
launch: {capacity: 16MiB, flags: ["--full-repair", "5s"]}
`, high, low)), 0o644)
	cmd := exec.Command(tideBin, "autoscale", "--provisioner", "docker", "--docker-image", image, "--docker-cluster", clusterName,
		"--config", cfgPath, "--state-dir", filepath.Join(work, "state"), "--listen", "127.0.0.1:0")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("tide autoscale exited with %v", err)
			}
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			<-exited
			t.Errorf("tide autoscale did not stop within a minute of SIGINT")
		}
		if t.Failed() {
			t.Logf("tide autoscale output:\n%s", out.String())
		}
	})
	listen := controllerAddr(t, out)

	status := func() autoscale.Status {
		var st autoscale.Status
		getJSON(ctx, "http://"+listen+"/status", &st)
		return st
	}
	events := func() []autoscale.Event {
		var evs []autoscale.Event
		getJSON(ctx, "http://"+listen+"/events", &evs)
		return evs
	}
	containers := func() ([]provision.Instance, error) {
		list, err := prov.List(ctx)
		if err != nil {
			return nil, err
		}
		return slices.DeleteFunc(list, func(in provision.Instance) bool { return in.State != provision.StateRunning }), nil
	}
	// settled waits until the controller leads, changes nothing, and n
	// running containers form the ring it sees.
	settled := func(what string, n int, timeout time.Duration) []provision.Instance {
		t.Helper()
		var ins []provision.Instance
		waitFor(t, what, timeout, func() error {
			st := status()
			var err error
			if ins, err = containers(); err != nil {
				return err
			}
			if !st.Leader || st.InFlight || len(ins) != n || len(st.Ring) != n {
				return fmt.Errorf("leader %v, in flight %v, %d running containers, ring of %d", st.Leader, st.InFlight, len(ins), len(st.Ring))
			}
			addrs := map[string]bool{}
			for _, in := range ins {
				addrs[in.HTTPAddr] = true
			}
			for _, m := range st.Ring {
				if !addrs[m.HTTPAddr] {
					return fmt.Errorf("ring member %s is not a running container", m.HTTPAddr)
				}
			}
			return nil
		})
		return ins
	}

	initial := settled("the controller to launch 3 containers into one ring", 3, 2*time.Minute)
	initialIDs := map[string]bool{}
	for _, in := range initial {
		initialIDs[in.ID] = true
	}
	launched := 0
	for _, ev := range events() {
		if ev.Action == autoscale.ActScaleOut && ev.Outcome == "succeeded" && initialIDs[ev.Instance] {
			launched++
		}
	}
	if launched != 3 {
		t.Fatalf("%d of the 3 running containers have a scale_out event: the controller should have launched them all", launched)
	}
	entry := initial[0].HTTPAddr
	topDisk := func(ins []provision.Instance) (float64, error) {
		top := 0.0
		for _, in := range ins {
			p, err := bench.DiskPercent(ctx, in.HTTPAddr)
			if err != nil {
				return 0, err
			}
			top = max(top, p)
		}
		return top, nil
	}

	// Two small files are kept throughout; files of 256 KiB follow until a
	// node crosses the threshold (every node holds every file: 3 nodes, 3
	// replicas).
	files := map[string][]byte{}
	rng := mrand.New(mrand.NewPCG(7, 11))
	put := func(name string, n int) {
		t.Helper()
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := bench.PutFile(ctx, entry, name, b); err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	put("keep-a", 10_000)
	put("keep-b", 20_000)
	var peak float64
	for i := 0; peak < high; i++ {
		if i == 64 {
			t.Fatalf("no node reached %.0f%% after 64 files of 256 KiB (fullest at %.1f%%)", high, peak)
		}
		put(fmt.Sprintf("fill-%03d", i), 256<<10)
		if peak, err = topDisk(initial); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("fullest node at %.1f%% after %d files", peak, len(files))

	// A scale out for the disk (not one of the launches up to min).
	var addedID string
	waitFor(t, "a scale out to succeed", 2*time.Minute, func() error {
		for _, ev := range events() {
			if ev.Action == autoscale.ActScaleOut && ev.Outcome == "succeeded" && !initialIDs[ev.Instance] {
				addedID = ev.Instance
				return nil
			}
		}
		return fmt.Errorf("no scale out yet; last decision: %s", dockerE2ELastReason(events()))
	})
	four := settled("a 4th container in the ring", 4, time.Minute)
	var added provision.Instance
	for _, in := range four {
		if in.ID == addedID {
			added = in
		}
	}
	if added.ID == "" {
		t.Fatalf("the scaled-out instance %.12s is not among the running containers %+v", addedID, four)
	}
	t.Logf("added container %.12s at %s", added.ID, added.HTTPAddr)

	// The new node serves reads.
	waitFor(t, "a read through the new node", time.Minute, func() error {
		got, err := bench.GetFile(ctx, added.HTTPAddr, "fill-000")
		if err != nil {
			return err
		}
		if !bytes.Equal(got, files["fill-000"]) {
			return fmt.Errorf("fill-000 through %s differs (%d bytes)", added.HTTPAddr, len(got))
		}
		return nil
	})
	// Data moves to it and the fullest node's use drops.
	waitFor(t, "the new node to take data and the fullest node to drop", 2*time.Minute, func() error {
		p, err := bench.DiskPercent(ctx, added.HTTPAddr)
		if err != nil {
			return err
		}
		if p == 0 {
			return fmt.Errorf("the new node holds nothing yet")
		}
		top, err := topDisk(four)
		if err != nil {
			return err
		}
		if top >= peak {
			return fmt.Errorf("fullest node still at %.1f%% (was %.1f%%)", top, peak)
		}
		return nil
	})
	checkFiles := func(names []string, via []provision.Instance) {
		t.Helper()
		for i, name := range names {
			addr := via[i%len(via)].HTTPAddr
			waitFor(t, "download of "+name+" through "+addr, time.Minute, func() error {
				got, err := bench.GetFile(ctx, addr, name)
				if err != nil {
					return err
				}
				if !bytes.Equal(got, files[name]) {
					return fmt.Errorf("%s through %s differs (%d bytes, want %d)", name, addr, len(got), len(files[name]))
				}
				return nil
			})
		}
	}
	var all []string
	for name := range files {
		all = append(all, name)
	}
	slices.Sort(all)
	checkFiles(all, four)

	// Delete all but the two small files: every node falls below low and
	// the controller drains back to min.
	for _, name := range all {
		if strings.HasPrefix(name, "keep-") {
			continue
		}
		if err := bench.DeleteFile(ctx, entry, name); err != nil {
			t.Fatal(err)
		}
		delete(files, name)
	}
	three := settled("the ring to drain back to 3 containers", 3, 3*time.Minute)
	scaleIns := 0
	for _, ev := range events() {
		if ev.Action == autoscale.ActScaleIn && ev.Outcome == "succeeded" {
			scaleIns++
		}
		if ev.Outcome == "failed" {
			t.Errorf("failed event: %s %s: %s (%s)", ev.Action, ev.Instance, ev.Error, ev.Reason)
		}
	}
	if scaleIns == 0 {
		t.Fatal("back at 3 containers without a successful scale in event")
	}
	// The drained container is gone, not just stopped.
	if list, err := prov.List(ctx); err != nil || len(list) != 3 {
		t.Fatalf("after the scale in the cluster has containers %+v (%v), want the 3 running ones only", list, err)
	}
	for _, name := range []string{"keep-a", "keep-b"} {
		checkFiles([]string{name, name, name}, three)
	}
}

// lastReason is the reason of the newest event, for timeout messages.
func dockerE2ELastReason(evs []autoscale.Event) string {
	if len(evs) == 0 {
		return "(no events)"
	}
	ev := evs[len(evs)-1]
	return fmt.Sprintf("%s %s: %s", ev.Action, ev.Outcome, ev.Reason)
}

func dockerE2ESuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// dockerTestImage skips the test unless a Docker engine answers, and
// builds the node image FROM scratch around the test's (static) tide
// binary under a tag of its own, removed when the test ends.
func dockerTestImage(t *testing.T) (*client.Client, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cli, err := dockerprov.Engine(ctx)
	if err != nil {
		t.Skipf("Docker engine unreachable (%v): this scenario needs one on this host", err)
	}
	t.Cleanup(func() { cli.Close() })
	if err := dockerprov.CheckStatic(tideBin); err != nil {
		t.Fatalf("the test binary cannot go in a FROM scratch image: %v", err)
	}
	image, err := dockerprov.BuildImageAs(ctx, cli, tideBin, "tide-node", "e2e")
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

package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"tide/autoscale/provision"
	"tide/store"
)

// Set up by TestMain when an engine answers.
var (
	testCli    *client.Client
	testImage  string
	testBinary string
	skipReason string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if testing.Short() {
		skipReason = "-short: not starting containers"
		return m.Run()
	}
	cli, err := NewClient()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		cancel()
	}
	if err != nil {
		skipReason = fmt.Sprintf("Docker engine unreachable (%v)", err)
		return m.Run()
	}
	testCli = cli
	defer cli.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "tide-docker-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := ModuleRoot(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bin := filepath.Join(dir, "tide")
	testBinary = bin
	start := time.Now()
	if err := BuildBinary(ctx, root, bin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	built := time.Now()
	testImage = "tide-node:test-" + randHex(4)
	if err := BuildImage(ctx, cli, bin, testImage); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "built the static binary in %s and image %s in %s\n",
		built.Sub(start).Round(time.Millisecond), testImage, time.Since(built).Round(time.Millisecond))
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := RemoveImage(ctx, cli, testImage); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	return m.Run()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func needDocker(t *testing.T) {
	t.Helper()
	if testCli == nil {
		t.Skip(skipReason)
	}
}

// newTestProvisioner makes a provisioner for a cluster of its own, and
// removes everything it starts when the test ends, logging the nodes'
// output first if the test failed.
func newTestProvisioner(t *testing.T, cfg Config) *Provisioner {
	t.Helper()
	cfg.Client = testCli
	if cfg.Image == "" {
		cfg.Image = testImage
	}
	cfg.Cluster = "tidetest-" + randHex(4)
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := testCli.NetworkInspect(context.Background(), p.cfg.Network, client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ownsNetwork := n.Network.Labels[LabelCluster] == cfg.Cluster
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if err := p.Cleanup(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if list, err := p.List(ctx); err != nil || len(list) != 0 {
			t.Errorf("List after Cleanup: %+v, %v", list, err)
		}
		if _, err := testCli.NetworkInspect(ctx, p.cfg.Network, client.NetworkInspectOptions{}); ownsNetwork && !cerrdefs.IsNotFound(err) {
			t.Errorf("network %s still there after Cleanup (err %v)", p.cfg.Network, err)
		}
		p.Close()
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cs, _ := p.containers(ctx)
		for _, c := range cs {
			logs, _ := p.Logs(ctx, c.ID, 40)
			t.Logf("container %v (%s):\n%s", c.Names, c.State, logs)
		}
	})
	return p
}

// launchHealthy launches a node and waits until it serves, logging how
// long that took.
func launchHealthy(t *testing.T, p *Provisioner, s provision.Spec) provision.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	in, err := p.Launch(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	launched := time.Now()
	if err := provision.WaitHealthy(ctx, nil, in.HTTPAddr); err != nil {
		t.Fatalf("%s (%s): %v", s.Name, in.ID[:12], err)
	}
	t.Logf("%s: Launch took %s, healthy %s after Launch returned (%s, chord %s)",
		s.Name, launched.Sub(start).Round(time.Millisecond), time.Since(launched).Round(time.Millisecond), in.HTTPAddr, in.ChordAddr)
	return in
}

func waitRingSize(t *testing.T, chordAddr string, want int) {
	t.Helper()
	c := store.NewClient()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var last []store.Info
	var lastErr error
	for ctx.Err() == nil {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		last, lastErr = c.Ring(rctx, chordAddr)
		rcancel()
		if lastErr == nil && len(last) == want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("ring seen from %s did not reach %d members: %d members %v (last error %v)", chordAddr, want, len(last), last, lastErr)
}

func putFile(t *testing.T, httpAddr, name string, body []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+httpAddr+"/files/"+name, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT %s on %s: %s: %s", name, httpAddr, resp.Status, msg)
	}
}

func getFile(httpAddr, name string) ([]byte, error) {
	resp, err := http.Get("http://" + httpAddr + "/files/" + name)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s on %s: %s: %s", name, httpAddr, resp.Status, body)
	}
	return body, nil
}

func ids(ins []provision.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.ID)
	}
	slices.Sort(out)
	return out
}

// TestRing runs three containers as one ring, stores files through it,
// drains and terminates the ring's first node, and reads every file back
// from the two that remain.
func TestRing(t *testing.T) {
	needDocker(t)
	p := newTestProvisioner(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()

	seed := launchHealthy(t, p, provision.Spec{Name: "node-0"})
	nodes := []provision.Instance{seed}
	for i := 1; i < 3; i++ {
		nodes = append(nodes, launchHealthy(t, p, provision.Spec{Name: fmt.Sprintf("node-%d", i), Join: seed.ChordAddr}))
	}
	for i, a := range nodes {
		for _, b := range nodes[:i] {
			if a.HTTPAddr == b.HTTPAddr || a.ID == b.ID {
				t.Fatalf("two nodes share an address or ID: %+v and %+v", a, b)
			}
		}
	}
	waitRingSize(t, seed.ChordAddr, 3)

	files := map[string][]byte{}
	for i := range 6 {
		body := make([]byte, 1000+i*40_000)
		rand.Read(body)
		name := fmt.Sprintf("file-%d", i)
		files[name] = body
		putFile(t, nodes[1].HTTPAddr, name, body)
	}

	list, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(list), ids(nodes); !slices.Equal(got, want) {
		t.Fatalf("List IDs %v, want %v", got, want)
	}
	for _, in := range list {
		if in.State != provision.StateRunning {
			t.Errorf("List: %s is %s, want running", in.ID[:12], in.State)
		}
		i := slices.IndexFunc(nodes, func(n provision.Instance) bool { return n.ID == in.ID })
		if in.HTTPAddr != nodes[i].HTTPAddr || in.ChordAddr != nodes[i].ChordAddr {
			t.Errorf("List: %+v, Launch returned %+v", in, nodes[i])
		}
	}

	// A controller that restarts finds the same nodes.
	p2, err := New(p.Config())
	if err != nil {
		t.Fatal(err)
	}
	list2, err := p2.List(ctx)
	p2.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i := range list2 {
		list2[i].Started, list[i].Started = time.Time{}, time.Time{}
	}
	if !slices.Equal(list, list2) {
		t.Errorf("a second provisioner lists %+v, the first %+v", list2, list)
	}

	start := time.Now()
	if err := p.Drain(ctx, seed); err != nil {
		t.Fatal(err)
	}
	t.Logf("drained %s in %s", seed.HTTPAddr, time.Since(start).Round(time.Millisecond))
	r, err := testCli.ContainerInspect(ctx, seed.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Container.State.Running || r.Container.State.ExitCode != 0 {
		t.Errorf("after Drain the container is %s with exit code %d, want exited with 0", r.Container.State.Status, r.Container.State.ExitCode)
	}
	list, err = p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(list, func(in provision.Instance) bool { return in.ID == seed.ID }); i < 0 || list[i].State != provision.StateTerminated {
		t.Errorf("List after Drain: %+v, want %s terminated", list, seed.ID[:12])
	}
	for range 2 {
		if err := p.Terminate(ctx, seed); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Drain(ctx, seed); err != nil {
		t.Errorf("draining a terminated node: %v", err)
	}

	list, err = p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(list), ids(nodes[1:]); !slices.Equal(got, want) {
		t.Fatalf("List after Terminate: %v, want %v", got, want)
	}
	waitRingSize(t, nodes[1].ChordAddr, 2)
	for name, want := range files {
		for _, n := range nodes[1:] {
			got, err := getFile(n.HTTPAddr, name)
			if err != nil {
				t.Error(err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s from %s: %d bytes differ from the %d stored", name, n.HTTPAddr, len(got), len(want))
			}
		}
	}
}

// TestLimits checks the CPU and memory limits, the node's command line and
// labels, and that Terminate removes the container and its data volume,
// and may be repeated.
func TestLimits(t *testing.T) {
	needDocker(t)
	cfg := Config{NanoCPUs: 500_000_000, Memory: 256 << 20, Replicas: 2, Capacity: 32 << 20}
	p := newTestProvisioner(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	in := launchHealthy(t, p, provision.Spec{Name: "limited", Extra: []string{"--tick", "500ms"}})

	r, err := testCli.ContainerInspect(ctx, in.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Container
	if c.HostConfig.NanoCPUs != cfg.NanoCPUs || c.HostConfig.Memory != cfg.Memory {
		t.Errorf("limits: NanoCPUs %d, Memory %d; want %d, %d", c.HostConfig.NanoCPUs, c.HostConfig.Memory, cfg.NanoCPUs, cfg.Memory)
	}
	if c.Config.User != "65534:65534" {
		t.Errorf("runs as user %q, want 65534:65534", c.Config.User)
	}
	args := strings.Join(c.Config.Cmd, " ")
	host, _, _ := strings.Cut(in.HTTPAddr, ":")
	for _, want := range []string{"--advertise " + host, "--replicas 2", fmt.Sprintf("--capacity %d", cfg.Capacity), "--tick 500ms", "--data-dir /data"} {
		if !strings.Contains(args, want) {
			t.Errorf("command %q lacks %q", args, want)
		}
	}
	ep := c.NetworkSettings.Networks[p.cfg.Network]
	if ep == nil || ep.IPAddress.String() != host {
		t.Errorf("container endpoint %+v, want address %s on %s", ep, host, p.cfg.Network)
	}
	var volume string
	for _, m := range c.Mounts {
		if m.Destination == DataDir {
			volume = m.Name
		}
	}
	if volume == "" {
		t.Fatalf("no volume at %s: %+v", DataDir, c.Mounts)
	}

	for range 2 {
		if err := p.Terminate(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := testCli.ContainerInspect(ctx, in.ID, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("container still there after Terminate (inspect error %v)", err)
	}
	if _, err := testCli.VolumeInspect(ctx, volume, client.VolumeInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Errorf("data volume %s still there after Terminate (inspect error %v)", volume, err)
	}
	if list, err := p.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List after Terminate: %+v, %v", list, err)
	}

	// With the network removed behind its back, the provisioner makes it
	// again for the next node.
	if err := p.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	again := launchHealthy(t, p, provision.Spec{Name: "again"})
	if err := p.Terminate(ctx, again); err != nil {
		t.Fatal(err)
	}
}

// TestBadImage checks that launching from an image the engine lacks fails
// with an error naming it, and leaves nothing behind.
func TestBadImage(t *testing.T) {
	needDocker(t)
	image := "tide-node:missing-" + randHex(4)
	p := newTestProvisioner(t, Config{Image: image})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := p.Launch(ctx, provision.Spec{Name: "n"})
	if err == nil {
		t.Fatal("Launch with a missing image succeeded")
	}
	if !strings.Contains(err.Error(), image) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("error %q does not say image %s is not found", err, image)
	}
	if list, err := p.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("List after a failed Launch: %+v, %v", list, err)
	}
}

// TestAddressesAcrossProvisioners checks that two provisioners on one
// network never hand out the same address.
func TestAddressesAcrossProvisioners(t *testing.T) {
	needDocker(t)
	a := newTestProvisioner(t, Config{})
	b := newTestProvisioner(t, Config{Network: a.cfg.Network})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for i := range 2 {
		for _, p := range []*Provisioner{a, b} {
			in, err := p.Launch(ctx, provision.Spec{Name: fmt.Sprintf("n%d", i), Extra: []string{"--tick", "1s"}})
			if err != nil {
				t.Fatal(err)
			}
			if seen[in.HTTPAddr] {
				t.Fatalf("address %s handed out twice", in.HTTPAddr)
			}
			seen[in.HTTPAddr] = true
		}
	}
	for _, p := range []*Provisioner{a, b} {
		list, err := p.List(ctx)
		if err != nil || len(list) != 2 {
			t.Errorf("cluster %s lists %+v, %v; want its own 2 nodes", p.cfg.Cluster, list, err)
		}
	}
	// b's Cleanup must leave the network to a, whose nodes still use it;
	// a's Cleanup (registered first, run last) removes it.
	if err := b.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := testCli.NetworkInspect(ctx, a.cfg.Network, client.NetworkInspectOptions{}); err != nil {
		t.Errorf("network gone while cluster %s still uses it: %v", a.cfg.Cluster, err)
	}
}

// TestRebuildRemovesOldImage builds one tag from two different binaries
// and expects the first image to be gone after the second build.
func TestRebuildRemovesOldImage(t *testing.T) {
	needDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tag := "tide-node:rebuild-" + randHex(4)
	t.Cleanup(func() {
		if err := RemoveImage(context.Background(), testCli, tag); err != nil {
			t.Error(err)
		}
	})
	orig, err := os.ReadFile(testBinary)
	if err != nil {
		t.Fatal(err)
	}
	var imageIDs []string
	for i := range 2 {
		// Bytes after the ELF image change the file, not the program.
		bin := filepath.Join(t.TempDir(), "tide")
		if err := os.WriteFile(bin, append(slices.Clip(orig), randHex(8)...), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := BuildImage(ctx, testCli, bin, tag); err != nil {
			t.Fatal(err)
		}
		img, err := testCli.ImageInspect(ctx, tag)
		if err != nil {
			t.Fatal(err)
		}
		if img.Config == nil || !slices.Equal(img.Config.Entrypoint, []string{"/tide"}) || img.Config.Labels[LabelManaged] != "true" {
			t.Errorf("image %s: config %+v, want entrypoint /tide and label %s", tag, img.Config, LabelManaged)
		}
		imageIDs = append(imageIDs, img.ID)
		t.Logf("build %d: %s", i, img.ID)
	}
	if imageIDs[0] == imageIDs[1] {
		t.Fatalf("two different binaries gave the same image %s", imageIDs[0])
	}
	if _, err := testCli.ImageInspect(ctx, imageIDs[0]); !cerrdefs.IsNotFound(err) {
		t.Errorf("the replaced image %s is still there (inspect error %v)", imageIDs[0], err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Cluster: "bad name"},
		{Network: "-x"},
		{NamePrefix: "a/b"},
		{Subnet: "10.0.0.0"},
		{Subnet: "10.0.0.1/24"},
		{Subnet: "10.0.0.0/30"},
		{Subnet: "fd00::/64"},
		{NanoCPUs: -1},
		{Memory: 1 << 10},
		{Restart: "sometimes"},
		{Restart: "always"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted a bad config", cfg)
		}
	}
}

func TestLaunchRejectsBadSpecs(t *testing.T) {
	cfg := Config{}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	p := &Provisioner{cfg: cfg} // no engine: Launch must fail before using it
	for _, s := range []provision.Spec{
		{Name: "has space"},
		{Name: "ok", Token: "12x"},
		{Name: "ok", Token: "4294967296"},
		{Name: "ok", Capacity: -1},
		{Name: "ok", Replicas: -2},
	} {
		if _, err := p.Launch(context.Background(), s); err == nil {
			t.Errorf("Launch(%+v) succeeded", s)
		}
	}
}

func TestNodeArgs(t *testing.T) {
	p := &Provisioner{cfg: Config{Capacity: 1 << 20, Replicas: 2, Extra: []string{"--tick", "2s"}}}
	got := p.nodeArgs(provision.Spec{Join: "10.0.0.2:5057", Token: "7", Extra: []string{"--tick", "3s"}}, "10.0.0.3")
	want := []string{"node", "--chord-addr", "0.0.0.0:5057", "--http-addr", "0.0.0.0:5058", "--advertise", "10.0.0.3",
		"--data-dir", "/data", "--insecure", "--join", "10.0.0.2:5057", "--token", "7", "--capacity", "1048576", "--replicas", "2",
		"--tick", "2s", "--tick", "3s"}
	if !slices.Equal(got, want) {
		t.Errorf("args %q\nwant %q", got, want)
	}
	got = p.nodeArgs(provision.Spec{Capacity: 5, Replicas: 1}, "h")
	if s := strings.Join(got, " "); !strings.Contains(s, "--capacity 5") || !strings.Contains(s, "--replicas 1") || strings.Contains(s, "--join") {
		t.Errorf("spec values do not override the config's: %q", s)
	}
	// With TLS files the node takes mutual TLS only: no --insecure.
	p.cfg.Extra = []string{"--tls-ca", "/tls/ca.crt", "--tls-cert", "/tls/role.crt", "--tls-key", "/tls/role.key"}
	if got := p.nodeArgs(provision.Spec{}, "h"); slices.Contains(got, "--insecure") {
		t.Errorf("a node with --tls-* is started --insecure: %q", got)
	}
}

func TestStateOf(t *testing.T) {
	for s, want := range map[container.ContainerState]string{
		container.StateCreated:    provision.StatePending,
		container.StateRunning:    provision.StateRunning,
		container.StateRestarting: provision.StatePending,
		container.StateExited:     provision.StateTerminated,
		container.StateDead:       provision.StateTerminated,
		container.StateRemoving:   provision.StateTerminated,
	} {
		if got := stateOf(s); got != want {
			t.Errorf("stateOf(%s) = %s, want %s", s, got, want)
		}
	}
}

func TestPool(t *testing.T) {
	sub := netip.MustParsePrefix("10.9.8.0/24")
	pl, err := poolFor([]network.IPAMConfig{{Subnet: sub, IPRange: upperHalf(sub), Gateway: netip.MustParseAddr("10.9.8.1")}})
	if err != nil {
		t.Fatal(err)
	}
	var usable []netip.Addr
	for a := sub.Addr(); sub.Contains(a); a = a.Next() {
		if pl.usable(a) {
			usable = append(usable, a)
		}
	}
	if len(usable) != 126 || usable[0].String() != "10.9.8.2" || usable[len(usable)-1].String() != "10.9.8.127" {
		t.Errorf("usable addresses: %d from %v to %v, want 126 from 10.9.8.2 to 10.9.8.127", len(usable), usable[0], usable[len(usable)-1])
	}
	if _, err := poolFor([]network.IPAMConfig{{Subnet: netip.MustParsePrefix("fd00::/64")}}); err == nil {
		t.Error("poolFor accepted a network without an IPv4 subnet")
	}
}

// TestCheckStatic builds one small program twice, with and without cgo,
// and expects CheckStatic to reject only the cgo build.
func TestCheckStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not compiling")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no C compiler for the cgo build")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n\ngo 1.21\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "cgo.go"), []byte("//go:build cgo\n\npackage main\n\n// int one(void) { return 1; }\nimport \"C\"\n\nfunc main() { println(C.one()) }\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "nocgo.go"), []byte("//go:build !cgo\n\npackage main\n\nfunc main() { println(1) }\n"), 0o644)
	build := func(cgo, out string) string {
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOFLAGS=")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("CGO_ENABLED=%s go build: %v\n%s", cgo, err, b)
		}
		return filepath.Join(dir, out)
	}
	if err := CheckStatic(build("0", "static")); err != nil {
		t.Errorf("pure Go build rejected: %v", err)
	}
	if err := CheckStatic(build("1", "dynamic")); err == nil {
		t.Error("cgo build accepted as static")
	} else {
		t.Log(err)
	}
	if err := CheckStatic(filepath.Join(dir, "go.mod")); err == nil {
		t.Error("a text file accepted as static")
	}
}

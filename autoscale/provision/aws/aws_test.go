package aws

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"tide/autoscale/provision"
)

// drainLog is a Drain func that records its calls (moto's instances run
// nothing).
type drainLog struct {
	mu    sync.Mutex
	calls []provision.Instance
}

func (d *drainLog) drain(ctx context.Context, in provision.Instance) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, in)
	return nil
}

func (d *drainLog) get() []provision.Instance {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// countingAS counts the calls that change the group.
type countingAS struct {
	AutoScalingAPI
	mu        sync.Mutex
	terminate []string
	complete  []autoscaling.CompleteLifecycleActionInput
	desired   []int32
}

func (c *countingAS) TerminateInstanceInAutoScalingGroup(ctx context.Context, in *autoscaling.TerminateInstanceInAutoScalingGroupInput, o ...func(*autoscaling.Options)) (*autoscaling.TerminateInstanceInAutoScalingGroupOutput, error) {
	c.mu.Lock()
	c.terminate = append(c.terminate, *in.InstanceId)
	c.mu.Unlock()
	return c.AutoScalingAPI.TerminateInstanceInAutoScalingGroup(ctx, in, o...)
}

func (c *countingAS) CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput, o ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	c.mu.Lock()
	c.complete = append(c.complete, *in)
	c.mu.Unlock()
	return c.AutoScalingAPI.CompleteLifecycleAction(ctx, in, o...)
}

func (c *countingAS) SetDesiredCapacity(ctx context.Context, in *autoscaling.SetDesiredCapacityInput, o ...func(*autoscaling.Options)) (*autoscaling.SetDesiredCapacityOutput, error) {
	c.mu.Lock()
	c.desired = append(c.desired, *in.DesiredCapacity)
	c.mu.Unlock()
	return c.AutoScalingAPI.SetDesiredCapacity(ctx, in, o...)
}

func (c *countingAS) counts() (terminate, complete, desired int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.terminate), len(c.complete), len(c.desired)
}

// motoGroup creates group name on moto with EnsureGroup.
func motoGroup(t *testing.T, as *autoscaling.Client, ec *ec2.Client, name string, min, desired, max int32) {
	t.Helper()
	ensureMotoGroup(t, as, ec, name, min, desired, max, mustUserData(t, UserDataOptions{Group: name, Region: "us-east-1", BinaryURL: "https://example.invalid/tide"}))
}

func ensureMotoGroup(t *testing.T, as *autoscaling.Client, ec *ec2.Client, name string, min, desired, max int32, ud string) {
	t.Helper()
	lt, err := EnsureGroup(context.Background(), Clients{as, ec}, GroupOptions{
		Group: name, ImageID: motoImage(t, ec), AvailabilityZones: []string{"us-east-1a"},
		MinSize: min, DesiredCapacity: desired, MaxSize: max, UserData: ud,
	})
	if err != nil {
		t.Fatalf("EnsureGroup: %v", err)
	}
	if lt != name+"-tide" {
		t.Fatalf("EnsureGroup returned launch template %q", lt)
	}
}

func newMotoProvisioner(t *testing.T, as AutoScalingAPI, ec EC2API, group string, d *drainLog) *Provisioner {
	t.Helper()
	cfg := Config{
		Group: group, Clients: Clients{as, ec}, LifecycleHook: DefaultLifecycleHook,
		PollInterval: 50 * time.Millisecond, LaunchTimeout: 30 * time.Second, HookTimeout: 10 * time.Second,
	}
	if d != nil {
		cfg.Drain = d.drain
	}
	p, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ips(ins []provision.Instance) map[string]string {
	m := map[string]string{}
	for _, in := range ins {
		m[in.ID] = in.HTTPAddr
	}
	return m
}

// TestMotoGroup runs the provisioner through a group's life on moto:
// create, launch, list, peers, drain and terminate a chosen instance,
// terminate it again, launch past MaxSize, terminate below MinSize.
func TestMotoGroup(t *testing.T) {
	url := startMoto(t)
	as, ec := motoClients(t, url)
	ctx := context.Background()
	const group = "tide-test"
	motoGroup(t, as, ec, group, 1, 2, 3)

	hooks, err := as.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: sdkaws.String(group)})
	if err != nil {
		t.Fatal(err)
	}
	if len(hooks.LifecycleHooks) != 1 || *hooks.LifecycleHooks[0].LifecycleHookName != DefaultLifecycleHook ||
		*hooks.LifecycleHooks[0].LifecycleTransition != "autoscaling:EC2_INSTANCE_TERMINATING" ||
		*hooks.LifecycleHooks[0].DefaultResult != "CONTINUE" {
		t.Fatalf("lifecycle hooks: %+v", hooks.LifecycleHooks)
	}

	vs, err := ec.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateName: sdkaws.String(group + "-tide")})
	if err != nil || len(vs.LaunchTemplateVersions) != 1 {
		t.Fatalf("launch template versions: %+v, %v", vs, err)
	}
	ud, err := base64.StdEncoding.DecodeString(sdkaws.ToString(vs.LaunchTemplateVersions[0].LaunchTemplateData.UserData))
	if err != nil || string(ud) != mustUserData(t, UserDataOptions{Group: group, Region: "us-east-1", BinaryURL: "https://example.invalid/tide"}) {
		t.Fatalf("launch template user data %q, %v", ud, err)
	}

	cas := &countingAS{AutoScalingAPI: as}
	drains := &drainLog{}
	p := newMotoProvisioner(t, cas, ec, group, drains)

	before, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 2 {
		t.Fatalf("List of a group of desired 2: %+v", before)
	}

	in, err := p.Launch(ctx, provision.Spec{Name: "node-3"})
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	if _, old := ips(before)[in.ID]; old || in.ID == "" {
		t.Fatalf("Launch returned %q, not a new instance (before: %v)", in.ID, ips(before))
	}
	v := viewGroup(t, as, group)
	if v.Desired != 3 || len(v.inService()) != 3 {
		t.Fatalf("after Launch: desired %d, in service %v", v.Desired, v.inService())
	}
	if _, ok := v.States[in.ID]; !ok {
		t.Fatalf("launched %s is not in the group: %v", in.ID, v.States)
	}
	e := ec2View(t, ec, in.ID)[in.ID]
	wantIP := sdkaws.ToString(e.PrivateIpAddress)
	if wantIP == "" || in.HTTPAddr != wantIP+":5058" || in.ChordAddr != wantIP+":5057" {
		t.Fatalf("launched instance %+v; EC2 private IP %q", in, wantIP)
	}

	list, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("List after Launch: %+v", list)
	}
	seenIP := map[string]bool{}
	ec2s := ec2View(t, ec, v.inService()...)
	var wantPeers []string
	for _, l := range list {
		ip := sdkaws.ToString(ec2s[l.ID].PrivateIpAddress)
		if l.State != provision.StateRunning || ip == "" || l.HTTPAddr != ip+":5058" || l.ChordAddr != ip+":5057" {
			t.Fatalf("List entry %+v; EC2 private IP %q", l, ip)
		}
		if seenIP[ip] {
			t.Fatalf("two instances with private IP %s: %+v", ip, list)
		}
		seenIP[ip] = true
		if !l.Started.Equal(sdkaws.ToTime(ec2s[l.ID].LaunchTime)) {
			t.Fatalf("List entry %s started %v, EC2 says %v", l.ID, l.Started, ec2s[l.ID].LaunchTime)
		}
		wantPeers = append(wantPeers, ip+":5057")
	}
	peers, err := p.Peers(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Clone(peers)
	sort.Strings(got)
	sort.Strings(wantPeers)
	if !slices.Equal(got, wantPeers) {
		t.Fatalf("Peers = %v, want %v", peers, wantPeers)
	}
	// Oldest first, the same order List uses.
	for i := 1; i < len(list); i++ {
		a, b := list[i-1], list[i]
		if a.Started.After(b.Started) || (a.Started.Equal(b.Started) && a.ID > b.ID) {
			t.Fatalf("List not ordered by launch time, then ID: %+v", list)
		}
	}
	for i := range list {
		if peers[i] != list[i].ChordAddr {
			t.Fatalf("Peers %v not in List's order %+v", peers, list)
		}
	}
	// Narrowed: leave one out by IP and one by ID.
	narrowed, err := p.FindPeers(ctx, group, PeerOptions{ExcludeID: list[0].ID, ExcludeIP: strings.TrimSuffix(list[2].ChordAddr, ":5057")})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(narrowed, []string{list[1].ChordAddr}) {
		t.Fatalf("FindPeers excluding %s and %s = %v", list[0].ID, list[2].ChordAddr, narrowed)
	}

	// Drain and terminate the middle instance, which no default
	// termination policy would pick: the group must lose exactly it.
	chosen := list[1]
	if err := p.Drain(ctx, chosen); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if d := drains.get(); len(d) != 1 || d[0].ID != chosen.ID || d[0].HTTPAddr != chosen.HTTPAddr {
		t.Fatalf("drain calls %+v, want one for %+v", d, chosen)
	}
	if err := p.Terminate(ctx, chosen); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	v = viewGroup(t, as, group)
	if v.Desired != 2 {
		t.Fatalf("desired after Terminate: %d, want 2", v.Desired)
	}
	if st, ok := v.States[chosen.ID]; ok && st == "InService" {
		t.Fatalf("terminated %s is still InService", chosen.ID)
	}
	wantLeft := []string{list[0].ID, list[2].ID}
	sort.Strings(wantLeft)
	if !slices.Equal(v.inService(), wantLeft) {
		t.Fatalf("in service after Terminate: %v, want %v", v.inService(), wantLeft)
	}
	if s := ec2View(t, ec, chosen.ID)[chosen.ID].State; s == nil || (s.Name != ec2types.InstanceStateNameTerminated && s.Name != ec2types.InstanceStateNameShuttingDown) {
		t.Fatalf("EC2 state of the terminated instance: %+v", s)
	}
	// moto takes the instance out of the group at once (it does not model
	// Terminating:Wait), so no lifecycle action was pending to complete.
	terms, completes, _ := cas.counts()
	if terms != 1 || completes != 0 {
		t.Fatalf("TerminateInstanceInAutoScalingGroup calls %d, CompleteLifecycleAction calls %d; want 1, 0", terms, completes)
	}

	// Again: succeeds and changes nothing.
	if err := p.Terminate(ctx, chosen); err != nil {
		t.Fatalf("second Terminate: %v", err)
	}
	if err := p.Drain(ctx, chosen); err != nil {
		t.Fatalf("Drain of a terminated instance: %v", err)
	}
	if terms, _, _ := cas.counts(); terms != 1 {
		t.Fatalf("second Terminate called TerminateInstanceInAutoScalingGroup again")
	}
	if len(drains.get()) != 1 {
		t.Fatalf("Drain of a terminated instance drained it: %+v", drains.get())
	}
	if v2 := viewGroup(t, as, group); v2.Desired != 2 || !slices.Equal(v2.inService(), wantLeft) {
		t.Fatalf("second Terminate changed the group: desired %d, in service %v", v2.Desired, v2.inService())
	}
	list, err = p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list {
		if l.ID == chosen.ID && l.State != provision.StateTerminated {
			t.Fatalf("List shows the terminated instance as %s", l.State)
		}
	}

	// Up to MaxSize 3, then a clear error that changes nothing.
	if _, err := p.Launch(ctx, provision.Spec{}); err != nil {
		t.Fatalf("Launch to MaxSize: %v", err)
	}
	_, _, setsBefore := cas.counts()
	_, err = p.Launch(ctx, provision.Spec{})
	if !errors.Is(err, ErrAtMaxSize) || !strings.Contains(err.Error(), "MaxSize 3") {
		t.Fatalf("Launch past MaxSize: %v", err)
	}
	if _, _, sets := cas.counts(); sets != setsBefore {
		t.Fatal("Launch past MaxSize set the desired capacity")
	}
	if v := viewGroup(t, as, group); v.Desired != 3 || len(v.inService()) != 3 {
		t.Fatalf("after Launch past MaxSize: desired %d, in service %v", v.Desired, v.inService())
	}

	// Down to MinSize, then a clear error that changes nothing.
	if _, err := as.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: sdkaws.String(group), MinSize: sdkaws.Int32(3)}); err != nil {
		t.Fatal(err)
	}
	victim := viewGroup(t, as, group).inService()[0]
	err = p.Terminate(ctx, provision.Instance{ID: victim})
	if !errors.Is(err, ErrAtMinSize) || !strings.Contains(err.Error(), "MinSize 3") {
		t.Fatalf("Terminate below MinSize: %v", err)
	}
	if v := viewGroup(t, as, group); v.States[victim] != "InService" || v.Desired != 3 {
		t.Fatalf("Terminate below MinSize changed the group: %+v", v)
	}

	// An instance of another group is not ours to terminate.
	motoGroup(t, as, ec, "other", 0, 1, 1)
	otherID := viewGroup(t, as, "other").inService()[0]
	err = p.Terminate(ctx, provision.Instance{ID: otherID})
	if !errors.Is(err, provision.ErrNotFound) {
		t.Fatalf("Terminate of another group's instance: %v", err)
	}
	if viewGroup(t, as, "other").States[otherID] != "InService" {
		t.Fatal("Terminate touched another group's instance")
	}
}

// hookSim plays, on top of moto, what AWS does with a termination
// lifecycle hook and moto does not model: a terminated instance waits in
// Terminating:Wait until CompleteLifecycleAction; moto answers
// CompleteLifecycleAction with a 500 (not implemented). The simulation
// keeps such instances in the group (the desired capacity already
// lowered) and terminates them in moto on completion.
type hookSim struct {
	AutoScalingAPI
	group, hook string
	mu          sync.Mutex
	waiting     map[string]bool
	terminates  []string
	completes   []autoscaling.CompleteLifecycleActionInput
}

// scaleIn is the group choosing to terminate id itself.
func (h *hookSim) scaleIn(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waiting[id] = true
}

func (h *hookSim) TerminateInstanceInAutoScalingGroup(ctx context.Context, in *autoscaling.TerminateInstanceInAutoScalingGroupInput, o ...func(*autoscaling.Options)) (*autoscaling.TerminateInstanceInAutoScalingGroupOutput, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.terminates = append(h.terminates, *in.InstanceId)
	if !*in.ShouldDecrementDesiredCapacity {
		return nil, fmt.Errorf("hookSim: only ShouldDecrementDesiredCapacity=true is simulated")
	}
	h.waiting[*in.InstanceId] = true
	return &autoscaling.TerminateInstanceInAutoScalingGroupOutput{}, nil
}

func (h *hookSim) CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput, o ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.completes = append(h.completes, *in)
	id := sdkaws.ToString(in.InstanceId)
	if sdkaws.ToString(in.AutoScalingGroupName) != h.group || sdkaws.ToString(in.LifecycleHookName) != h.hook || !h.waiting[id] {
		return nil, fmt.Errorf("ValidationError: No active Lifecycle Action found with instance ID %s", id)
	}
	if r := sdkaws.ToString(in.LifecycleActionResult); r != "CONTINUE" && r != "ABANDON" {
		return nil, fmt.Errorf("ValidationError: bad LifecycleActionResult %q", r)
	}
	delete(h.waiting, id)
	_, err := h.AutoScalingAPI.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: in.InstanceId, ShouldDecrementDesiredCapacity: sdkaws.Bool(true),
	})
	if err != nil {
		return nil, err
	}
	return &autoscaling.CompleteLifecycleActionOutput{}, nil
}

func (h *hookSim) DescribeAutoScalingGroups(ctx context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, o ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error) {
	out, err := h.AutoScalingAPI.DescribeAutoScalingGroups(ctx, in, o...)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for gi := range out.AutoScalingGroups {
		g := &out.AutoScalingGroups[gi]
		for i := range g.Instances {
			if h.waiting[*g.Instances[i].InstanceId] {
				g.Instances[i].LifecycleState = "Terminating:Wait"
				*g.DesiredCapacity--
			}
		}
	}
	return out, nil
}

func (h *hookSim) DescribeAutoScalingInstances(ctx context.Context, in *autoscaling.DescribeAutoScalingInstancesInput, o ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingInstancesOutput, error) {
	out, err := h.AutoScalingAPI.DescribeAutoScalingInstances(ctx, in, o...)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range out.AutoScalingInstances {
		if h.waiting[*out.AutoScalingInstances[i].InstanceId] {
			out.AutoScalingInstances[i].LifecycleState = sdkaws.String("Terminating:Wait")
		}
	}
	return out, nil
}

func (h *hookSim) counts() (terminates, completes int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.terminates), len(h.completes)
}

// TestMotoTerminatingWait covers the termination lifecycle hook, with
// Terminating:Wait simulated over moto (see hookSim): Terminate completes
// the action of the instance it terminated; Drain of an instance the group
// chose to terminate drains it and then completes its action.
func TestMotoTerminatingWait(t *testing.T) {
	url := startMoto(t)
	as, ec := motoClients(t, url)
	ctx := context.Background()
	const group = "tide-hook"
	motoGroup(t, as, ec, group, 0, 3, 4)
	sim := &hookSim{AutoScalingAPI: as, group: group, hook: DefaultLifecycleHook, waiting: map[string]bool{}}
	drains := &drainLog{}
	p := newMotoProvisioner(t, sim, ec, group, drains)
	list, err := p.List(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("List: %+v, %v", list, err)
	}

	// Terminate: terminate call, Terminating:Wait, completed with CONTINUE.
	a := list[0]
	if err := p.Terminate(ctx, a); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	terms, completes := sim.counts()
	if terms != 1 || completes != 1 {
		t.Fatalf("terminate calls %d, complete calls %d; want 1, 1", terms, completes)
	}
	c := sim.completes[0]
	if *c.InstanceId != a.ID || *c.LifecycleHookName != DefaultLifecycleHook || *c.AutoScalingGroupName != group || *c.LifecycleActionResult != "CONTINUE" {
		t.Fatalf("CompleteLifecycleAction %+v", c)
	}
	v := viewGroup(t, as, group)
	if _, ok := v.States[a.ID]; ok || v.Desired != 2 {
		t.Fatalf("after Terminate and completion: %+v", v)
	}
	if err := p.Terminate(ctx, a); err != nil {
		t.Fatalf("Terminate again: %v", err)
	}
	if terms, completes := sim.counts(); terms != 1 || completes != 1 {
		t.Fatalf("Terminate again called the API: terminate %d, complete %d", terms, completes)
	}

	// The group scales in by itself and picks b: List shows b draining,
	// Peers leaves it out, Drain drains it and completes its action.
	b := list[1]
	sim.scaleIn(b.ID)
	list2, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list2 {
		want := provision.StateRunning
		if l.ID == b.ID {
			want = provision.StateDraining
		}
		if l.State != want {
			t.Fatalf("List while %s waits: %+v", b.ID, list2)
		}
	}
	peers, err := p.Peers(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(peers, b.ChordAddr) || len(peers) != 1 {
		t.Fatalf("Peers while %s (%s) waits: %v", b.ID, b.ChordAddr, peers)
	}
	if err := p.Drain(ctx, provision.Instance{ID: b.ID}); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if d := drains.get(); len(d) != 1 || d[0].ID != b.ID || d[0].HTTPAddr != b.HTTPAddr {
		t.Fatalf("drain calls %+v, want one for %+v", d, b)
	}
	if terms, completes := sim.counts(); terms != 1 || completes != 2 || *sim.completes[1].InstanceId != b.ID {
		t.Fatalf("after Drain: terminate %d, complete %d (%+v)", terms, completes, sim.completes)
	}
	if v := viewGroup(t, as, group); len(v.States) != 1 || v.Desired != 1 {
		t.Fatalf("after Drain of a waiting instance: %+v", v)
	}

	// A crash between the group's choice and the drain's end: Terminate of
	// a waiting instance completes the action without terminating again.
	cID := list[2].ID
	sim.scaleIn(cID)
	if err := p.Terminate(ctx, provision.Instance{ID: cID}); err != nil {
		t.Fatalf("Terminate of a waiting instance: %v", err)
	}
	if terms, completes := sim.counts(); terms != 1 || completes != 3 {
		t.Fatalf("Terminate of a waiting instance: terminate %d, complete %d", terms, completes)
	}
	if v := viewGroup(t, as, group); len(v.States) != 0 || v.Desired != 0 {
		t.Fatalf("after the last Terminate: %+v", v)
	}
}

// TestMotoDefaultDrain checks the default Drain (POST /internal/leave to
// the instance's HTTP address): a refused connection counts as drained, an
// error answer or a timeout is an error.
func TestMotoDefaultDrain(t *testing.T) {
	url := startMoto(t)
	as, ec := motoClients(t, url)
	ctx := context.Background()
	const group = "tide-drain"
	motoGroup(t, as, ec, group, 0, 1, 1)
	// Clients made by New itself this time.
	p, err := New(ctx, Config{
		Group: group, Region: "us-east-1", EndpointURL: url,
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		HTTPClient:  &http.Client{Timeout: 500 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	list, err := p.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("List: %+v, %v", list, err)
	}
	in := list[0]

	// Nothing listens: the node is taken to have left.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	in.HTTPAddr = closed
	if err := p.Drain(ctx, in); err != nil {
		t.Fatalf("Drain of a node that refuses connections: %v", err)
	}

	var mu sync.Mutex
	var posts []string
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		posts = append(posts, r.Method+" "+r.URL.Path)
		st := status
		mu.Unlock()
		if st == 0 {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(st)
		fmt.Fprint(w, `{"moved":3}`)
	}))
	defer srv.Close()
	in.HTTPAddr = strings.TrimPrefix(srv.URL, "http://")
	if err := p.Drain(ctx, in); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	mu.Lock()
	if !slices.Equal(posts, []string{"POST /internal/leave"}) {
		t.Fatalf("node saw %v", posts)
	}
	status = http.StatusInternalServerError
	mu.Unlock()
	if err := p.Drain(ctx, in); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Drain of a node answering 500: %v", err)
	}
	mu.Lock()
	status = 0 // never answers
	mu.Unlock()
	if err := p.Drain(ctx, in); err == nil {
		t.Fatal("Drain of a node that never answers succeeded")
	}
}

func TestNewValidation(t *testing.T) {
	ctx := context.Background()
	fake := Clients{AutoScaling: &countingAS{}, EC2: &ec2.Client{}}
	if _, err := New(ctx, Config{Clients: fake}); err == nil || !strings.Contains(err.Error(), "Group") {
		t.Fatalf("New without a group: %v", err)
	}
	if _, err := New(ctx, Config{Group: "g", Clients: fake, HTTPPort: 70000}); err == nil || !strings.Contains(err.Error(), "HTTPPort") {
		t.Fatalf("New with a bad port: %v", err)
	}
	p, err := New(ctx, Config{Group: "g", Clients: fake})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "aws" {
		t.Fatal(p.Name())
	}
	if err := p.Terminate(ctx, provision.Instance{}); err == nil {
		t.Fatal("Terminate without an ID succeeded")
	}
	if err := p.Drain(ctx, provision.Instance{}); err == nil {
		t.Fatal("Drain without an ID succeeded")
	}
	for _, o := range []GroupOptions{
		{ImageID: "ami-1", AvailabilityZones: []string{"a"}, MaxSize: 1},
		{Group: "g", AvailabilityZones: []string{"a"}, MaxSize: 1},
		{Group: "g", ImageID: "ami-1", MaxSize: 1},
		{Group: "g", ImageID: "ami-1", AvailabilityZones: []string{"a"}, MaxSize: 0},
		{Group: "g", ImageID: "ami-1", AvailabilityZones: []string{"a"}, MinSize: 2, DesiredCapacity: 1, MaxSize: 3},
		{Group: "g", ImageID: "ami-1", AvailabilityZones: []string{"a"}, DesiredCapacity: 4, MaxSize: 3},
		{Group: "g", ImageID: "ami-1", AvailabilityZones: []string{"a"}, MaxSize: 1, HookTimeout: time.Second},
	} {
		if _, err := EnsureGroup(ctx, fake, o); err == nil {
			t.Errorf("EnsureGroup(%+v) succeeded", o)
		}
	}
}

// TestMotoEnsureGroupAgain: EnsureGroup on an existing group adds a
// launch template version and updates the group's bounds, keeping its
// desired capacity within them.
func TestMotoEnsureGroupAgain(t *testing.T) {
	url := startMoto(t)
	as, ec := motoClients(t, url)
	ctx := context.Background()
	motoGroup(t, as, ec, "again", 0, 1, 2)
	before := viewGroup(t, as, "again").inService()
	// Without user data this time: moto's CreateLaunchTemplateVersion keeps
	// UserData undecoded, and launching from such a version fails inside
	// moto (an assertion, answered with a 500).
	ensureMotoGroup(t, as, ec, "again", 2, 4, 5, "")
	v := viewGroup(t, as, "again")
	if v.Min != 2 || v.Max != 5 || v.Desired != 2 || len(v.inService()) != 2 {
		t.Fatalf("group after the second EnsureGroup (min 2, max 5; desired was 1): %+v", v)
	}
	if !slices.Contains(v.inService(), before[0]) {
		t.Fatalf("the second EnsureGroup replaced the group's instances: %v, then %v", before, v.inService())
	}
	vs, err := ec.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateName: sdkaws.String("again-tide")})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.LaunchTemplateVersions) != 2 {
		t.Fatalf("launch template versions: %d, want 2", len(vs.LaunchTemplateVersions))
	}
	hooks, err := as.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: sdkaws.String("again")})
	if err != nil || len(hooks.LifecycleHooks) != 1 {
		t.Fatalf("hooks: %+v, %v", hooks, err)
	}
}

// TestHealthyPeers: FindPeers' health filter keeps, in order, the nodes
// answering /healthz with 200.
func TestHealthyPeers(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	defer ok.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	ins := []provision.Instance{
		{ID: "a", HTTPAddr: host(sick), ChordAddr: "a:1"},
		{ID: "b", HTTPAddr: host(ok), ChordAddr: "b:1"},
		{ID: "c", HTTPAddr: closed, ChordAddr: "c:1"},
		{ID: "d", HTTPAddr: host(ok), ChordAddr: "d:1"},
	}
	got := healthy(context.Background(), ins, 2*time.Second)
	if len(got) != 2 || got[0].ID != "b" || got[1].ID != "d" {
		t.Fatalf("healthy = %+v", got)
	}
}

// TestMotoAWSPeersCommand runs `tide aws-peers` against moto.
func TestMotoAWSPeersCommand(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build tide with")
	}
	url := startMoto(t)
	as, ec := motoClients(t, url)
	ctx := context.Background()
	const group = "tide-peers"
	motoGroup(t, as, ec, group, 0, 3, 3)

	bin := filepath.Join(t.TempDir(), "tide")
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(bctx, goBin, "build", "-o", bin, "tide/cmd/tide")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // shares the compile of `make build`
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build tide: %v\n%s", err, out)
	}
	home := t.TempDir()
	tide := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"),
			"AWS_ACCESS_KEY_ID=testing", "AWS_SECRET_ACCESS_KEY=testing", "AWS_EC2_METADATA_DISABLED=true"}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			return stderr.String(), err
		}
		return stdout.String(), nil
	}
	if out, err := tide("aws-peers", "--help"); err != nil {
		if strings.Contains(out, "unknown command") {
			t.Skip("tide aws-peers is not registered in cmd/tide/main.go (NewAWSPeersCmd)")
		}
		t.Fatalf("tide aws-peers --help: %v\n%s", err, out)
	}

	p := newMotoProvisioner(t, as, ec, group, nil)
	want, err := p.Peers(ctx, group)
	if err != nil || len(want) != 3 {
		t.Fatalf("Peers: %v, %v", want, err)
	}
	base := []string{"aws-peers", "--group", group, "--region", "us-east-1", "--endpoint-url", url}
	out, err := tide(base...)
	if err != nil {
		t.Fatalf("tide aws-peers: %v\n%s", err, out)
	}
	if got := strings.Fields(out); !slices.Equal(got, want) || out != strings.Join(want, "\n")+"\n" {
		t.Fatalf("tide aws-peers printed %q, want %q one per line", out, want)
	}
	self := strings.TrimSuffix(want[0], ":5057")
	out, err = tide(append(base, "--exclude-self", "--self-ip", self)...)
	if err != nil {
		t.Fatalf("tide aws-peers --exclude-self: %v\n%s", err, out)
	}
	if got := strings.Fields(out); !slices.Equal(got, want[1:]) {
		t.Fatalf("tide aws-peers --exclude-self --self-ip %s printed %q, want %q", self, got, want[1:])
	}
	out, err = tide(append(base, "--chord-port", "7000")...)
	if err != nil || !strings.HasSuffix(strings.Fields(out)[0], ":7000") {
		t.Fatalf("tide aws-peers --chord-port 7000: %v\n%s", err, out)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"aws-peers", "--region", "us-east-1", "--endpoint-url", url}, "--group"},
		{append(slices.Clone(base), "--self-ip", "not-an-ip"), "not an IP"},
		{[]string{"aws-peers", "--group", "nope", "--region", "us-east-1", "--endpoint-url", url}, "no auto scaling group"},
	} {
		out, err := tide(bad.args...)
		if err == nil || !strings.Contains(out, bad.want) {
			t.Fatalf("tide %q: %v, %q; want an error mentioning %q", bad.args, err, out, bad.want)
		}
	}
}

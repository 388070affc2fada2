package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"tide/autoscale/provision"
)

const ns = "tide"

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// stsCluster is a namespace with a seed StatefulSet (tide-seed, one pod)
// and the autoscaled StatefulSet tide with the given replicas, both
// governed by the headless service tide and labelled
// app.kubernetes.io/name=tide, as in deploy/kubernetes.
func stsCluster(t *testing.T, replicas int32) (*cluster, *Provisioner) {
	t.Helper()
	seed := statefulSet(ns, "tide-seed", "tide", 1)
	seed.Spec.Selector.MatchLabels = map[string]string{testLabel: "tide", "tide/role": "seed"}
	seed.Spec.Template.Labels = seed.Spec.Selector.MatchLabels
	c := newCluster(t, ns, seed, statefulSet(ns, "tide", "tide", replicas))
	p, err := New(Config{Namespace: ns, Name: "tide", Selector: testLabel + "=tide", Client: c.cs, Drain: c.drainFunc, PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

func find(list []provision.Instance, id string) (provision.Instance, bool) {
	for _, in := range list {
		if in.ID == id {
			return in, true
		}
	}
	return provision.Instance{}, false
}

func ids(list []provision.Instance) []string {
	var out []string
	for _, in := range list {
		out = append(out, in.ID)
	}
	return out
}

// podAddr is the address the drain of a pod must go to: its IP and the
// HTTP port.
func podAddr(t *testing.T, c *cluster, name string, port int) string {
	t.Helper()
	po, ok := c.pod(name)
	if !ok {
		t.Fatalf("no pod %s", name)
	}
	if po.Status.PodIP == "" {
		t.Fatalf("pod %s has no IP", name)
	}
	return net.JoinHostPort(po.Status.PodIP, strconv.Itoa(port))
}

// TestStatefulSetLifecycle runs Launch -> List -> Victim -> Drain ->
// Terminate against the fake cluster and checks the replicas and which pod
// was drained at every step.
func TestStatefulSetLifecycle(t *testing.T) {
	ctx := testCtx(t)
	const initial = 2
	c, p := stsCluster(t, initial)

	list, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != initial+1 {
		t.Fatalf("List = %v, want the seed and %d members", ids(list), initial)
	}
	for _, in := range list {
		if in.State != provision.StateRunning {
			t.Errorf("%s: state %q, want running", in.ID, in.State)
		}
		fqdn := in.ID + ".tide." + ns + ".svc"
		if in.HTTPAddr != net.JoinHostPort(fqdn, "5058") || in.ChordAddr != net.JoinHostPort(fqdn, "5057") {
			t.Errorf("%s: addresses %s, %s; want %s on ports 5058 and 5057", in.ID, in.HTTPAddr, in.ChordAddr, fqdn)
		}
	}

	// Two launches: the pods appear with the next ordinals.
	var launched []provision.Instance
	for i := 0; i < 2; i++ {
		in, err := p.Launch(ctx, provision.Spec{Name: "ignored", Join: "ignored:5057"})
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("tide-%d", initial+i)
		if in.ID != want {
			t.Errorf("launch %d: ID %s, want %s", i, in.ID, want)
		}
		if got := c.replicas("statefulsets", "tide"); got != int32(initial+i+1) {
			t.Errorf("after launch %d: replicas %d, want %d", i, got, initial+i+1)
		}
		if in.State != provision.StatePending {
			t.Errorf("launch %d: state %q, want pending", i, in.State)
		}
		launched = append(launched, in)
	}
	list, err = p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range launched {
		got, ok := find(list, in.ID)
		if !ok {
			t.Fatalf("launched %s not listed: %v", in.ID, ids(list))
		}
		if got.HTTPAddr != in.HTTPAddr || got.ChordAddr != in.ChordAddr {
			t.Errorf("%s: Launch said %s/%s, List says %s/%s", in.ID, in.HTTPAddr, in.ChordAddr, got.HTTPAddr, got.ChordAddr)
		}
	}
	if _, ok := find(list, "tide-seed-0"); !ok {
		t.Errorf("the seed pod is not listed: %v", ids(list))
	}

	total := int32(initial + len(launched))
	victim, err := p.Victim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	highest := fmt.Sprintf("tide-%d", total-1)
	if victim.ID != highest {
		t.Fatalf("Victim = %s, want the highest ordinal %s", victim.ID, highest)
	}

	// Neither a lower ordinal nor the seed may be drained or terminated.
	for _, id := range []string{"tide-0", fmt.Sprintf("tide-%d", total-2), "tide-seed-0"} {
		if err := p.Drain(ctx, provision.Instance{ID: id}); !errors.Is(err, ErrNotRemovable) {
			t.Errorf("Drain(%s) = %v, want ErrNotRemovable", id, err)
		}
		if err := p.Terminate(ctx, provision.Instance{ID: id}); !errors.Is(err, ErrNotRemovable) {
			t.Errorf("Terminate(%s) = %v, want ErrNotRemovable", id, err)
		}
	}
	if d := c.drainedAddrs(); len(d) != 0 {
		t.Fatalf("refused drains still drained %v", d)
	}
	if got := c.replicas("statefulsets", "tide"); got != total {
		t.Fatalf("refused terminations changed replicas to %d, want %d", got, total)
	}

	wantAddr := podAddr(t, c, victim.ID, 5058)
	if err := p.Drain(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if d := c.drainedAddrs(); len(d) != 1 || d[0] != wantAddr {
		t.Fatalf("drained %v, want just %s (pod %s)", d, wantAddr, victim.ID)
	}
	list, _ = p.List(ctx)
	if in, _ := find(list, victim.ID); in.State != provision.StateDraining {
		t.Errorf("after Drain, %s is %q, want draining", victim.ID, in.State)
	}

	if err := p.Terminate(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if got := c.replicas("statefulsets", "tide"); got != total-1 {
		t.Fatalf("after Terminate: replicas %d, want %d", got, total-1)
	}
	if _, ok := c.pod(victim.ID); ok {
		t.Errorf("pod %s still exists", victim.ID)
	}
	list, _ = p.List(ctx)
	if _, ok := find(list, victim.ID); ok {
		t.Errorf("List still has %s: %v", victim.ID, ids(list))
	}

	// Repeating both, as a controller that crashed would, changes nothing.
	if err := p.Drain(ctx, victim); err != nil {
		t.Errorf("second Drain: %v", err)
	}
	if err := p.Terminate(ctx, victim); err != nil {
		t.Errorf("second Terminate: %v", err)
	}
	if got := c.replicas("statefulsets", "tide"); got != total-1 {
		t.Errorf("after a second Terminate: replicas %d, want %d", got, total-1)
	}
	if d := c.drainedAddrs(); len(d) != 1 {
		t.Errorf("a second Drain of a gone pod drained again: %v", d)
	}

	next, err := p.Victim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("tide-%d", total-2); next.ID != want {
		t.Errorf("next Victim = %s, want %s", next.ID, want)
	}
}

// TestTerminateAfterCrash: the controller lowered the replicas and crashed
// before recording it; the pod is still terminating, or already gone.
// Terminate must not lower the replicas a second time.
func TestTerminateAfterCrash(t *testing.T) {
	for _, graceful := range []bool{true, false} {
		t.Run(fmt.Sprintf("terminating=%v", graceful), func(t *testing.T) {
			ctx := testCtx(t)
			const initial = 4
			c, p := stsCluster(t, initial)
			c.graceful = graceful
			victim, err := p.Victim(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Drain(ctx, victim); err != nil {
				t.Fatal(err)
			}
			c.setReplicas("statefulsets", "tide", initial-1)
			_, exists := c.pod(victim.ID)
			if exists != graceful {
				t.Fatalf("pod %s exists=%v, the simulation wanted %v", victim.ID, exists, graceful)
			}
			if graceful {
				list, _ := p.List(ctx)
				if in, _ := find(list, victim.ID); in.State != provision.StateTerminated {
					t.Errorf("terminating pod %s is %q, want terminated", victim.ID, in.State)
				}
			}
			if err := p.Terminate(ctx, victim); err != nil {
				t.Fatal(err)
			}
			if got := c.replicas("statefulsets", "tide"); got != initial-1 {
				t.Errorf("replicas %d, want %d", got, initial-1)
			}
		})
	}
}

// TestDefaultDrainCallsTheNode checks that without an injected Drain the
// provisioner POSTs /internal/leave to the pod's IP on the HTTP port.
func TestDefaultDrainCallsTheNode(t *testing.T) {
	ctx := testCtx(t)
	var mu sync.Mutex
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.Method+" "+r.URL.Path)
		mu.Unlock()
		fmt.Fprint(w, `{"moved":7}`)
	}))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	httpPort, _ := strconv.Atoi(port)

	c := newClusterWithIP(t, host, statefulSet(ns, "tide", "tide", 2))
	p, err := New(Config{Namespace: ns, Name: "tide", Client: c.cs, HTTPPort: httpPort})
	if err != nil {
		t.Fatal(err)
	}
	victim, err := p.Victim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Drain(ctx, victim); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := append([]string(nil), calls...)
	mu.Unlock()
	if len(got) != 1 || got[0] != "POST /internal/leave" {
		t.Fatalf("the node saw %v, want one POST /internal/leave", got)
	}
	if err := p.Terminate(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if r := c.replicas("statefulsets", "tide"); r != 1 {
		t.Errorf("replicas %d, want 1", r)
	}
}

func newClusterWithIP(t *testing.T, ip string, objs ...runtime.Object) *cluster {
	// Pods must have their IP before the workload's initial pods are made.
	c := newCluster(t, ns)
	c.podIP = ip
	for _, o := range objs {
		if err := c.cs.Tracker().Add(o); err != nil {
			t.Fatal(err)
		}
		switch w := o.(type) {
		case *appsv1.StatefulSet:
			c.reconcile("statefulsets", ns, w.Name)
		case *appsv1.Deployment:
			c.reconcile("deployments", ns, w.Name)
		}
	}
	return c
}

// TestOrdinalsStart: a StatefulSet numbered from spec.ordinals.start.
func TestOrdinalsStart(t *testing.T) {
	ctx := testCtx(t)
	sts := statefulSet(ns, "tide", "tide", 2)
	const start = 5
	sts.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: start}
	c := newCluster(t, ns, sts)
	p, err := New(Config{Namespace: ns, Name: "tide", Client: c.cs, Drain: c.drainFunc})
	if err != nil {
		t.Fatal(err)
	}
	in, err := p.Launch(ctx, provision.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("tide-%d", start+2); in.ID != want {
		t.Errorf("Launch = %s, want %s", in.ID, want)
	}
	if _, ok := c.pod(in.ID); !ok {
		t.Errorf("no pod %s after Launch; pods %v", in.ID, podNames(c.pods()))
	}
	v, err := p.Victim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != in.ID {
		t.Errorf("Victim = %s, want %s", v.ID, in.ID)
	}
	if err := p.Terminate(ctx, provision.Instance{ID: fmt.Sprintf("tide-%d", start)}); !errors.Is(err, ErrNotRemovable) {
		t.Errorf("Terminate(lowest) = %v, want ErrNotRemovable", err)
	}
	if err := p.Terminate(ctx, provision.Instance{ID: fmt.Sprintf("tide-%d", start-1)}); !errors.Is(err, ErrNotRemovable) {
		t.Errorf("Terminate(below start) = %v, want ErrNotRemovable", err)
	}
	if err := p.Terminate(ctx, v); err != nil {
		t.Fatal(err)
	}
	if r := c.replicas("statefulsets", "tide"); r != 2 {
		t.Errorf("replicas %d, want 2", r)
	}
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, po := range pods {
		out = append(out, po.Name)
	}
	return out
}

// TestPodIPAddresses: with no governing service (or UsePodIP) the
// addresses are the pod's IP, and Launch waits until the pod has one.
func TestPodIPAddresses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		service  string
		usePodIP bool
	}{{"no service", "", false}, {"UsePodIP", "tide", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := newCluster(t, ns, statefulSet(ns, "tide", tc.service, 1))
			c.lateIP = true
			p, err := New(Config{Namespace: ns, Name: "tide", Client: c.cs, UsePodIP: tc.usePodIP, PollInterval: time.Millisecond, Drain: c.drainFunc})
			if err != nil {
				t.Fatal(err)
			}
			// The sim gives IPs on listing; Launch of a StatefulSet gets the
			// pod, so list from a helper until the IP shows up.
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
						c.assignLateIPs(ns)
					}
				}
			}()
			t.Cleanup(func() { close(stop); <-done })
			in, err := p.Launch(ctx, provision.Spec{})
			if err != nil {
				t.Fatal(err)
			}
			po, ok := c.pod(in.ID)
			if !ok || po.Status.PodIP == "" {
				t.Fatalf("Launch returned %+v before the pod had an IP", in)
			}
			if want := net.JoinHostPort(po.Status.PodIP, "5058"); in.HTTPAddr != want {
				t.Errorf("HTTPAddr %s, want %s", in.HTTPAddr, want)
			}
			if want := net.JoinHostPort(po.Status.PodIP, "5057"); in.ChordAddr != want {
				t.Errorf("ChordAddr %s, want %s", in.ChordAddr, want)
			}
		})
	}
}

// TestDeploymentLifecycle: Launch waits for the new pod's IP; Terminate of
// a pod that is not the one the ReplicaSet would pick by itself sets its
// deletion cost so that it is removed, and only it.
func TestDeploymentLifecycle(t *testing.T) {
	ctx := testCtx(t)
	const initial = 3
	c := newCluster(t, ns)
	c.lateIP = true
	c.graceful = true // removed pods stay, terminating, so their annotations can be read
	if err := c.cs.Tracker().Add(deployment(ns, "tide", initial)); err != nil {
		t.Fatal(err)
	}
	c.reconcile("deployments", ns, "tide")
	p, err := New(Config{Namespace: ns, Kind: "deployment", Name: "tide", Client: c.cs, Drain: c.drainFunc, PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	before, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != initial {
		t.Fatalf("List = %v, want %d pods", ids(before), initial)
	}
	in, err := p.Launch(ctx, provision.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := find(before, in.ID); ok {
		t.Fatalf("Launch returned %s, which existed before", in.ID)
	}
	if got := c.replicas("deployments", "tide"); got != initial+1 {
		t.Fatalf("replicas %d, want %d", got, initial+1)
	}
	po, ok := c.pod(in.ID)
	if !ok || po.Status.PodIP == "" || in.HTTPAddr != net.JoinHostPort(po.Status.PodIP, "5058") {
		t.Fatalf("Launch = %+v; pod %+v", in, po)
	}

	// The victim is the oldest pod: left alone, the ReplicaSet would remove
	// the newest instead.
	list, _ := p.List(ctx)
	victim := list[0]
	for _, x := range list {
		a, _ := c.pod(x.ID)
		b, _ := c.pod(victim.ID)
		if a.CreationTimestamp.Before(&b.CreationTimestamp) {
			victim = x
		}
	}
	if v, err := p.Victim(ctx); err != nil || v.ID == victim.ID {
		t.Fatalf("Victim = %v, %v: the newest pod, not the oldest %s, was expected", v.ID, err, victim.ID)
	}
	wantAddr := podAddr(t, c, victim.ID, 5058)
	if err := p.Drain(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if d := c.drainedAddrs(); len(d) != 1 || d[0] != wantAddr {
		t.Fatalf("drained %v, want %s", d, wantAddr)
	}
	// After a drain, Victim returns the draining pod.
	if v, err := p.Victim(ctx); err != nil || v.ID != victim.ID {
		t.Errorf("Victim after Drain = %v, %v; want the draining %s", v.ID, err, victim.ID)
	}
	if err := p.Terminate(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if got := c.replicas("deployments", "tide"); got != initial {
		t.Fatalf("replicas %d, want %d", got, initial)
	}
	gone, _ := c.pod(victim.ID)
	if gone.Annotations[DeletionCostAnnotation] != strconv.Itoa(-1<<31) {
		t.Errorf("deletion cost %q, want the lowest int32", gone.Annotations[DeletionCostAnnotation])
	}
	for _, po := range c.pods() {
		if terminating := po.DeletionTimestamp != nil; terminating != (po.Name == victim.ID) {
			t.Errorf("pod %s terminating=%v; only the drained %s should be", po.Name, terminating, victim.ID)
		}
	}
	if err := p.Terminate(ctx, victim); err != nil {
		t.Errorf("second Terminate: %v", err)
	}
	if got := c.replicas("deployments", "tide"); got != initial {
		t.Errorf("after a second Terminate: replicas %d, want %d", got, initial)
	}
}

// TestDeploymentTerminateAfterCrash: the replicas were lowered but the
// ReplicaSet has not acted yet when Terminate runs again.
func TestDeploymentTerminateAfterCrash(t *testing.T) {
	ctx := testCtx(t)
	c := newCluster(t, ns, deployment(ns, "tide", 3))
	p, err := New(Config{Namespace: ns, Kind: "Deployment", Name: "tide", Client: c.cs, Drain: c.drainFunc})
	if err != nil {
		t.Fatal(err)
	}
	victim, err := p.Victim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.frozen = true
	if err := p.Terminate(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if got := c.replicas("deployments", "tide"); got != 2 {
		t.Fatalf("replicas %d, want 2", got)
	}
	if _, ok := c.pod(victim.ID); !ok {
		t.Fatal("the simulation removed the pod while frozen")
	}
	if err := p.Terminate(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if got := c.replicas("deployments", "tide"); got != 2 {
		t.Errorf("a repeated Terminate lowered the replicas to %d", got)
	}
	// A pod of something else is refused.
	other := &corev1.Pod{}
	other.Name, other.Namespace, other.Labels = "other-0", ns, map[string]string{testLabel: "tide", "tide/role": "member"}
	if err := c.cs.Tracker().Add(other); err != nil {
		t.Fatal(err)
	}
	if err := p.Terminate(ctx, provision.Instance{ID: "other-0"}); !errors.Is(err, ErrNotRemovable) {
		t.Errorf("Terminate(other-0) = %v, want ErrNotRemovable", err)
	}
}

// TestAPIErrors: errors of the API server come back naming the request,
// still recognisable with the apierrors predicates, and change nothing.
func TestAPIErrors(t *testing.T) {
	ctx := testCtx(t)
	c, p := stsCluster(t, 2)
	forbid := func(verb, resource, sub string) {
		c.cs.PrependReactor(verb, resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() != sub {
				return false, nil, nil
			}
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: resource}, "tide", errors.New("denied"))
		})
	}
	forbid("update", "statefulsets", "scale")
	_, err := p.Launch(ctx, provision.Spec{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("Launch = %v, want a Forbidden error", err)
	}
	for _, s := range []string{"update", "statefulsets/scale", ns + "/tide"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	if got := c.replicas("statefulsets", "tide"); got != 2 {
		t.Errorf("replicas %d after a forbidden update", got)
	}

	c.cs.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInternalError(errors.New("etcd is down"))
	})
	if _, err := p.List(ctx); !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), "etcd is down") {
		t.Errorf("List = %v, want the internal error", err)
	}

	c.cs.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("try later")
	})
	if err := p.Drain(ctx, provision.Instance{ID: "tide-1"}); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("Drain = %v, want the service-unavailable error", err)
	}
	if d := c.drainedAddrs(); len(d) != 0 {
		t.Errorf("drained %v although the pod could not be read", d)
	}

	missing, err := New(Config{Namespace: ns, Name: "nope", Client: c.cs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := missing.Launch(ctx, provision.Spec{}); !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Launch of a missing StatefulSet = %v", err)
	}
	if _, err := missing.Victim(ctx); !apierrors.IsNotFound(err) {
		t.Errorf("Victim of a missing StatefulSet = %v", err)
	}
}

// TestConflictRetried: a concurrent write to the scale makes UpdateScale
// conflict; the provisioner reads again and scales by exactly one.
func TestConflictRetried(t *testing.T) {
	ctx := testCtx(t)
	c, p := stsCluster(t, 2)
	c.conflicts = 2
	in, err := p.Launch(ctx, provision.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.replicas("statefulsets", "tide"); got != 3 {
		t.Errorf("replicas %d, want 3", got)
	}
	if in.ID != "tide-2" {
		t.Errorf("Launch = %s, want tide-2", in.ID)
	}
	c.conflicts = 1000
	if _, err := p.Launch(ctx, provision.Spec{}); !apierrors.IsConflict(err) {
		t.Errorf("Launch under endless conflicts = %v, want a Conflict error", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	c := newCluster(t, ns)
	for _, cfg := range []Config{
		{Name: "tide", Kind: "DaemonSet"},
		{Kind: "StatefulSet"},
		{Name: "tide", Selector: "a in (b"},
		{Name: "tide", HTTPPort: 70000},
		{Name: "tide", ChordPort: -1},
		{Name: "tide", PollInterval: -time.Second},
	} {
		cfg.Client = c.cs
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	p, err := New(Config{Name: "tide", Client: c.cs})
	if err != nil {
		t.Fatal(err)
	}
	if p.Namespace() != "default" || p.Kind() != KindStatefulSet || p.Name() != "kubernetes" {
		t.Errorf("defaults: namespace %q, kind %q, name %q", p.Namespace(), p.Kind(), p.Name())
	}
	if _, err := New(Config{Name: "tide", Kubeconfig: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("New with a missing kubeconfig succeeded")
	}
	kc := filepath.Join(t.TempDir(), "config")
	const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:1
contexts:
- name: x
  context:
    cluster: c
    namespace: from-kubeconfig
current-context: x
`
	if err := os.WriteFile(kc, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile, err := New(Config{Name: "tide", Kubeconfig: kc})
	if err != nil {
		t.Fatal(err)
	}
	if fromFile.Namespace() != "from-kubeconfig" {
		t.Errorf("namespace %q, want the kubeconfig context's", fromFile.Namespace())
	}
	if err := p.Drain(context.Background(), provision.Instance{}); err == nil {
		t.Error("Drain of an instance without an ID succeeded")
	}
	if err := p.Terminate(context.Background(), provision.Instance{}); err == nil {
		t.Error("Terminate of an instance without an ID succeeded")
	}
}

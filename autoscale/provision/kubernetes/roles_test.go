package kubernetes

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	tidecluster "tide/cluster"
	"tide/paxos/node"
)

// roleAPI is a fake API server that, like a real one, gives every
// Service it creates a ClusterIP, here from 127.88.0.0/16: loopback
// addresses where nothing listens, so that a role nobody runs refuses
// connections at once instead of timing them out.
type roleAPI struct {
	cs *fake.Clientset
	mu sync.Mutex
	n  int
}

func newRoleAPI() *roleAPI {
	a := &roleAPI{cs: fake.NewClientset()}
	a.cs.PrependReactor("create", "services", func(act k8stesting.Action) (bool, runtime.Object, error) {
		svc := act.(k8stesting.CreateAction).GetObject().(*corev1.Service)
		a.mu.Lock()
		a.n++
		svc.Spec.ClusterIP = fmt.Sprintf("127.88.%d.%d", a.n/250, a.n%250+1)
		a.mu.Unlock()
		return false, nil, nil // the tracker stores it
	})
	return a
}

func (a *roleAPI) services(t *testing.T) map[string]corev1.Service {
	t.Helper()
	l, err := a.cs.CoreV1().Services(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.Service{}
	for _, s := range l.Items {
		out[s.Name] = s
	}
	return out
}

func (a *roleAPI) deployments(t *testing.T) map[string]appsv1.Deployment {
	t.Helper()
	l, err := a.cs.AppsV1().Deployments(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]appsv1.Deployment{}
	for _, d := range l.Items {
		out[d.Name] = d
	}
	return out
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestRoles(t *testing.T, a *roleAPI) *Roles {
	t.Helper()
	r, err := NewRoles(RolesConfig{Namespace: ns, Client: a.cs, Image: "tide:test", Cluster: "log1", Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRolesObjects: Reserve creates a Service per address, Run the
// Deployment whose pod runs the given command behind it, Remove, Release
// and Cleanup delete them.
func TestRolesObjects(t *testing.T) {
	ctx := testCtx(t)
	a := newRoleAPI()
	r := newTestRoles(t, a)
	ips, err := r.Reserve(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	svcs := a.services(t)
	if len(ips) != 3 || len(svcs) != 3 {
		t.Fatalf("Reserve(3) = %v, with services %v", ips, svcs)
	}
	byIP := map[string]corev1.Service{}
	for _, s := range svcs {
		byIP[s.Spec.ClusterIP] = s
		if s.Labels[RolesAppLabel] != RolesApp || s.Labels[ClusterLabel] != "log1" || s.Labels[InstanceLabel] != s.Name {
			t.Errorf("service %s labels %v", s.Name, s.Labels)
		}
		if !strings.HasPrefix(s.Name, "log1-") || !dnsLabel.MatchString(s.Name) {
			t.Errorf("service name %q: want log1-<suffix>, a DNS label", s.Name)
		}
		if !s.Spec.PublishNotReadyAddresses {
			t.Errorf("service %s does not publish not-ready addresses: peers could not reach a starting role", s.Name)
		}
		ports := map[string][2]int{}
		for _, p := range s.Spec.Ports {
			ports[p.Name] = [2]int{int(p.Port), p.TargetPort.IntValue()}
		}
		if ports["role"] != [2]int{5057, 5057} || ports["http"] != [2]int{5058, 5058} {
			t.Errorf("service %s ports %v", s.Name, s.Spec.Ports)
		}
	}
	for _, ip := range ips {
		if _, ok := byIP[ip]; !ok {
			t.Errorf("Reserve returned %s, which is no service's ClusterIP", ip)
		}
	}

	args := []string{"log", "serve", "--role", ips[0] + ":5057", "--listen", "0.0.0.0:5057"}
	id, err := r.Run(ctx, "proxy-x", "proxy", ips[0], 250_000_000, args)
	if err != nil {
		t.Fatal(err)
	}
	svc := byIP[ips[0]]
	if id != svc.Name {
		t.Errorf("Run returned %q, want the service's name %q", id, svc.Name)
	}
	d, ok := a.deployments(t)[id]
	if !ok {
		t.Fatalf("no deployment %s", id)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("deployment %s: want 1 replica, Recreate", id)
	}
	tmpl := d.Spec.Template
	if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(labels.Set(tmpl.Labels)) {
		t.Errorf("deployment selector %v does not match its pods' labels %v", d.Spec.Selector, tmpl.Labels)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(tmpl.Labels)) {
		t.Errorf("service %s selector %v does not match the pods' labels %v", svc.Name, svc.Spec.Selector, tmpl.Labels)
	}
	for _, other := range svcs {
		if other.Name != svc.Name && labels.SelectorFromSet(other.Spec.Selector).Matches(labels.Set(tmpl.Labels)) {
			t.Errorf("service %s also selects the pod of %s", other.Name, id)
		}
	}
	if tmpl.Labels[KindLabel] != "proxy" || d.Labels[KindLabel] != "proxy" {
		t.Errorf("kind labels: deployment %v, pod %v", d.Labels, tmpl.Labels)
	}
	if got := a.services(t)[svc.Name].Labels[KindLabel]; got != "proxy" {
		t.Errorf("service %s kind label %q after Run, want proxy", svc.Name, got)
	}
	if len(tmpl.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(tmpl.Spec.Containers))
	}
	c := tmpl.Spec.Containers[0]
	if c.Image != "tide:test" || !slices.Equal(c.Args, args) {
		t.Errorf("container image %q args %v, want tide:test %v", c.Image, c.Args, args)
	}
	if lim := c.Resources.Limits[corev1.ResourceCPU]; lim.MilliValue() != 250 {
		t.Errorf("cpu limit %v, want 250m", c.Resources.Limits)
	}
	cports := map[string]int32{}
	for _, p := range c.Ports {
		cports[p.Name] = p.ContainerPort
	}
	if cports["role"] != 5057 || cports["http"] != 5058 {
		t.Errorf("container ports %v", c.Ports)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.String() != "http" {
		t.Errorf("readiness probe %+v, want GET /healthz on http", c.ReadinessProbe)
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		for _, v := range tmpl.Spec.Volumes {
			mounted = mounted || (vm.Name == v.Name && vm.MountPath == "/data" && v.EmptyDir != nil)
		}
	}
	if !mounted {
		t.Errorf("no emptyDir at /data: mounts %v, volumes %v", c.VolumeMounts, tmpl.Spec.Volumes)
	}
	if tmpl.Spec.AutomountServiceAccountToken == nil || *tmpl.Spec.AutomountServiceAccountToken {
		t.Error("role pods get a service account token they never use")
	}

	// Without a CPU limit, none is set.
	id2, err := r.Run(ctx, "replica-y", "replica", ips[1], 0, args)
	if err != nil {
		t.Fatal(err)
	}
	if lim := a.deployments(t)[id2].Spec.Template.Spec.Containers[0].Resources.Limits; len(lim) != 0 {
		t.Errorf("limits %v without a CPU limit", lim)
	}

	// Release deletes only services no deployment took.
	r.Release(ips[0], ips[2])
	svcs = a.services(t)
	if _, ok := svcs[byIP[ips[2]].Name]; ok {
		t.Errorf("service of released %s still there", ips[2])
	}
	if _, ok := svcs[svc.Name]; !ok {
		t.Errorf("Release deleted the service of running instance %s", svc.Name)
	}

	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.deployments(t)[id]; ok {
		t.Errorf("deployment %s still there after Remove", id)
	}
	if _, ok := a.services(t)[id]; ok {
		t.Errorf("service %s still there after Remove", id)
	}
	if err := r.Remove(ctx, id); err != nil {
		t.Errorf("Remove of a removed instance: %v", err)
	}

	// Cleanup deletes the rest of this cluster's objects, and only those.
	other, err := NewRoles(RolesConfig{Namespace: ns, Client: a.cs, Image: "tide:test", Cluster: "log2", Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Reserve(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reserve(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := r.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for name, s := range a.services(t) {
		if s.Labels[ClusterLabel] == "log1" {
			t.Errorf("service %s of log1 left after Cleanup", name)
		}
	}
	if len(a.services(t)) != 1 {
		t.Errorf("Cleanup of log1 took log2's service too: %v", a.services(t))
	}
	if len(a.deployments(t)) != 0 {
		t.Errorf("deployments left after Cleanup: %v", a.deployments(t))
	}
}

// TestRolesErrors: failures name the request, forbidden ones the RBAC
// rule they need, and a Reserve that fails part way deletes what it made.
func TestRolesErrors(t *testing.T) {
	ctx := testCtx(t)

	a := newRoleAPI()
	calls := 0
	a.cs.PrependReactor("create", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		calls++
		if calls == 2 {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "services"}, "", fmt.Errorf("no"))
		}
		return false, nil, nil
	})
	r := newTestRoles(t, a)
	_, err := r.Reserve(ctx, 3)
	if err == nil || !strings.Contains(err.Error(), `needs verb "create" on services`) || !apierrors.IsForbidden(err) {
		t.Errorf("Reserve with create forbidden: %v", err)
	}
	if s := a.services(t); len(s) != 0 {
		t.Errorf("a failed Reserve left services %v", s)
	}

	if _, err := r.Run(ctx, "x", "proxy", "10.0.0.1", 0, nil); err == nil || !strings.Contains(err.Error(), "Reserve") {
		t.Errorf("Run on an address never reserved: %v", err)
	}

	// An API server that assigns no ClusterIP (a headless default, say).
	b := &roleAPI{cs: fake.NewClientset()}
	r = newTestRoles(t, b)
	if _, err := r.Reserve(ctx, 1); err == nil || !strings.Contains(err.Error(), "ClusterIP") {
		t.Errorf("Reserve without a ClusterIP: %v", err)
	}
	if s := b.services(t); len(s) != 0 {
		t.Errorf("the service without a ClusterIP was left: %v", s)
	}

	// A forbidden deployment create surfaces from Run, naming the rule.
	a = newRoleAPI()
	a.cs.PrependReactor("create", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "", fmt.Errorf("no"))
	})
	r = newTestRoles(t, a)
	ips, err := r.Reserve(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(ctx, "x", "proxy", ips[0], 0, nil); err == nil || !strings.Contains(err.Error(), `"create" on deployments in API group apps`) {
		t.Errorf("Run with deployments forbidden: %v", err)
	}

	for _, cfg := range []RolesConfig{
		{Client: a.cs},
		{Client: a.cs, Image: "x", Cluster: "Has_Upper"},
		{Client: a.cs, Image: "x", Cluster: strings.Repeat("a", 41)},
		{Client: a.cs, Image: "x", PullPolicy: "Sometimes"},
	} {
		if _, err := NewRoles(cfg); err == nil {
			t.Errorf("NewRoles(%+v) accepted", cfg)
		}
	}
}

// TestLogControlOnKubernetes scales the batchers of a real log (running in
// this process) out to 2 and back to 1 through cluster.ProvisionedRoles
// over Roles and the fake API server, as tide log up --provisioner
// kubernetes does.
//
// Exercised: the objects the new instance gets (its Service's ClusterIP is
// the address the log's configuration takes; its Deployment runs tide log
// serve joining through a live member, listening on 0.0.0.0), the
// reconfigurations that add and remove it, and the deletion of both
// objects once it is out. Not exercised: a pod actually running (the fake
// API server runs nothing, so the health check is replaced here and the
// new batcher never serves), and kube-proxy carrying traffic to it.
func TestLogControlOnKubernetes(t *testing.T) {
	ctx := testCtx(t)
	shape := node.DefaultShape
	shape.TickMillis = 10
	d, stop, err := node.RunInProcess(ctx, shape, t.TempDir(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	a := newRoleAPI()
	r := newTestRoles(t, a)
	var checked []string
	host := &tidecluster.ProvisionedRoles{C: r, Bind: "0.0.0.0", Healthy: func(_ context.Context, addr string) error {
		checked = append(checked, addr)
		return nil
	}}
	ctl := tidecluster.NewLogControl(host, d, "")
	var out strings.Builder
	if err := ctl.Scale(ctx, "batchers", 2, &out); err != nil {
		t.Fatalf("scale batchers to 2: %v\n%s", err, out.String())
	}
	cur, err := ctl.Current()
	if err != nil {
		t.Fatal(err)
	}
	if len(cur.Log.Batchers) != 2 {
		t.Fatalf("batchers after scaling out: %v", cur.Log.Batchers)
	}
	added := cur.Log.Batchers[1]
	ip, port, _ := net.SplitHostPort(added)
	deps := a.deployments(t)
	if len(deps) != 1 || port != "5057" {
		t.Fatalf("added batcher %s; deployments %v", added, deps)
	}
	var dep appsv1.Deployment
	for _, x := range deps {
		dep = x
	}
	svc, ok := a.services(t)[dep.Name]
	if !ok || svc.Spec.ClusterIP != ip {
		t.Fatalf("the batcher's address %s is not the ClusterIP of service %s (%v)", added, dep.Name, svc.Spec.ClusterIP)
	}
	if cur.Log.HTTP[added] != ip+":5058" || !slices.Equal(checked, []string{ip + ":5058"}) {
		t.Errorf("HTTP address %q in the configuration, health checked %v; want %s:5058", cur.Log.HTTP[added], checked, ip)
	}
	args := dep.Spec.Template.Spec.Containers[0].Args
	flag := func(name string) string {
		i := slices.Index(args, name)
		if i < 0 || i+1 >= len(args) {
			return ""
		}
		return args[i+1]
	}
	if !slices.Equal(args[:2], []string{"log", "serve"}) || flag("--role") != added || flag("--listen") != "0.0.0.0:5057" ||
		flag("--http-addr") != "0.0.0.0:5058" || flag("--kind") != "batcher" || flag("--data-dir") != "/data" {
		t.Errorf("pod args %v", args)
	}
	if j := flag("--join"); !slices.Contains(sortedHTTP(d), j) {
		t.Errorf("pod joins through %q, not a member of the log", j)
	}

	if err := ctl.Scale(ctx, "batchers", 1, &out); err != nil {
		t.Fatalf("scale batchers to 1: %v\n%s", err, out.String())
	}
	cur, err = ctl.Current()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(cur.Log.Batchers, added) || len(cur.Log.Batchers) != 1 {
		t.Errorf("batchers after scaling in: %v", cur.Log.Batchers)
	}
	if n, m := len(a.deployments(t)), len(a.services(t)); n != 0 || m != 0 {
		t.Errorf("after scaling in, %d deployments and %d services are left", n, m)
	}
}

func sortedHTTP(d node.Deployment) []string {
	var out []string
	for _, h := range d.HTTPMap() {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// TestUnhealthyRoleRemoved: a role whose pod never answers fails to start
// with the cause, and its Deployment and Service are deleted.
func TestUnhealthyRoleRemoved(t *testing.T) {
	ctx := testCtx(t)
	a := newRoleAPI()
	host := &tidecluster.ProvisionedRoles{C: newTestRoles(t, a), Bind: "0.0.0.0", Healthy: func(context.Context, string) error {
		return fmt.Errorf("image pull back-off")
	}}
	roles, https, err := host.Addrs(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.services(t)) != 1 {
		t.Fatal("Addrs made no service")
	}
	_, err = host.Start(ctx, tidecluster.RoleSpec{Kind: "proxy", Addr: roles[0], HTTP: https[0], Join: "10.0.0.1:5058"})
	if err == nil || !strings.Contains(err.Error(), "image pull back-off") || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("Start of a role that never answers: %v", err)
	}
	if n, m := len(a.deployments(t)), len(a.services(t)); n != 0 || m != 0 {
		t.Errorf("the role that never answered left %d deployments and %d services", n, m)
	}
}

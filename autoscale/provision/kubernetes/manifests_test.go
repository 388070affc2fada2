package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"tide/autoscale/provision"
)

var manifestDir = filepath.Join("..", "..", "..", "deploy", "kubernetes")

var strictDecoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

type manifestObj struct {
	where string // file#document
	obj   runtime.Object
}

// decodeAll decodes every document of data strictly.
func decodeAll(name string, data []byte) ([]manifestObj, error) {
	var out []manifestObj
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if isBlankYAML(doc) {
			continue
		}
		where := name + "#" + strconv.Itoa(i)
		obj, gvk, err := strictDecoder.Decode(doc, nil, nil)
		if err != nil {
			return out, errWhere(where, err)
		}
		if gvk == nil || gvk.Kind == "" {
			return out, errWhere(where, errors.New("no kind"))
		}
		out = append(out, manifestObj{where, obj})
	}
}

func isBlankYAML(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") && l != "---" {
			return false
		}
	}
	return true
}

func errWhere(where string, err error) error { return errors.New(where + ": " + err.Error()) }

// manifestSets are the two ways to apply deploy/kubernetes: its files, or
// with mutual TLS its namespace and the files of tls/ (see its README).
var manifestSets = map[string][]string{
	"plain": {"*.yaml", "*.yml"},
	"tls":   {"00-namespace.yaml", "tls/*.yaml", "tls/*.yml"},
}

// loadManifests strictly decodes every document of every manifest of
// the plain set.
func loadManifests(t *testing.T) []manifestObj { return loadManifestSet(t, "plain") }

// loadManifestSet strictly decodes every document of the files of
// manifestSets[set].
func loadManifestSet(t *testing.T, set string) []manifestObj {
	t.Helper()
	var files []string
	for _, pat := range manifestSets[set] {
		m, err := filepath.Glob(filepath.Join(manifestDir, pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", manifestDir)
	}
	var all []manifestObj
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeAll(filepath.Base(f), data)
		if err != nil {
			t.Errorf("%v", err)
		}
		all = append(all, objs...)
	}
	if t.Failed() {
		t.FailNow()
	}
	return all
}

// TestStrictDecoderRejects checks that the decoder the manifest test relies
// on does fail on an unknown field, a misspelt nested field and an
// unknown kind.
func TestStrictDecoderRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  clusterIp: None\n",
		"nested field":  "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: x\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n          imagee: b\n",
		"unknown kind":  "apiVersion: v1\nkind: Servicce\nmetadata:\n  name: x\n",
		"duplicate key": "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  name: y\n",
	} {
		if _, err := decodeAll(name, []byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if objs, err := decodeAll("ok", []byte("# c\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  clusterIP: None\n")); err != nil || len(objs) != 1 {
		t.Errorf("a valid document: %v, %d objects", err, len(objs))
	}
}

type manifests struct {
	namespaces   []*corev1.Namespace
	services     []*corev1.Service
	statefulSets []*appsv1.StatefulSet
	deployments  []*appsv1.Deployment
	accounts     []*corev1.ServiceAccount
	roles        []*rbacv1.Role
	bindings     []*rbacv1.RoleBinding
}

func sortManifests(t *testing.T, objs []manifestObj) manifests {
	t.Helper()
	var m manifests
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *corev1.Namespace:
			m.namespaces = append(m.namespaces, v)
		case *corev1.Service:
			m.services = append(m.services, v)
		case *appsv1.StatefulSet:
			m.statefulSets = append(m.statefulSets, v)
		case *appsv1.Deployment:
			m.deployments = append(m.deployments, v)
		case *corev1.ServiceAccount:
			m.accounts = append(m.accounts, v)
		case *rbacv1.Role:
			m.roles = append(m.roles, v)
		case *rbacv1.RoleBinding:
			m.bindings = append(m.bindings, v)
		default:
			t.Errorf("%s: unexpected kind %T", o.where, o.obj)
		}
	}
	if len(m.namespaces) != 1 || len(m.services) < 2 || len(m.statefulSets) < 1 || len(m.deployments) != 1 ||
		len(m.accounts) != 1 || len(m.roles) != 1 || len(m.bindings) != 1 {
		t.Fatalf("want 1 Namespace, 2+ Services, 1+ StatefulSets, 1 Deployment, ServiceAccount, Role and RoleBinding; got %d, %d, %d, %d, %d, %d, %d",
			len(m.namespaces), len(m.services), len(m.statefulSets), len(m.deployments), len(m.accounts), len(m.roles), len(m.bindings))
	}
	return m
}

// env returns a container's environment with $(VAR) references expanded
// the way the kubelet does, given the pod's name and namespace for the
// downward API fields.
func env(t *testing.T, c corev1.Container, podName, namespace string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				t.Errorf("env %s: only fieldRef sources are expected", e.Name)
				continue
			}
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = podName
			case "metadata.namespace":
				v = namespace
			case "status.podIP":
				v = "10.9.9.9"
			default:
				t.Errorf("env %s: unexpected field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		out[e.Name] = expand(t, "env "+e.Name, v, out)
	}
	return out
}

// expand replaces $(VAR) references with the values in vars.
func expand(t *testing.T, what, v string, vars map[string]string) string {
	t.Helper()
	for {
		i := strings.Index(v, "$(")
		if i < 0 {
			return v
		}
		j := strings.Index(v[i:], ")")
		if j < 0 {
			t.Errorf("%s: unclosed $( in %q", what, v)
			return v
		}
		ref := v[i+2 : i+j]
		val, ok := vars[ref]
		if !ok {
			t.Errorf("%s refers to $(%s), which is not defined (before it)", what, ref)
		}
		v = v[:i] + val + v[i+j+1:]
	}
}

// TestManifests decodes every manifest strictly and checks that the pieces
// fit: the nodes' addresses, the seed they join, the probes and volumes,
// and the autoscaler's account and arguments.
func TestManifests(t *testing.T) {
	for set := range manifestSets {
		t.Run(set, func(t *testing.T) { testManifests(t, sortManifests(t, loadManifestSet(t, set))) })
	}
}

func testManifests(t *testing.T, m manifests) {
	nsName := m.namespaces[0].Name
	for _, o := range []metav1.Object{m.accounts[0], m.roles[0], m.bindings[0], m.deployments[0]} {
		if o.GetNamespace() != nsName {
			t.Errorf("%s is in namespace %q, not %q", o.GetName(), o.GetNamespace(), nsName)
		}
	}
	services := map[string]*corev1.Service{}
	for _, s := range m.services {
		if s.Namespace != nsName {
			t.Errorf("service %s is in namespace %q, not %q", s.Name, s.Namespace, nsName)
		}
		services[s.Name] = s
	}

	var seed *appsv1.StatefulSet
	var members []*appsv1.StatefulSet
	for _, sts := range m.statefulSets {
		if sts.Namespace != nsName {
			t.Errorf("statefulset %s is in namespace %q", sts.Name, sts.Namespace)
		}
		sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(sts.Spec.Template.Labels)) {
			t.Errorf("statefulset %s: selector %v does not match its template's labels %v", sts.Name, sts.Spec.Selector, sts.Spec.Template.Labels)
		}
		svc := services[sts.Spec.ServiceName]
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
			t.Errorf("statefulset %s: governing service %q must exist, be headless and publish not-ready addresses", sts.Name, sts.Spec.ServiceName)
		} else if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(sts.Spec.Template.Labels)) {
			t.Errorf("service %s does not select the pods of %s", svc.Name, sts.Name)
		}
		if len(sts.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("statefulset %s: want one container", sts.Name)
		}
		c := sts.Spec.Template.Spec.Containers[0]
		if c.Image != "tide:latest" {
			t.Errorf("statefulset %s: image %q", sts.Name, c.Image)
		}
		if !slices.Equal(c.Args, []string{"node"}) {
			t.Errorf("statefulset %s: args %v, want [node]", sts.Name, c.Args)
		}
		pod := sts.Name + "-0"
		e := env(t, c, pod, nsName)
		if e["TIDE_CHORD_ADDR"] != "0.0.0.0:5057" || e["TIDE_HTTP_ADDR"] != "0.0.0.0:5058" {
			t.Errorf("statefulset %s: listens on %q and %q", sts.Name, e["TIDE_CHORD_ADDR"], e["TIDE_HTTP_ADDR"])
		}
		// The node advertises the name the provisioner reports for it.
		p := &Provisioner{ns: nsName, httpPort: 5058, chordPort: 5057}
		wantHTTP, wantChord := p.dnsAddrs(pod, sts.Spec.ServiceName)
		if got := e["TIDE_ADVERTISE"] + ":5057"; got != wantChord {
			t.Errorf("statefulset %s: pod 0 advertises %s, the provisioner reports %s", sts.Name, got, wantChord)
		}
		if got := e["TIDE_ADVERTISE"] + ":5058"; got != wantHTTP {
			t.Errorf("statefulset %s: pod 0 advertises %s, the provisioner reports %s", sts.Name, got, wantHTTP)
		}
		ports := map[string]int32{}
		for _, cp := range c.Ports {
			ports[cp.Name] = cp.ContainerPort
		}
		if ports["chord"] != 5057 || ports["http"] != 5058 {
			t.Errorf("statefulset %s: container ports %v", sts.Name, ports)
		}
		rp := c.ReadinessProbe
		if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/healthz" ||
			(rp.HTTPGet.Port.String() != "http" && rp.HTTPGet.Port.IntValue() != 5058) {
			t.Errorf("statefulset %s: readiness probe %+v, want GET /healthz on the HTTP port", sts.Name, rp)
		}
		dataDir := e["TIDE_DATA_DIR"]
		mounted := false
		for _, vm := range c.VolumeMounts {
			for _, vct := range sts.Spec.VolumeClaimTemplates {
				if vm.Name == vct.Name && vm.MountPath == dataDir && dataDir == "/data" {
					mounted = true
				}
			}
		}
		if !mounted {
			t.Errorf("statefulset %s: TIDE_DATA_DIR %q is not a volumeClaimTemplate mounted at /data", sts.Name, dataDir)
		}
		if _, joins := e["TIDE_JOIN"]; joins {
			members = append(members, sts)
		} else {
			if seed != nil {
				t.Errorf("two statefulsets start rings of their own: %s and %s", seed.Name, sts.Name)
			}
			seed = sts
		}
	}
	if seed == nil || len(members) == 0 {
		t.Fatalf("want one seed statefulset (no TIDE_JOIN) and autoscaled ones that join it; seed %v, members %d", seed, len(members))
	}
	if seed.Spec.Replicas == nil || *seed.Spec.Replicas != 1 {
		t.Errorf("the seed statefulset %s must have exactly one replica", seed.Name)
	}
	seedAdv := env(t, seed.Spec.Template.Spec.Containers[0], seed.Name+"-0", nsName)["TIDE_ADVERTISE"]
	for _, sts := range members {
		for _, pod := range []string{sts.Name + "-0", sts.Name + "-7"} {
			e := env(t, sts.Spec.Template.Spec.Containers[0], pod, nsName)
			if want := seedAdv + ":5057"; e["TIDE_JOIN"] != want {
				t.Errorf("%s joins %q, but the seed pod advertises %q", pod, e["TIDE_JOIN"], want)
			}
		}
	}

	// The autoscaler runs the kubernetes provisioner on an autoscaled set,
	// as the service account the Role is bound to.
	d := m.deployments[0]
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("autoscaler: want one replica, replaced with Recreate (never two controllers)")
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("autoscaler: want one container")
	}
	c := d.Spec.Template.Spec.Containers[0]
	args := map[string]string{}
	cenv := env(t, c, d.Name+"-pod", nsName)
	for _, a := range c.Args[1:] {
		k, v, _ := strings.Cut(expand(t, "arg", a, cenv), "=")
		args[k] = v
	}
	if len(c.Args) == 0 || c.Args[0] != "autoscale" || args["--provisioner"] != "kubernetes" {
		t.Errorf("autoscaler args %v, want autoscale --provisioner=kubernetes ...", c.Args)
	}
	var target *appsv1.StatefulSet
	for _, sts := range members {
		if sts.Name == args["--k8s-name"] {
			target = sts
		}
	}
	if target == nil {
		t.Fatalf("autoscaler --k8s-name=%q is not one of the autoscaled statefulsets", args["--k8s-name"])
	}
	if k := args["--k8s-kind"]; k != "" && !strings.EqualFold(k, KindStatefulSet) {
		t.Errorf("autoscaler --k8s-kind=%s", k)
	}
	if sel, err := labels.Parse(args["--k8s-selector"]); err != nil || !sel.Matches(labels.Set(target.Spec.Template.Labels)) ||
		!sel.Matches(labels.Set(seed.Spec.Template.Labels)) {
		t.Errorf("autoscaler --k8s-selector=%q must select the nodes of %s and the seed", args["--k8s-selector"], target.Name)
	}
	if n, ok := args["--k8s-namespace"]; ok && n != nsName {
		t.Errorf("autoscaler --k8s-namespace=%s is not %s", n, nsName)
	}
	sa := d.Spec.Template.Spec.ServiceAccountName
	b := m.bindings[0]
	if sa != m.accounts[0].Name || b.RoleRef.Kind != "Role" || b.RoleRef.Name != m.roles[0].Name ||
		len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != sa || b.Subjects[0].Namespace != nsName {
		t.Errorf("the autoscaler runs as %q; the RoleBinding binds %+v to %+v", sa, b.Subjects, b.RoleRef)
	}
}

type permission struct{ group, resource, verb string }

// usedPermissions runs the provisioner through a StatefulSet and a
// Deployment lifecycle (workload selectors read from the API) and returns
// every request it made.
func usedPermissions(t *testing.T) map[permission]bool {
	t.Helper()
	ctx := testCtx(t)
	used := map[permission]bool{}
	record := func(c *cluster) {
		for _, a := range c.cs.Actions() {
			r := a.GetResource().Resource
			if s := a.GetSubresource(); s != "" {
				r += "/" + s
			}
			used[permission{a.GetResource().Group, r, a.GetVerb()}] = true
		}
	}
	for _, kind := range []string{KindStatefulSet, KindDeployment} {
		var c *cluster
		if kind == KindStatefulSet {
			c = newCluster(t, ns, statefulSet(ns, "tide", "tide", 2))
		} else {
			c = newCluster(t, ns, deployment(ns, "tide", 2))
		}
		p, err := New(Config{Namespace: ns, Kind: kind, Name: "tide", Client: c.cs, Drain: c.drainFunc, PollInterval: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Launch(ctx, provision.Spec{}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.List(ctx); err != nil {
			t.Fatal(err)
		}
		v, err := p.Victim(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Drain(ctx, v); err != nil {
			t.Fatal(err)
		}
		if err := p.Terminate(ctx, v); err != nil {
			t.Fatal(err)
		}
		record(c)
	}
	return used
}

func ruleAllows(r rbacv1.PolicyRule, p permission) bool {
	return slices.Contains(r.APIGroups, p.group) && slices.Contains(r.Resources, p.resource) && slices.Contains(r.Verbs, p.verb) &&
		len(r.ResourceNames) == 0
}

// TestRoleGrantsWhatTheProvisionerUses: the Role allows every request the
// provisioner makes, and nothing else.
func TestRoleGrantsWhatTheProvisionerUses(t *testing.T) {
	for set := range manifestSets {
		t.Run(set, func(t *testing.T) { testRoleGrants(t, sortManifests(t, loadManifestSet(t, set))) })
	}
}

func testRoleGrants(t *testing.T, m manifests) {
	role := m.roles[0]
	used := usedPermissions(t)
	if len(used) == 0 {
		t.Fatal("the provisioner made no requests")
	}
	for p := range used {
		ok := false
		for _, r := range role.Rules {
			ok = ok || ruleAllows(r, p)
		}
		if !ok {
			t.Errorf("role %s does not allow %q on %q in API group %q, which the provisioner uses", role.Name, p.verb, p.resource, p.group)
		}
	}
	for _, r := range role.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if !used[permission{g, res, v}] {
						t.Errorf("role %s grants %q on %q in API group %q, which the provisioner never uses", role.Name, v, res, g)
					}
				}
			}
		}
	}
}

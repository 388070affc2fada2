package kubernetes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

var logManifestDir = filepath.Join(manifestDir, "log")

// TestLogManifests decodes deploy/kubernetes/log strictly and checks that
// the pieces fit: tide log up runs once, in the namespace, as the account
// the Role is bound to, with the kubernetes provisioner on that namespace
// and a writable data directory.
func TestLogManifests(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(logManifestDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", logManifestDir, err)
	}
	var ns *corev1.Namespace
	var sa *corev1.ServiceAccount
	var role *rbacv1.Role
	var binding *rbacv1.RoleBinding
	var dep *appsv1.Deployment
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeAll(filepath.Base(f), data)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			switch v := o.obj.(type) {
			case *corev1.Namespace:
				ns = v
			case *corev1.ServiceAccount:
				sa = v
			case *rbacv1.Role:
				role = v
			case *rbacv1.RoleBinding:
				binding = v
			case *appsv1.Deployment:
				dep = v
			default:
				t.Errorf("%s: unexpected %T", o.where, o.obj)
			}
		}
	}
	if ns == nil || sa == nil || role == nil || binding == nil || dep == nil {
		t.Fatalf("want a Namespace, ServiceAccount, Role, RoleBinding and Deployment")
	}
	for _, o := range []interface{ GetNamespace() string }{sa, role, binding, dep} {
		if o.GetNamespace() != ns.Name {
			t.Errorf("%T is in namespace %q, not %q", o, o.GetNamespace(), ns.Name)
		}
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 || dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Error("tide log up: want one replica, replaced with Recreate (never two controllers of one log)")
	}
	pod := dep.Spec.Template.Spec
	if pod.ServiceAccountName != sa.Name || binding.RoleRef.Kind != "Role" || binding.RoleRef.Name != role.Name ||
		len(binding.Subjects) != 1 || binding.Subjects[0].Kind != "ServiceAccount" || binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != ns.Name {
		t.Errorf("tide log up runs as %q; the RoleBinding binds %+v to %+v", pod.ServiceAccountName, binding.Subjects, binding.RoleRef)
	}
	if len(pod.Containers) != 1 {
		t.Fatal("want one container")
	}
	c := pod.Containers[0]
	e := env(t, c, dep.Name+"-pod", ns.Name)
	args := map[string]string{}
	for _, a := range c.Args[2:] {
		k, v, _ := strings.Cut(expand(t, "arg", a, e), "=")
		args[k] = v
	}
	if len(c.Args) < 2 || c.Args[0] != "log" || c.Args[1] != "up" || args["--provisioner"] != "kubernetes" {
		t.Errorf("args %v, want log up --provisioner=kubernetes ...", c.Args)
	}
	if args["--k8s-namespace"] != ns.Name {
		t.Errorf("--k8s-namespace=%q, want %q: the Role is granted there", args["--k8s-namespace"], ns.Name)
	}
	if args["--k8s-image"] != c.Image {
		t.Errorf("roles run image %q, tide log up itself %q: the same binary should run both", args["--k8s-image"], c.Image)
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		mounted = mounted || (vm.MountPath == args["--data-dir"] && !vm.ReadOnly)
	}
	if !mounted {
		t.Errorf("--data-dir=%q is not a writable volume (the root file system is read-only)", args["--data-dir"])
	}
	// Roles' objects must not be taken for tide log up's own pod.
	if dep.Spec.Template.Labels[RolesAppLabel] == RolesApp {
		t.Errorf("tide log up's pod has the label %s=%s of role pods", RolesAppLabel, RolesApp)
	}
}

// TestLogRoleGrantsWhatRolesUses: the Role of deploy/kubernetes/log allows
// every request Roles makes through a lifecycle (Reserve, Run, Release,
// Remove, Cleanup), and nothing else.
func TestLogRoleGrantsWhatRolesUses(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(logManifestDir, "tide-log.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll("tide-log.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.Role
	for _, o := range objs {
		if r, ok := o.obj.(*rbacv1.Role); ok {
			role = r
		}
	}
	if role == nil {
		t.Fatal("no Role")
	}

	ctx := testCtx(t)
	a := newRoleAPI()
	// With TLS, and the first role's Secret already there (left by an
	// earlier run, so Run updates it): the Role grants the secrets rule
	// for that.
	leftSecret(a)
	r := newTLSRoles(t, a, "log1", testTLS)
	ips, err := r.Reserve(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	id, err := r.Run(ctx, "x", "proxy", ips[0], 0, []string{"log", "serve"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(ctx, "y", "acceptor", ips[1], 0, []string{"log", "serve"}); err != nil {
		t.Fatal(err)
	}
	r.Release(ips[2])
	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := r.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	used := map[permission]bool{}
	for _, act := range a.cs.Actions() {
		res := act.GetResource().Resource
		if s := act.GetSubresource(); s != "" {
			res += "/" + s
		}
		used[permission{act.GetResource().Group, res, act.GetVerb()}] = true
	}
	for p := range used {
		ok := false
		for _, rule := range role.Rules {
			ok = ok || ruleAllows(rule, p)
		}
		if !ok {
			t.Errorf("role %s does not allow %q on %q in API group %q, which Roles uses", role.Name, p.verb, p.resource, p.group)
		}
	}
	for _, rule := range role.Rules {
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				for _, v := range rule.Verbs {
					if !used[permission{g, res, v}] {
						t.Errorf("role %s grants %q on %q in API group %q, which Roles never uses", role.Name, v, res, g)
					}
				}
			}
		}
	}
}

package kubernetes

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tide/autoscale/provision"
)

var testTLS = &provision.TLS{CA: []byte("-----CA-----\n"), Cert: []byte("-----CERT-----\n"), Key: []byte("-----KEY-----\n")}

func newTLSRoles(t *testing.T, a *roleAPI, cluster string, tls *provision.TLS) *Roles {
	t.Helper()
	r, err := NewRoles(RolesConfig{Namespace: ns, Client: a.cs, Image: "tide:test", Cluster: cluster, TLS: tls, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (a *roleAPI) secrets(t *testing.T) map[string]corev1.Secret {
	t.Helper()
	l, err := a.cs.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.Secret{}
	for _, s := range l.Items {
		out[s.Name] = s
	}
	return out
}

// TestRolesTLS: with TLS, Run puts the files in the cluster's Secret,
// mounts it read-only at /tls in the pod and adds the --tls-* flags
// naming the files there; Cleanup deletes the Secret.
func TestRolesTLS(t *testing.T) {
	ctx := testCtx(t)
	a := newRoleAPI()
	r := newTLSRoles(t, a, "log1", testTLS)
	ips, err := r.Reserve(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.secrets(t)) != 0 {
		t.Errorf("Reserve created secrets: %v", a.secrets(t))
	}
	args := []string{"log", "serve", "--role", ips[0] + ":5057"}
	id, err := r.Run(ctx, "proxy-x", "proxy", ips[0], 0, args)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(ctx, "acceptor-y", "acceptor", ips[1], 0, args); err != nil {
		t.Fatal(err)
	}
	secs := a.secrets(t)
	sec, ok := secs["log1-tls"]
	if !ok || len(secs) != 1 {
		t.Fatalf("secrets %v, want log1-tls only", secs)
	}
	for key, want := range map[string][]byte{"ca.crt": testTLS.CA, "role.crt": testTLS.Cert, "role.key": testTLS.Key} {
		if !bytes.Equal(sec.Data[key], want) {
			t.Errorf("secret key %s = %q, want %q", key, sec.Data[key], want)
		}
	}
	if len(sec.Data) != 3 || sec.Labels[ClusterLabel] != "log1" || sec.Labels[RolesAppLabel] != RolesApp {
		t.Errorf("secret data keys %d, labels %v", len(sec.Data), sec.Labels)
	}

	pod := a.deployments(t)[id].Spec.Template.Spec
	c := pod.Containers[0]
	wantArgs := append(slices.Clone(args), "--tls-ca", "/tls/ca.crt", "--tls-cert", "/tls/role.crt", "--tls-key", "/tls/role.key")
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args %q, want %q", c.Args, wantArgs)
	}
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == TLSMountPath {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil || !mount.ReadOnly {
		t.Fatalf("mounts %+v: want a read-only one at /tls", c.VolumeMounts)
	}
	var vol *corev1.Volume
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == mount.Name {
			vol = &pod.Volumes[i]
		}
	}
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != "log1-tls" {
		t.Fatalf("volume %+v of the /tls mount: want secret log1-tls", vol)
	}
	if m := vol.Secret.DefaultMode; m == nil || *m&0o007 != 0 {
		t.Errorf("secret volume mode %v: readable by others", m)
	}
	if sc := pod.SecurityContext; sc == nil || sc.FSGroup == nil || sc.RunAsUser == nil || *sc.FSGroup != *sc.RunAsGroup {
		t.Errorf("pod security context %+v: the role's group must own the secret's files", sc)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet != nil || p.TCPSocket == nil {
		t.Errorf("readiness probe %+v: with TLS the kubelet cannot GET /healthz off loopback", c.ReadinessProbe)
	}

	// Another log in the namespace keeps its own Secret through log1's
	// Cleanup.
	other := newTLSRoles(t, a, "log2", testTLS)
	oips, err := other.Reserve(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Run(ctx, "x", "proxy", oips[0], 0, args); err != nil {
		t.Fatal(err)
	}
	if err := r.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	secs = a.secrets(t)
	if _, ok := secs["log1-tls"]; ok {
		t.Error("Cleanup left the secret log1-tls")
	}
	if _, ok := secs["log2-tls"]; !ok {
		t.Error("Cleanup of log1 deleted log2's secret")
	}
}

// TestRolesTLSUpdatesSecret: a Secret an earlier run left is updated to
// the current files, not kept.
func TestRolesTLSUpdatesSecret(t *testing.T) {
	ctx := testCtx(t)
	a := newRoleAPI()
	old := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "log1-tls", Namespace: ns}, Data: map[string][]byte{"ca.crt": []byte("old")}}
	if _, err := a.cs.CoreV1().Secrets(ns).Create(ctx, old, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := newTLSRoles(t, a, "log1", testTLS)
	ips, err := r.Reserve(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(ctx, "x", "proxy", ips[0], 0, []string{"log", "serve"}); err != nil {
		t.Fatal(err)
	}
	if got := a.secrets(t)["log1-tls"].Data; !bytes.Equal(got["ca.crt"], testTLS.CA) || !bytes.Equal(got["role.key"], testTLS.Key) {
		t.Errorf("secret after Run: %q, want the current files", got)
	}
}

// TestRolesWithoutTLS: without TLS there is no Secret, no /tls mount and
// no --tls-* flag, and the readiness probe is GET /healthz.
func TestRolesWithoutTLS(t *testing.T) {
	ctx := testCtx(t)
	a := newRoleAPI()
	r := newTLSRoles(t, a, "log1", nil)
	ips, err := r.Reserve(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"log", "serve"}
	id, err := r.Run(ctx, "x", "proxy", ips[0], 0, args)
	if err != nil {
		t.Fatal(err)
	}
	pod := a.deployments(t)[id].Spec.Template.Spec
	c := pod.Containers[0]
	if !slices.Equal(c.Args, args) || len(c.VolumeMounts) != 1 || len(pod.Volumes) != 1 {
		t.Errorf("args %q, mounts %v, volumes %v: want the role's args and the data volume only", c.Args, c.VolumeMounts, pod.Volumes)
	}
	if c.ReadinessProbe.HTTPGet == nil {
		t.Errorf("readiness probe %+v, want GET /healthz", c.ReadinessProbe)
	}
	if err := r.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, act := range a.cs.Actions() {
		if act.GetResource().Resource == "secrets" {
			t.Errorf("without TLS, Roles made a request on secrets: %s", act.GetVerb())
		}
	}
}

// TestRolesTLSIncomplete: TLS material without a key is refused.
func TestRolesTLSIncomplete(t *testing.T) {
	_, err := NewRoles(RolesConfig{Namespace: ns, Client: newRoleAPI().cs, Image: "tide:test", TLS: &provision.TLS{CA: []byte("x"), Cert: []byte("y")}})
	if err == nil || !strings.Contains(err.Error(), "key") {
		t.Errorf("NewRoles with no key: %v", err)
	}
}

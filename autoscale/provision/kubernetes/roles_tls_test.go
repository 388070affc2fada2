package kubernetes

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"tide/autoscale/provision"
	"tide/tlsconf"
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

// leftSecret makes the first Secret Roles creates exist already, with
// other contents, as if an earlier run had left it.
func leftSecret(a *roleAPI) {
	var once sync.Once
	a.cs.PrependReactor("create", "secrets", func(act k8stesting.Action) (bool, runtime.Object, error) {
		once.Do(func() {
			old := act.(k8stesting.CreateAction).GetObject().(*corev1.Secret).DeepCopy()
			old.Data = map[string][]byte{"ca.crt": []byte("old")}
			a.cs.Tracker().Add(old)
		})
		return false, nil, nil // the tracker answers: already exists
	})
}

// TestRolesTLS: with TLS, Run puts the files in the role's Secret, mounts
// it read-only at /tls in the pod and adds the --tls-* flags naming the
// files there; Remove and Cleanup delete the Secrets, and only the log's.
func TestRolesTLS(t *testing.T) {
	ctx := testCtx(t)
	a := newRoleAPI()
	r := newTLSRoles(t, a, "log1", testTLS)
	ips, err := r.Reserve(ctx, 3)
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
	id2, err := r.Run(ctx, "acceptor-y", "acceptor", ips[1], 0, args)
	if err != nil {
		t.Fatal(err)
	}
	secs := a.secrets(t)
	if len(secs) != 2 {
		t.Fatalf("secrets %v, want one per role", secs)
	}
	sec, ok := secs[id+"-tls"]
	if !ok {
		t.Fatalf("secrets %v, want %s-tls", secs, id)
	}
	for key, want := range map[string][]byte{"ca.crt": testTLS.CA, "role.crt": testTLS.Cert, "role.key": testTLS.Key} {
		if !bytes.Equal(sec.Data[key], want) {
			t.Errorf("secret key %s = %q, want %q", key, sec.Data[key], want)
		}
	}
	if len(sec.Data) != 3 || sec.Labels[ClusterLabel] != "log1" || sec.Labels[RolesAppLabel] != RolesApp || sec.Labels[InstanceLabel] != id {
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
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != id+"-tls" {
		t.Fatalf("volume %+v of the /tls mount: want secret %s-tls", vol, id)
	}
	if m := vol.Secret.DefaultMode; m == nil || *m&0o007 != 0 {
		t.Errorf("secret volume mode %v: readable by others", m)
	}
	if sc := pod.SecurityContext; sc == nil || sc.FSGroup == nil || sc.RunAsGroup == nil || *sc.FSGroup != *sc.RunAsGroup {
		t.Errorf("pod security context %+v: the role's group must own the secret's files", sc)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet != nil || p.TCPSocket == nil {
		t.Errorf("readiness probe %+v: with TLS the kubelet cannot GET /healthz off loopback", c.ReadinessProbe)
	}

	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.secrets(t)[id+"-tls"]; ok {
		t.Errorf("Remove left the secret %s-tls", id)
	}

	// A Run whose Deployment is refused leaves no Secret.
	refuse := true
	a.cs.PrependReactor("create", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !refuse {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "", errors.New("no"))
	})
	if _, err := r.Run(ctx, "z", "proxy", ips[2], 0, args); err == nil {
		t.Fatal("Run with a refused deployment succeeded")
	}
	if secs := a.secrets(t); len(secs) != 1 {
		t.Errorf("after a failed Run, secrets %v, want %s-tls only", secs, id2)
	}

	// Another log in the namespace keeps its Secrets through log1's
	// Cleanup; a Secret of log1 whose role is gone goes.
	other := newTLSRoles(t, a, "log2", testTLS)
	oips, err := other.Reserve(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	refuse = false
	oid, err := other.Run(ctx, "x", "proxy", oips[0], 0, args)
	if err != nil {
		t.Fatal(err)
	}
	stray := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "log1-abcdef-tls", Namespace: ns, Labels: r.labels("log1-abcdef")}}
	if _, err := a.cs.CoreV1().Secrets(ns).Create(ctx, stray, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	secs = a.secrets(t)
	if _, ok := secs[oid+"-tls"]; !ok || len(secs) != 1 {
		t.Errorf("after log1's Cleanup, secrets %v, want log2's %s-tls only", secs, oid)
	}
}

// TestRolesTLSUpdatesSecret: a Secret an earlier run left is updated to
// the role's files, not kept.
func TestRolesTLSUpdatesSecret(t *testing.T) {
	ctx := testCtx(t)
	a := newRoleAPI()
	leftSecret(a)
	r := newTLSRoles(t, a, "log1", testTLS)
	ips, err := r.Reserve(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	id, err := r.Run(ctx, "x", "proxy", ips[0], 0, []string{"log", "serve"})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.secrets(t)[id+"-tls"].Data; !bytes.Equal(got["ca.crt"], testTLS.CA) || !bytes.Equal(got["role.key"], testTLS.Key) {
		t.Errorf("secret after Run: %q, want the current files", got)
	}
}

// TestRolesIssueTLS: with TLS.Issue each role's Secret holds a certificate
// of the CA for its own ClusterIP, which a client dialing that address
// accepts.
func TestRolesIssueTLS(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	if err := tlsconf.InitCA(dir, "test", time.Hour); err != nil {
		t.Fatal(err)
	}
	ca, err := tls.LoadX509KeyPair(filepath.Join(dir, tlsconf.CAFile), filepath.Join(dir, tlsconf.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate[0]})
	issue := func(ip string) ([]byte, []byte, error) {
		return tlsconf.Issue(ca, tlsconf.NodeCert{Name: "role-" + ip, IPs: []net.IP{net.ParseIP(ip)}})
	}
	a := newRoleAPI()
	r := newTLSRoles(t, a, "log1", &provision.TLS{CA: caPEM, Issue: issue})
	ips, err := r.Reserve(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	for i, ip := range ips {
		id, err := r.Run(ctx, "r", "acceptor", ip, 0, []string{"log", "serve"})
		if err != nil {
			t.Fatal(err)
		}
		sec := a.secrets(t)[id+"-tls"]
		if !bytes.Equal(sec.Data["ca.crt"], caPEM) {
			t.Errorf("role %s: ca.crt is not the CA", id)
		}
		pair, err := tls.X509KeyPair(sec.Data["role.crt"], sec.Data["role.key"])
		if err != nil {
			t.Fatalf("role %s: certificate and key: %v", id, err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: ip, Roots: pool}); err != nil {
			t.Errorf("role %s: its certificate does not verify for its ClusterIP %s: %v", id, ip, err)
		}
		other := ips[1-i]
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: other, Roots: pool}); err == nil {
			t.Errorf("role %s: its certificate verifies for %s, another role's address", id, other)
		}
	}
	if _, err := NewRoles(RolesConfig{Namespace: ns, Client: a.cs, Image: "x", TLS: &provision.TLS{Issue: issue}}); err == nil || !strings.Contains(err.Error(), "CA") {
		t.Errorf("NewRoles with Issue and no CA: %v", err)
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
	if sc := pod.SecurityContext; sc == nil || sc.FSGroup != nil {
		t.Errorf("pod security context %+v: fsGroup set without TLS", sc)
	}
	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
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

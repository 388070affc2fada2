package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	awsprov "tide/autoscale/provision/aws"
	k8sprov "tide/autoscale/provision/kubernetes"
	"tide/cluster"
	"tide/tlsconf"
)

// withTestTLS sets the global --tls-* flags to a certificate for
// 127.0.0.1 of a new CA, loads them as tide log up does, and puts the
// globals back when t ends.
func withTestTLS(t *testing.T) tlsconf.Files {
	t.Helper()
	dir := t.TempDir()
	if err := tlsconf.InitCA(dir, "test", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsconf.IssueNode(dir, tlsconf.NodeCert{Name: "role", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}); err != nil {
		t.Fatal(err)
	}
	files := tlsconf.Files{CA: filepath.Join(dir, tlsconf.CAFile), Cert: tlsconf.CertFile(dir, "role"), Key: tlsconf.KeyFile(dir, "role")}
	oldFiles, oldCerts := globalTLS, logCerts
	t.Cleanup(func() { globalTLS, logCerts = oldFiles, oldCerts })
	globalTLS = files
	if _, err := setLogTLS(); err != nil {
		t.Fatal(err)
	}
	return files
}

// TestRoleHostsTakeTLS: tide log up --provisioner kubernetes and aws take
// --tls-* (they used to refuse it), and their role hosts check a role's
// health over mutual TLS: a role serving the CA's certificate is healthy,
// one serving plain HTTP never is.
func TestRoleHostsTakeTLS(t *testing.T) {
	withTestTLS(t)
	home := t.TempDir()
	kubeconfig := filepath.Join(home, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: ns1}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", kubeconfig)
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")

	// A role's HTTP port as tide log serve runs it with --tls-*, and one
	// in plain text.
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	go (&http.Server{Handler: ok}).Serve(tls.NewListener(tlsLn, logCerts.Server()))
	defer tlsLn.Close()
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go (&http.Server{Handler: ok}).Serve(plainLn)
	defer plainLn.Close()

	for _, f := range []*roleHostFlags{
		{provisioner: "kubernetes", k8sImage: "tide:test", k8sPull: "IfNotPresent", k8sCluster: "tide-log"},
		{provisioner: "aws", awsRegion: "us-east-1", awsEndpoint: "http://127.0.0.1:1", awsSubnet: "subnet-1", awsImage: "ami-1", awsType: "t3.small", awsCluster: "tide-log"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		h, err := f.open(ctx, t.TempDir(), "127.0.0.1")
		cancel()
		if err != nil {
			t.Errorf("--provisioner %s with --tls-*: %v", f.provisioner, err)
			continue
		}
		pr, isPR := h.(*cluster.ProvisionedRoles)
		if !isPR || pr.Healthy == nil {
			t.Errorf("--provisioner %s: role host %T checks health in plain text", f.provisioner, h)
			continue
		}
		switch pr.C.(type) {
		case *k8sprov.Roles, *awsprov.Roles:
		default:
			t.Errorf("--provisioner %s: containers %T", f.provisioner, pr.C)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		if err := pr.Healthy(ctx, tlsLn.Addr().String()); err != nil {
			t.Errorf("--provisioner %s: a role serving mutual TLS is not healthy: %v", f.provisioner, err)
		}
		cancel()
		ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
		if err := pr.Healthy(ctx, plainLn.Addr().String()); err == nil {
			t.Errorf("--provisioner %s: a role serving plain HTTP counts as healthy", f.provisioner)
		}
		cancel()
	}
}

// TestRolesTLSReadsTheFiles: the material the Kubernetes and EC2 role
// hosts get is the --tls-* files' contents, and the Docker containers'
// files and flags are the same at /tls.
func TestRolesTLSReadsTheFiles(t *testing.T) {
	oldFiles := globalTLS
	t.Cleanup(func() { globalTLS = oldFiles })
	globalTLS = tlsconf.Files{}
	if m, err := rolesTLS(""); m != nil || err != nil {
		t.Errorf("without --tls-*: %v, %v", m, err)
	}
	files := withTestTLS(t)
	m, err := rolesTLS("")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		got  []byte
	}{{files.CA, m.CA}, {files.Cert, m.Cert}, {files.Key, m.Key}} {
		want, _ := os.ReadFile(c.path)
		if !bytes.Equal(c.got, want) {
			t.Errorf("%s: got %d bytes, not the file's %d", c.path, len(c.got), len(want))
		}
	}
	cf, flags, err := containerTLS()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cf["/tls/role.key"], m.Key) || len(cf) != 3 {
		t.Errorf("container files %v", slices.Collect(maps.Keys(cf)))
	}
	want := []string{"--tls-ca", "/tls/ca.crt", "--tls-cert", "/tls/role.crt", "--tls-key", "/tls/role.key"}
	if !slices.Equal(flags, want) {
		t.Errorf("container flags %q, want %q", flags, want)
	}
	globalTLS.Key = filepath.Join(t.TempDir(), "missing.key")
	if _, err := rolesTLS(""); err == nil {
		t.Error("a missing key file is not an error")
	}
}

// TestRolesTLSIssues: with --tls-ca-key each role's certificate is issued
// for its address by the CA of --tls-ca; a key that is not the CA's is
// refused at once, and --tls-ca-key wants kubernetes or aws and --tls-*.
func TestRolesTLSIssues(t *testing.T) {
	files := withTestTLS(t)
	caKey := filepath.Join(filepath.Dir(files.CA), tlsconf.CAKeyFile)
	m, err := rolesTLS(caKey)
	if err != nil {
		t.Fatal(err)
	}
	if m.Issue == nil {
		t.Fatal("no Issue with --tls-ca-key")
	}
	one, err := m.For("10.96.7.8")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(one.Cert, one.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(m.CA)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "10.96.7.8", Roots: pool}); err != nil {
		t.Errorf("the issued certificate does not verify for its address: %v", err)
	}
	if _, err := rolesTLS(files.Key); err == nil {
		t.Error("--tls-ca-key with the role's key, not the CA's, accepted")
	}

	for _, c := range []struct {
		f    roleHostFlags
		want string
	}{
		{roleHostFlags{provisioner: "docker", tlsCAKey: caKey}, "applies to --provisioner kubernetes and aws"},
		{roleHostFlags{provisioner: "local", tlsCAKey: caKey}, "applies to --provisioner kubernetes and aws"},
	} {
		if err := c.f.checkFlags(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--provisioner %s --tls-ca-key: %v, want %q", c.f.provisioner, err, c.want)
		}
	}
	globalTLS = tlsconf.Files{}
	f := roleHostFlags{provisioner: "kubernetes", tlsCAKey: caKey}
	if err := f.checkFlags(); err == nil || !strings.Contains(err.Error(), "needs --tls-ca") {
		t.Errorf("--tls-ca-key without --tls-ca: %v", err)
	}

	// With --tls-ca and --tls-ca-key only, tide log up issues its own
	// certificate for this machine's addresses, which roles reply to.
	globalTLS = tlsconf.Files{CA: files.CA}
	dir := t.TempDir()
	if err := f.issueOwn(dir); err != nil {
		t.Fatal(err)
	}
	if globalTLS.Cert != filepath.Join(dir, "tls", "up.crt") || globalTLS.Key != filepath.Join(dir, "tls", "up.key") {
		t.Fatalf("after issueOwn, --tls-* are %+v", globalTLS)
	}
	if st, err := os.Stat(globalTLS.Key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("own key %v (%v), want mode 0600", st, err)
	}
	own, err := tlsconf.Load(globalTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := own.Leaf().VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("own certificate: %v", err)
	}
	if _, err := own.Leaf().Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("own certificate is not the CA's: %v", err)
	}
	// Given --tls-cert and --tls-key, it issues nothing.
	globalTLS = files
	if err := f.issueOwn(t.TempDir()); err != nil || globalTLS != files {
		t.Errorf("issueOwn with --tls-cert: %v, flags %+v", err, globalTLS)
	}
}

// TestCheckK8sTLS: tide autoscale --provisioner kubernetes with --tls-*
// stops at start on a workload whose pods would not get TLS, and starts
// when it cannot reach the API server (Launch checks again).
func TestCheckK8sTLS(t *testing.T) {
	ctx := context.Background()
	one := int32(1)
	lbls := map[string]string{"app": "tide"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "tide", Namespace: "tide"},
		Spec: appsv1.StatefulSetSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "tide", Args: []string{"node"}}}}}},
	}
	p, err := k8sprov.New(k8sprov.Config{Namespace: "tide", Name: "tide", Client: k8sfake.NewClientset(sts), TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkK8sTLS(ctx, p); !errors.Is(err, k8sprov.ErrNoTLS) {
		t.Errorf("a workload without TLS: %v, want ErrNoTLS", err)
	}
	gone, err := k8sprov.New(k8sprov.Config{Namespace: "tide", Name: "tide", Client: k8sfake.NewClientset(), TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkK8sTLS(ctx, gone); err != nil {
		t.Errorf("an API error stops the controller at start: %v", err)
	}
}

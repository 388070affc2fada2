package kubernetes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"tide/autoscale/provision"
)

// tlsMount is a Secret volume at /tls.
func tlsMount(spec *corev1.PodSpec) {
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tide-tls"}}})
	c := &spec.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "tls", MountPath: "/tls", ReadOnly: true})
}

// TestLaunchChecksTLS: with Config.TLS, Launch scales only a workload
// whose pod template starts tide with the three --tls-* files on a volume
// mount (args or environment), and says what is missing otherwise; without
// it, the template is not looked at.
func TestLaunchChecksTLS(t *testing.T) {
	flags := []string{"node", "--tls-ca", "/tls/ca.crt", "--tls-cert", "/tls/role.crt", "--tls-key", "/tls/role.key"}
	for _, c := range []struct {
		name string
		tmpl func(*corev1.PodSpec)
		want string // empty: Launch succeeds
	}{
		{"no TLS", func(*corev1.PodSpec) {}, "no --tls-ca, --tls-cert, --tls-key"},
		{"no key", func(s *corev1.PodSpec) { s.Containers[0].Args = flags[:5]; tlsMount(s) }, "no --tls-key"},
		{"not mounted", func(s *corev1.PodSpec) { s.Containers[0].Args = flags }, "--tls-ca /tls/ca.crt, --tls-cert /tls/role.crt, --tls-key /tls/role.key on no volume mount"},
		{"args", func(s *corev1.PodSpec) { s.Containers[0].Args = flags; tlsMount(s) }, ""},
		{"args with =", func(s *corev1.PodSpec) {
			s.Containers[0].Args = []string{"node", "--tls-ca=/tls/ca.crt", "--tls-cert=/tls/role.crt", "--tls-key=/tls/role.key"}
			tlsMount(s)
		}, ""},
		{"env", func(s *corev1.PodSpec) {
			s.Containers[0].Env = []corev1.EnvVar{{Name: "TIDE_TLS_CA", Value: "/tls/ca.crt"}, {Name: "TIDE_TLS_CERT", Value: "/tls/role.crt"}, {Name: "TIDE_TLS_KEY", Value: "/tls/role.key"}}
			tlsMount(s)
		}, ""},
		{"a sidecar has it", func(s *corev1.PodSpec) {
			tlsMount(s)
			side := s.Containers[0]
			side.Name, side.Args = "side", flags
			s.Containers = append(s.Containers, side)
		}, ""},
	} {
		for _, kind := range []string{KindStatefulSet, KindDeployment} {
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				ctx := testCtx(t)
				var obj interface{ GetName() string }
				var res string
				switch kind {
				case KindStatefulSet:
					sts := statefulSet(ns, "tide", "tide", 1)
					c.tmpl(&sts.Spec.Template.Spec)
					obj, res = sts, "statefulsets"
				default:
					d := deployment(ns, "tide", 1)
					c.tmpl(&d.Spec.Template.Spec)
					obj, res = d, "deployments"
				}
				var cl *cluster
				if sts, ok := obj.(*appsv1.StatefulSet); ok {
					cl = newCluster(t, ns, sts)
				} else {
					cl = newCluster(t, ns, obj.(*appsv1.Deployment))
				}
				p, err := New(Config{Namespace: ns, Kind: kind, Name: "tide", Client: cl.cs, Drain: cl.drainFunc, TLS: true, PollInterval: time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				_, err = p.Launch(ctx, provision.Spec{})
				if c.want == "" {
					if err != nil {
						t.Fatalf("Launch: %v", err)
					}
					if r := cl.replicas(res, "tide"); r != 2 {
						t.Errorf("replicas %d after Launch, want 2", r)
					}
					return
				}
				if !errors.Is(err, ErrNoTLS) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("Launch = %v, want ErrNoTLS saying %q", err, c.want)
				}
				if r := cl.replicas(res, "tide"); r != 1 {
					t.Errorf("replicas %d after a refused Launch, want 1", r)
				}
				// Without TLS the same workload scales.
				p, _ = New(Config{Namespace: ns, Kind: kind, Name: "tide", Client: cl.cs, Drain: cl.drainFunc, PollInterval: time.Millisecond})
				if _, err := p.Launch(ctx, provision.Spec{}); err != nil {
					t.Errorf("Launch without TLS: %v", err)
				}
			})
		}
	}
}

// TestTLSDrainByName: with TLS, Drain reaches a StatefulSet pod at its
// DNS name, which the nodes' certificate names, not at its pod IP.
func TestTLSDrainByName(t *testing.T) {
	ctx := testCtx(t)
	sts := statefulSet(ns, "tide", "tide", 2)
	sts.Spec.Template.Spec.Containers[0].Args = []string{"node", "--tls-ca", "/tls/ca.crt", "--tls-cert", "/tls/role.crt", "--tls-key", "/tls/role.key"}
	tlsMount(&sts.Spec.Template.Spec)
	c := newCluster(t, ns, sts)
	p, err := New(Config{Namespace: ns, Name: "tide", Client: c.cs, Drain: c.drainFunc, TLS: true})
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
	want := "tide-1.tide." + ns + ".svc:5058"
	if got := c.drainedAddrs(); len(got) != 1 || got[0] != want {
		t.Errorf("drained %v, want %s", got, want)
	}
}

// TestTLSManifests: the StatefulSets of deploy/kubernetes/tls pass
// CheckTLS, and those of deploy/kubernetes (plain text) do not; the TLS
// autoscaler runs with --tls-* files on its Secret mount.
func TestTLSManifests(t *testing.T) {
	ctx := testCtx(t)
	for _, c := range []struct {
		file string
		ok   bool
	}{{filepath.Join(manifestDir, "tls", "10-nodes.yaml"), true}, {filepath.Join(manifestDir, "10-nodes.yaml"), false}} {
		data, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeAll(filepath.Base(c.file), data)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, o := range objs {
			sts, ok := o.obj.(*appsv1.StatefulSet)
			if !ok {
				continue
			}
			n++
			p, err := New(Config{Namespace: sts.Namespace, Name: sts.Name, Client: newCluster(t, sts.Namespace, sts).cs, TLS: true})
			if err != nil {
				t.Fatal(err)
			}
			err = p.CheckTLS(ctx)
			if c.ok && err != nil {
				t.Errorf("%s: statefulset %s: %v", c.file, sts.Name, err)
			}
			if !c.ok && !errors.Is(err, ErrNoTLS) {
				t.Errorf("%s: statefulset %s without TLS passes CheckTLS: %v", c.file, sts.Name, err)
			}
			if c.ok && sts.Spec.Template.Spec.SecurityContext.FSGroup == nil {
				t.Errorf("%s: statefulset %s has no fsGroup: its user could not read the Secret's files", c.file, sts.Name)
			}
		}
		if n != 2 {
			t.Errorf("%s: %d statefulsets, want 2", c.file, n)
		}
	}

	file := filepath.Join(manifestDir, "tls", "20-autoscaler.yaml")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(filepath.Base(file), data)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range objs {
		if d, ok := o.obj.(*appsv1.Deployment); ok {
			found = true
			if err := containerTLS(d.Spec.Template.Spec.Containers[0]); err != nil {
				t.Errorf("%s: the autoscaler: %v", file, err)
			}
		}
	}
	if !found {
		t.Errorf("%s: no Deployment", file)
	}
}

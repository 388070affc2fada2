package kubernetes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"tide/autoscale/provision"
)

// Labels of the objects Roles creates for a tide log's role instance.
const (
	// RolesAppLabel is app.kubernetes.io/name, RolesApp on every object.
	RolesAppLabel = "app.kubernetes.io/name"
	RolesApp      = "tide-log"
	// ClusterLabel names the log (RolesConfig.Cluster) an object serves,
	// so that several logs share a namespace and Cleanup finds its own.
	ClusterLabel = "tide.log/cluster"
	// InstanceLabel names the role instance: its Service and Deployment
	// share the name, and the Service selects the pod by it.
	InstanceLabel = "tide.log/instance"
	// KindLabel is the role's kind (batcher, leader, proxy, ...), set
	// when the instance starts.
	KindLabel = "tide.log/kind"
	// RoleAnnotation is the role's name as tide log up gives it.
	RoleAnnotation = "tide.log/role"
)

// Ports of a role pod: every role listens on RolePort, and its process
// serves HTTP (/healthz, /status, /metrics) on RoleHTTPPort, on the pod's
// own interfaces and on its Service's ClusterIP alike.
const (
	RolePort     = 5057
	RoleHTTPPort = 5058
)

// RolesConfig configures Roles.
type RolesConfig struct {
	// Namespace of the role objects. Default: the kubeconfig context's, or
	// in a pod its own; with an injected Client, "default".
	Namespace string
	// Client talks to the API server. Default: built from Kubeconfig,
	// $KUBECONFIG, ~/.kube/config or the in-cluster service account.
	Client     kubernetes.Interface
	Kubeconfig string
	// Image of the role pods: the tide binary as entrypoint (the image of
	// deploy/kubernetes, tide:latest). Required.
	Image string
	// PullPolicy is the container's imagePullPolicy. Default IfNotPresent.
	PullPolicy corev1.PullPolicy
	// Cluster names the log: the prefix of every object name and the value
	// of ClusterLabel. A lowercase DNS label of at most 40 characters.
	// Default "tide-log".
	Cluster string
	// DataDir is where the pod mounts its emptyDir volume, the role's
	// --data-dir. Default /data.
	DataDir string
	// TLS, when set, is the mutual TLS material of the roles: Run puts a
	// role's files (with TLS.Issue, a certificate issued for its
	// ClusterIP) in the Secret <instance>-tls, created or updated, mounts
	// it read-only at TLSMountPath in the pod, and adds the --tls-* flags
	// naming the files there to the role's arguments; Remove and Cleanup
	// delete it. Peers dial a role at its Service's ClusterIP, so without
	// Issue the one certificate names every ClusterIP a role may get.
	TLS *provision.TLS
	// Log receives progress; nil uses slog.Default().
	Log *slog.Logger
}

// TLSMountPath is where a role pod mounts the TLS Secret: the files
// ca.crt, role.crt and role.key, as containerTLS of tide log up names
// them for Docker too.
const TLSMountPath = "/tls"

var dnsLabel = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

// Roles runs the role processes of a tide log as Kubernetes objects, one
// ClusterIP Service and one single-replica Deployment per role instance.
// It implements cluster.Containers, so that cluster.ProvisionedRoles (with
// Bind "0.0.0.0") starts and stops roles through it:
//
//   - Reserve creates the Services. The ClusterIP the API server assigns
//     a Service when it is created is the role's address (port RolePort,
//     HTTP on RoleHTTPPort): known before any pod exists, and kept for
//     the instance's life, whichever pod serves it. The Services publish
//     not-ready addresses, so peers reach a role as soon as its pod runs.
//   - Run creates the Deployment (Recreate, so never two pods of one
//     role) whose pod runs `tide log serve` listening on 0.0.0.0 and
//     identifying as the ClusterIP, with a CPU limit, a readiness probe
//     on /healthz and an emptyDir volume for its state. The pod has no
//     service account token: roles never call the API server. With
//     RolesConfig.TLS, Run first writes the role's TLS Secret, which the
//     pod mounts at TLSMountPath, and the role runs with the --tls-*
//     flags naming its files.
//   - Remove deletes the Deployment (its pod gets SIGTERM), the Service
//     and the TLS Secret;
//     Release deletes Services no Deployment took; Cleanup deletes every
//     object of the Cluster.
//
// A role's state lives in its pod's emptyDir: it survives container
// restarts, not the pod's rescheduling onto another node.
type Roles struct {
	c       kubernetes.Interface
	ns      string
	image   string
	pull    corev1.PullPolicy
	cluster string
	dataDir string
	tls     *provision.TLS
	log     *slog.Logger

	mu    sync.Mutex
	byIP  map[string]string // ClusterIP -> instance (Service) name, for reserved instances
	taken map[string]bool   // instance names a Deployment took
}

// NewRoles checks cfg and returns Roles. It does not call the API server.
func NewRoles(cfg RolesConfig) (*Roles, error) {
	r := &Roles{c: cfg.Client, ns: cfg.Namespace, image: cfg.Image, pull: cfg.PullPolicy, cluster: cfg.Cluster,
		dataDir: cfg.DataDir, tls: cfg.TLS, log: cfg.Log, byIP: map[string]string{}, taken: map[string]bool{}}
	if r.tls != nil {
		if err := r.tls.Validate(); err != nil {
			return nil, fmt.Errorf("kubernetes: %w", err)
		}
	}
	if r.image == "" {
		return nil, errors.New("kubernetes: the image of the role pods is required (e.g. tide:latest, see deploy/kubernetes)")
	}
	if r.pull == "" {
		r.pull = corev1.PullIfNotPresent
	}
	switch r.pull {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return nil, fmt.Errorf("kubernetes: image pull policy %q: want Always, IfNotPresent or Never", r.pull)
	}
	if r.cluster == "" {
		r.cluster = "tide-log"
	}
	if len(r.cluster) > 40 || !dnsLabel.MatchString(r.cluster) {
		return nil, fmt.Errorf("kubernetes: cluster name %q: want a lowercase DNS label (a-z, 0-9, '-', starting with a letter) of at most 40 characters", r.cluster)
	}
	if r.dataDir == "" {
		r.dataDir = "/data"
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("provisioner", "kubernetes", "cluster", r.cluster)
	if r.c == nil {
		c, ns, err := defaultClient(cfg.Kubeconfig)
		if err != nil {
			return nil, err
		}
		r.c = c
		if r.ns == "" {
			r.ns = ns
		}
	}
	if r.ns == "" {
		r.ns = "default"
	}
	return r, nil
}

// defaultClient builds a client from kubeconfig (or the usual places, or
// the in-cluster service account) and returns it with the namespace the
// configuration names.
func defaultClient(kubeconfig string) (kubernetes.Interface, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes: no API server configuration (kubeconfig or in-cluster service account): %w", err)
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes: client: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes: namespace: %w", err)
	}
	return c, ns, nil
}

// Name is "kubernetes".
func (r *Roles) Name() string { return "kubernetes" }

// Namespace is where the role objects go.
func (r *Roles) Namespace() string { return r.ns }

func (r *Roles) labels(name string) map[string]string {
	return map[string]string{RolesAppLabel: RolesApp, ClusterLabel: r.cluster, InstanceLabel: name}
}

// Reserve creates n Services and returns their ClusterIPs. On an error it
// deletes the Services it created.
func (r *Roles) Reserve(ctx context.Context, n int) ([]string, error) {
	var ips []string
	for range n {
		ip, err := r.reserve(ctx)
		if err != nil {
			r.Release(ips...)
			return nil, err
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

func (r *Roles) reserve(ctx context.Context) (string, error) {
	for attempt := 0; ; attempt++ {
		var b [3]byte
		rand.Read(b[:])
		name := r.cluster + "-" + hex.EncodeToString(b[:])
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.ns, Labels: r.labels(name)},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeClusterIP,
				Selector: map[string]string{RolesAppLabel: RolesApp, InstanceLabel: name},
				Ports: []corev1.ServicePort{
					{Name: "role", Protocol: corev1.ProtocolTCP, Port: RolePort, TargetPort: intstr.FromInt32(RolePort)},
					{Name: "http", Protocol: corev1.ProtocolTCP, Port: RoleHTTPPort, TargetPort: intstr.FromInt32(RoleHTTPPort)},
				},
				// Peers must reach a role while it starts: readiness
				// only reports it.
				PublishNotReadyAddresses: true,
			},
		}
		got, err := r.c.CoreV1().Services(r.ns).Create(ctx, svc, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return "", r.apiErr(err, "create", "services", name)
		}
		ip := got.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone {
			r.deleteService(ctx, name)
			return "", fmt.Errorf("kubernetes: service %s/%s was given no ClusterIP (%q), which would be the role's address", r.ns, name, ip)
		}
		r.mu.Lock()
		r.byIP[ip] = name
		r.mu.Unlock()
		r.log.Info("service created", "service", name, "clusterIP", ip)
		return ip, nil
	}
}

// Release deletes the Services of reserved addresses that no Deployment
// took.
func (r *Roles) Release(ips ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ip := range ips {
		r.mu.Lock()
		name, ok := r.byIP[ip]
		taken := r.taken[name]
		if ok && !taken {
			delete(r.byIP, ip)
		}
		r.mu.Unlock()
		if !ok || taken {
			continue
		}
		if err := r.deleteService(ctx, name); err != nil {
			r.log.Warn("release: delete service", "service", name, "err", err)
		}
	}
}

// Run creates the Deployment of the instance whose Service has ClusterIP
// ip: one pod running `tide args...` (args from cluster.ProvisionedRoles,
// listening on 0.0.0.0), of kind kind, limited to nanoCPUs billionths of
// a CPU (0: no limit). It returns the instance's name, the ID Remove
// takes.
func (r *Roles) Run(ctx context.Context, role, kind, ip string, nanoCPUs int64, args []string) (string, error) {
	r.mu.Lock()
	name, ok := r.byIP[ip]
	r.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("kubernetes: no reserved service has ClusterIP %s (Reserve hands out the addresses Run takes)", ip)
	}
	if !dnsLabel.MatchString(kind) {
		return "", fmt.Errorf("kubernetes: role kind %q is not a label value", kind)
	}
	lbl := r.labels(name)
	lbl[KindLabel] = kind
	// The Service says which kind it serves too (kubectl get svc -l).
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{KindLabel: kind}}})
	if _, err := r.c.CoreV1().Services(r.ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return "", r.apiErr(err, "patch", "services", name)
	}
	if err := r.writeSecret(ctx, name, ip); err != nil {
		return "", err
	}
	d := r.deployment(name, role, ip, lbl, nanoCPUs, args)
	if _, err := r.c.AppsV1().Deployments(r.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		if r.tls != nil {
			if derr := r.deleteSecret(ctx, name); derr != nil {
				r.log.Warn("run failed: delete its TLS secret", "secret", secretName(name), "err", derr)
			}
		}
		return "", r.apiErr(err, "create", "deployments", name)
	}
	r.mu.Lock()
	r.taken[name] = true
	r.mu.Unlock()
	r.log.Info("deployment created", "deployment", name, "kind", kind, "addr", ip)
	return name, nil
}

// deployment is the Deployment of role instance name.
func (r *Roles) deployment(name, role, ip string, lbl map[string]string, nanoCPUs int64, args []string) *appsv1.Deployment {
	one := int32(1)
	no, yes := false, true
	uid := int64(65534)
	grace := int64(30)
	res := corev1.ResourceRequirements{}
	if nanoCPUs > 0 {
		res.Limits = corev1.ResourceList{corev1.ResourceCPU: *resource.NewMilliQuantity(max(nanoCPUs/1e6, 1), resource.DecimalSI)}
	}
	podSec := &corev1.PodSecurityContext{RunAsNonRoot: &yes, RunAsUser: &uid, RunAsGroup: &uid}
	mounts := []corev1.VolumeMount{{Name: "data", MountPath: r.dataDir}}
	volumes := []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	if r.tls != nil {
		// Readable by the pod's group (fsGroup), not by others.
		mode := int32(0o440)
		mounts = append(mounts, corev1.VolumeMount{Name: "tls", MountPath: TLSMountPath, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secretName(name), DefaultMode: &mode}}})
		args = append(slices.Clone(args), r.tls.Flags(TLSMountPath)...)
		podSec.FSGroup = &uid
	}
	// With TLS the role's HTTP port takes mutual TLS only off loopback,
	// which the kubelet does not speak: its readiness is then that the
	// port accepts connections.
	probe := corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}
	if r.tls != nil {
		probe = corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.ns, Labels: lbl,
			Annotations: map[string]string{RoleAnnotation: role, "tide.log/addr": fmt.Sprintf("%s:%d", ip, RolePort)}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			// Never two pods of one role at once.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{RolesAppLabel: RolesApp, InstanceLabel: name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbl},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken:  &no,
					EnableServiceLinks:            &no, // no env var per Service: a log has many
					TerminationGracePeriodSeconds: &grace,
					SecurityContext:               podSec,
					Containers: []corev1.Container{{
						Name:            "role",
						Image:           r.image,
						ImagePullPolicy: r.pull,
						Args:            args,
						Ports: []corev1.ContainerPort{
							{Name: "role", ContainerPort: RolePort, Protocol: corev1.ProtocolTCP},
							{Name: "http", ContainerPort: RoleHTTPPort, Protocol: corev1.ProtocolTCP},
						},
						Resources: res,
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  probe,
							PeriodSeconds: 2, FailureThreshold: 3,
						},
						VolumeMounts: mounts,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: &no,
							ReadOnlyRootFilesystem:   &yes,
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
					Volumes: volumes,
				},
			},
		},
	}
}

// secretName is the name of the TLS Secret of instance name.
func secretName(name string) string { return name + "-tls" }

// writeSecret creates the TLS Secret of instance name, whose address is
// ip, or updates one an earlier process left; without TLS it does
// nothing.
func (r *Roles) writeSecret(ctx context.Context, name, ip string) error {
	if r.tls == nil {
		return nil
	}
	t, err := r.tls.For(ip)
	if err != nil {
		return fmt.Errorf("kubernetes: role %s: %w", name, err)
	}
	sn := secretName(name)
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: sn, Namespace: r.ns, Labels: r.labels(name)},
		Type:       corev1.SecretTypeOpaque,
		Data:       t.Files(),
	}
	_, err = r.c.CoreV1().Secrets(r.ns).Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		if _, err = r.c.CoreV1().Secrets(r.ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
			return r.apiErr(err, "update", "secrets", sn)
		}
	} else if err != nil {
		return r.apiErr(err, "create", "secrets", sn)
	}
	r.log.Info("TLS secret written", "secret", sn)
	return nil
}

func (r *Roles) deleteSecret(ctx context.Context, name string) error {
	sn := secretName(name)
	err := r.c.CoreV1().Secrets(r.ns).Delete(ctx, sn, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return r.apiErr(err, "delete", "secrets", sn)
	}
	return nil
}

// Remove deletes instance id's Deployment (its pod is sent SIGTERM) and
// Service. An instance that is gone already is removed.
func (r *Roles) Remove(ctx context.Context, id string) error {
	bg := metav1.DeletePropagationBackground
	err := r.c.AppsV1().Deployments(r.ns).Delete(ctx, id, metav1.DeleteOptions{PropagationPolicy: &bg})
	if err != nil && !apierrors.IsNotFound(err) {
		return r.apiErr(err, "delete", "deployments", id)
	}
	if err := r.deleteService(ctx, id); err != nil {
		return err
	}
	if r.tls != nil {
		if err := r.deleteSecret(ctx, id); err != nil {
			return err
		}
	}
	r.mu.Lock()
	for ip, name := range r.byIP {
		if name == id {
			delete(r.byIP, ip)
		}
	}
	delete(r.taken, id)
	r.mu.Unlock()
	r.log.Info("instance removed", "instance", id)
	return nil
}

func (r *Roles) deleteService(ctx context.Context, name string) error {
	err := r.c.CoreV1().Services(r.ns).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return r.apiErr(err, "delete", "services", name)
	}
	return nil
}

// Cleanup deletes every Deployment and Service of the cluster, reserved or
// running, and with TLS their Secrets, including those of an earlier
// process that did not clean up.
func (r *Roles) Cleanup(ctx context.Context) error {
	sel := metav1.ListOptions{LabelSelector: RolesAppLabel + "=" + RolesApp + "," + ClusterLabel + "=" + r.cluster}
	var errs []error
	ds, err := r.c.AppsV1().Deployments(r.ns).List(ctx, sel)
	if err != nil {
		return r.apiErr(err, "list", "deployments", "")
	}
	svcs, err := r.c.CoreV1().Services(r.ns).List(ctx, sel)
	if err != nil {
		return r.apiErr(err, "list", "services", "")
	}
	names := map[string]bool{}
	for _, d := range ds.Items {
		names[d.Name] = true
	}
	for _, s := range svcs.Items {
		names[s.Name] = true
	}
	if r.tls != nil {
		secs, err := r.c.CoreV1().Secrets(r.ns).List(ctx, sel)
		if err != nil {
			return r.apiErr(err, "list", "secrets", "")
		}
		for _, s := range secs.Items {
			if name := s.Labels[InstanceLabel]; name != "" && secretName(name) == s.Name {
				names[name] = true
			}
		}
	}
	for name := range names {
		if err := r.Remove(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// apiErr names the request that failed, and the RBAC rule it needs when
// the API server forbade it.
func (r *Roles) apiErr(err error, verb, res, name string) error {
	what := res + " in namespace " + r.ns
	if name != "" {
		what = res + " " + r.ns + "/" + name
	}
	if apierrors.IsForbidden(err) {
		group := `"" (core)`
		if res == "deployments" {
			group = "apps"
		}
		return fmt.Errorf("kubernetes: %s %s: forbidden: the service account needs verb %q on %s in API group %s (see deploy/kubernetes/log): %w", verb, what, verb, res, group, err)
	}
	return fmt.Errorf("kubernetes: %s %s: %w", verb, what, err)
}

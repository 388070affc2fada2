// Package kubernetes runs tide nodes as the pods of a Kubernetes
// StatefulSet (the default) or Deployment, and scales them through the
// workload's scale subresource.
//
// # Launch
//
// Launch raises the workload's replicas by one. The node's flags (--join,
// --token, --capacity, --replicas and the rest of provision.Spec) come from
// the pod template, not from Launch: in the manifests of deploy/kubernetes
// every autoscaled pod joins the ring through the seed pod
// tide-seed-0.tide.<namespace>.svc:5057. Launch therefore ignores
// Spec.Join, Spec.Token, Spec.Capacity, Spec.Replicas and Spec.Extra, and
// Spec.Name too: Kubernetes names the pods.
//
// For a StatefulSet the new pod's name is known before it exists:
// <name>-<ordinal>, where the ordinal is the old replica count (plus
// spec.ordinals.start). Launch returns at once, with the addresses the pod
// will have (see Addresses below) and State pending. For a Deployment the
// name is random, so Launch waits until the new pod exists and has an IP.
//
// # Addresses
//
// A pod with a stable DNS name (a StatefulSet pod has spec.hostname and
// spec.subdomain set from the StatefulSet's governing headless service)
// gets HTTPAddr <pod>.<service>.<namespace>.svc:<HTTPPort> and ChordAddr
// <pod>.<service>.<namespace>.svc:<ChordPort>; these are the names the
// nodes advertise to each other in the manifests, and they resolve from
// inside the cluster, where the controller runs. Config.Service overrides
// the service name. Any other pod, or every pod when Config.UsePodIP is
// set, gets <podIP>:<port>, which is empty until the pod has an IP.
//
// # Scaling down
//
// A StatefulSet only ever removes its highest ordinal when its replicas are
// lowered, so scale-down is: Victim (the highest ordinal), Drain it,
// Terminate it. Drain and Terminate refuse any other pod of the
// StatefulSet, and any pod that is not the StatefulSet's (such as the seed),
// with an error that wraps ErrNotRemovable.
//
// For a Deployment any pod may go: Terminate sets the pod's
// controller.kubernetes.io/pod-deletion-cost annotation to the lowest
// int32 before lowering the replicas, so the ReplicaSet removes that pod.
// The ReplicaSet ranks pods by scheduling, phase and readiness before it
// looks at the deletion cost, so a pod that is not ready (still starting)
// would be removed ahead of the drained one if the drained pod still
// counted as ready; the controller should not scale down while a pod is
// starting.
//
// Drain calls the node's POST /internal/leave at <podIP>:<HTTPPort> (with
// TLS, at the pod's DNS name); the
// node hands off its data and exits. The pod's restart policy then starts
// it again and, its data directory still holding its token, it rejoins the
// ring empty, so Terminate should follow Drain without delay. Drain marks
// the pod with the annotation tide/draining, and List reports such a pod as
// draining, so a controller that crashed between Drain and Terminate finds
// it again.
//
// Every method is safe to repeat: draining a pod that is gone, or
// terminating a pod whose removal was already requested, succeeds without
// doing anything.
//
// # TLS
//
// The provisioner starts no pod itself, so it gives nodes no certificate:
// the workload's pod template does (deploy/kubernetes/tls mounts a Secret
// and sets TIDE_TLS_*). With Config.TLS, Launch refuses a workload whose
// template does not (CheckTLS, ErrNoTLS), and Drain reaches a pod at its
// DNS name, the name its certificate carries, instead of its pod IP.
//
// # Log roles
//
// Roles runs the role processes of a tide log instead: each role instance
// is a ClusterIP Service, whose ClusterIP is the role's address, and a
// one-pod Deployment behind it (see Roles, and deploy/kubernetes/log).
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"tide/autoscale/provision"
)

// Workload kinds.
const (
	KindStatefulSet = "StatefulSet"
	KindDeployment  = "Deployment"
)

// Annotations the provisioner reads and writes on pods.
const (
	// DeletionCostAnnotation makes a ReplicaSet remove the pod with the
	// lowest cost first.
	DeletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"
	// DrainingAnnotation marks a pod Drain was called on (RFC 3339 time).
	DrainingAnnotation = "tide/draining"
	// ScaledDownToAnnotation records, on a Deployment's pod, the replica
	// count Terminate lowered the Deployment to for it, so a repeated
	// Terminate does not lower it again.
	ScaledDownToAnnotation = "tide/scaled-down-to"
)

// ErrNoTLS reports a workload whose pods would start without the mutual
// TLS the controller was told the nodes speak (Config.TLS).
var ErrNoTLS = errors.New("kubernetes: the pod template does not give tide mutual TLS")

// errPodGone stops a scale-down whose pod disappeared meanwhile.
var errPodGone = errors.New("pod gone")

// lowestDeletionCost is the lowest pod-deletion-cost the API accepts.
var lowestDeletionCost = strconv.Itoa(math.MinInt32)

// ErrNotRemovable reports a pod that lowering the workload's replicas would
// not remove: a StatefulSet pod below the highest ordinal, or a pod that
// does not belong to the workload.
var ErrNotRemovable = errors.New("kubernetes: pod cannot be removed by scaling down")

// DrainFunc asks the tide node at httpAddr (host:port) to leave the ring
// and returns once it has handed its data off. provision.DrainNode is the
// default.
type DrainFunc func(ctx context.Context, httpAddr string) (moved int, err error)

// Config configures a Provisioner.
type Config struct {
	// Namespace of the workload and its pods. Default: the namespace of
	// the kubeconfig context or, in a pod, the pod's own namespace; with an
	// injected Client, "default".
	Namespace string
	// Kind is "StatefulSet" (default) or "Deployment"; case does not
	// matter.
	Kind string
	// Name of the StatefulSet or Deployment. Required.
	Name string
	// Selector is the label selector of the tide pods List reports, e.g.
	// "app.kubernetes.io/name=tide". Default: the workload's own
	// spec.selector. It may select more pods than the workload's (the seed
	// pod, say): List reports them all, but only the workload's own pods
	// are ever drained and removed.
	Selector string
	// Service names the headless service of the pods' DNS names. Default:
	// the pod's spec.subdomain, which a StatefulSet sets to its
	// spec.serviceName.
	Service string
	// UsePodIP reports pod IPs instead of DNS names in HTTPAddr and
	// ChordAddr.
	UsePodIP bool
	// HTTPPort and ChordPort are the tide container's ports. Defaults
	// 5058 and 5057.
	HTTPPort  int
	ChordPort int
	// Client talks to the API server. Default: built from Kubeconfig, or
	// from $KUBECONFIG / ~/.kube/config, or the in-cluster service account.
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file used when Client is nil.
	Kubeconfig string
	// Drain drains a node. Default: provision.DrainNode with HTTPClient.
	Drain DrainFunc
	// HTTPClient reaches the nodes' HTTP ports for the default Drain
	// (with TLS, a client with the controller's certificate). Default
	// http.DefaultClient.
	HTTPClient *http.Client
	// TLS says the nodes speak mutual TLS (the controller runs with
	// --tls-*). The provisioner does not create pods, it scales the
	// workload the user deployed, so it gives nodes no certificate:
	// Launch (and CheckTLS) refuse, with ErrNoTLS, a workload whose pod
	// template does not start tide with the --tls-* flags (in its args,
	// or the TIDE_TLS_* environment variables) naming files on a volume
	// mount (see deploy/kubernetes, TLS). Drain then reaches a node at
	// its DNS name (Addresses), which its certificate names, not at its
	// pod IP.
	TLS bool
	// PollInterval is how often Launch looks for a Deployment's new pod
	// (or, for a StatefulSet without a service, for the pod's IP).
	// Default 1s.
	PollInterval time.Duration
}

// Provisioner scales a StatefulSet or Deployment of tide nodes.
type Provisioner struct {
	ns, kind, name string
	service        string
	usePodIP       bool
	httpPort       int
	chordPort      int
	c              kubernetes.Interface
	drain          DrainFunc
	tls            bool
	poll           time.Duration

	mu       sync.Mutex
	selector labels.Selector // nil until resolved
}

var _ provision.Provisioner = (*Provisioner)(nil)

// New checks cfg and returns a Provisioner. It does not call the API
// server.
func New(cfg Config) (*Provisioner, error) {
	p := &Provisioner{
		ns: cfg.Namespace, name: cfg.Name, service: cfg.Service, usePodIP: cfg.UsePodIP,
		httpPort: cfg.HTTPPort, chordPort: cfg.ChordPort, c: cfg.Client, drain: cfg.Drain, tls: cfg.TLS, poll: cfg.PollInterval,
	}
	switch strings.ToLower(cfg.Kind) {
	case "", "statefulset", "statefulsets", "sts":
		p.kind = KindStatefulSet
	case "deployment", "deployments", "deploy":
		p.kind = KindDeployment
	default:
		return nil, fmt.Errorf("kubernetes: kind %q: want StatefulSet or Deployment", cfg.Kind)
	}
	if cfg.Name == "" {
		return nil, fmt.Errorf("kubernetes: the name of the %s is required", p.kind)
	}
	if p.httpPort == 0 {
		p.httpPort = 5058
	}
	if p.chordPort == 0 {
		p.chordPort = 5057
	}
	for _, port := range []struct {
		name string
		v    int
	}{{"HTTP", p.httpPort}, {"chord", p.chordPort}} {
		if port.v < 1 || port.v > 65535 {
			return nil, fmt.Errorf("kubernetes: %s port %d out of range [1, 65535]", port.name, port.v)
		}
	}
	if p.poll < 0 {
		return nil, fmt.Errorf("kubernetes: negative poll interval %s", p.poll)
	}
	if p.poll == 0 {
		p.poll = time.Second
	}
	if cfg.Selector != "" {
		sel, err := labels.Parse(cfg.Selector)
		if err != nil {
			return nil, fmt.Errorf("kubernetes: selector %q: %w", cfg.Selector, err)
		}
		if sel.Empty() {
			return nil, fmt.Errorf("kubernetes: selector %q selects every pod of the namespace", cfg.Selector)
		}
		p.selector = sel
	}
	if p.drain == nil {
		hc := cfg.HTTPClient
		p.drain = func(ctx context.Context, addr string) (int, error) { return provision.DrainNode(ctx, hc, addr) }
	}
	if p.c == nil {
		c, ns, err := defaultClient(cfg.Kubeconfig)
		if err != nil {
			return nil, err
		}
		p.c = c
		if p.ns == "" {
			p.ns = ns
		}
	}
	if p.ns == "" {
		p.ns = "default"
	}
	return p, nil
}

// Name is "kubernetes".
func (p *Provisioner) Name() string { return "kubernetes" }

// Namespace, Kind and Workload say what the provisioner scales.
func (p *Provisioner) Namespace() string { return p.ns }
func (p *Provisioner) Kind() string      { return p.kind }
func (p *Provisioner) Workload() string  { return p.name }

// Launch adds one pod to the workload. See the package documentation for
// what it returns and which Spec fields it ignores.
func (p *Provisioner) Launch(ctx context.Context, _ provision.Spec) (provision.Instance, error) {
	if err := p.CheckTLS(ctx); err != nil {
		return provision.Instance{}, err
	}
	if p.kind == KindDeployment {
		return p.launchDeployment(ctx)
	}
	sts, err := p.c.AppsV1().StatefulSets(p.ns).Get(ctx, p.name, metav1.GetOptions{})
	if err != nil {
		return provision.Instance{}, p.apiErr(err, "get", "statefulsets", p.name)
	}
	old, err := p.scale(ctx, func(r int32) (int32, bool, error) { return r + 1, true, nil })
	if err != nil {
		return provision.Instance{}, err
	}
	pod := fmt.Sprintf("%s-%d", p.name, ordinalStart(sts)+old)
	in := provision.Instance{ID: pod, State: provision.StatePending, Started: time.Now()}
	svc := p.service
	if svc == "" {
		svc = sts.Spec.ServiceName
	}
	if svc != "" && !p.usePodIP {
		in.HTTPAddr, in.ChordAddr = p.dnsAddrs(pod, svc)
		return in, nil
	}
	// No DNS name: the addresses are the pod's IP, once it has one.
	for {
		po, err := p.c.CoreV1().Pods(p.ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return in, p.apiErr(err, "get", "pods", pod)
		}
		if err == nil && po.DeletionTimestamp == nil && po.Status.PodIP != "" {
			return p.instance(po), nil
		}
		if err := p.sleep(ctx); err != nil {
			return in, fmt.Errorf("kubernetes: statefulset %s/%s scaled to %d, but pod %s has no IP yet: %w", p.ns, p.name, old+1, pod, err)
		}
	}
}

func (p *Provisioner) launchDeployment(ctx context.Context) (provision.Instance, error) {
	before, err := p.pods(ctx)
	if err != nil {
		return provision.Instance{}, err
	}
	seen := map[types.UID]bool{}
	for _, po := range before {
		seen[po.UID] = true
	}
	old, err := p.scale(ctx, func(r int32) (int32, bool, error) { return r + 1, true, nil })
	if err != nil {
		return provision.Instance{}, err
	}
	for {
		pods, err := p.pods(ctx)
		if err != nil {
			return provision.Instance{}, err
		}
		var fresh []*corev1.Pod
		for _, po := range pods {
			if !seen[po.UID] && po.DeletionTimestamp == nil && p.owns(po) {
				fresh = append(fresh, po)
			}
		}
		sort.Slice(fresh, func(i, j int) bool { return fresh[i].CreationTimestamp.Before(&fresh[j].CreationTimestamp) })
		for _, po := range fresh {
			if po.Status.PodIP != "" {
				return p.instance(po), nil
			}
		}
		if err := p.sleep(ctx); err != nil {
			return provision.Instance{}, fmt.Errorf("kubernetes: deployment %s/%s scaled to %d, but its new pod has no IP yet: %w", p.ns, p.name, old+1, err)
		}
	}
}

// Victim returns the pod the next scale-down removes, which the controller
// drains and then terminates. For a StatefulSet that is the pod with the
// highest ordinal (the instance is predicted if the pod does not exist
// yet). For a Deployment it is a pod already marked draining, if there is
// one (a scale-down a crashed controller started), else the newest pod.
func (p *Provisioner) Victim(ctx context.Context) (provision.Instance, error) {
	if p.kind == KindDeployment {
		pods, err := p.pods(ctx)
		if err != nil {
			return provision.Instance{}, err
		}
		var best *corev1.Pod
		better := func(a, b *corev1.Pod) bool {
			_, da := a.Annotations[DrainingAnnotation]
			_, db := b.Annotations[DrainingAnnotation]
			if da != db {
				return da
			}
			if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
				return b.CreationTimestamp.Before(&a.CreationTimestamp)
			}
			return a.Name > b.Name
		}
		for _, po := range pods {
			if po.DeletionTimestamp == nil && p.owns(po) && (best == nil || better(po, best)) {
				best = po
			}
		}
		if best == nil {
			return provision.Instance{}, fmt.Errorf("kubernetes: deployment %s/%s has no pod to remove", p.ns, p.name)
		}
		return p.instance(best), nil
	}
	sts, err := p.c.AppsV1().StatefulSets(p.ns).Get(ctx, p.name, metav1.GetOptions{})
	if err != nil {
		return provision.Instance{}, p.apiErr(err, "get", "statefulsets", p.name)
	}
	sc, err := p.getScale(ctx)
	if err != nil {
		return provision.Instance{}, err
	}
	if sc.Spec.Replicas < 1 {
		return provision.Instance{}, fmt.Errorf("kubernetes: statefulset %s/%s has no replicas to remove", p.ns, p.name)
	}
	name := fmt.Sprintf("%s-%d", p.name, ordinalStart(sts)+sc.Spec.Replicas-1)
	po, err := p.c.CoreV1().Pods(p.ns).Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return p.instance(po), nil
	}
	if !apierrors.IsNotFound(err) {
		return provision.Instance{}, p.apiErr(err, "get", "pods", name)
	}
	in := provision.Instance{ID: name, State: provision.StatePending}
	svc := p.service
	if svc == "" {
		svc = sts.Spec.ServiceName
	}
	if svc != "" && !p.usePodIP {
		in.HTTPAddr, in.ChordAddr = p.dnsAddrs(name, svc)
	}
	return in, nil
}

// Drain asks the node in pod in.ID to leave the ring, through the Drain
// func at <podIP>:<HTTPPort>, after marking the pod draining. A pod that
// is gone, or has no IP (no node ever ran in it), needs no drain. For a
// StatefulSet, Drain refuses a pod Terminate would refuse: draining it
// would empty a node that cannot then be removed.
func (p *Provisioner) Drain(ctx context.Context, in provision.Instance) error {
	if in.ID == "" {
		return errors.New("kubernetes: drain: instance has no pod name")
	}
	if p.kind == KindStatefulSet {
		if _, err := p.removable(ctx, in.ID); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
	}
	po, err := p.c.CoreV1().Pods(p.ns).Get(ctx, in.ID, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return p.apiErr(err, "get", "pods", in.ID)
	}
	if p.kind == KindDeployment && !p.owns(po) {
		return fmt.Errorf("kubernetes: drain: pod %s does not belong to deployment %s: %w", in.ID, p.name, ErrNotRemovable)
	}
	if po.Status.PodIP == "" {
		return nil
	}
	if _, ok := po.Annotations[DrainingAnnotation]; !ok {
		if err := p.annotate(ctx, in.ID, map[string]string{DrainingAnnotation: time.Now().UTC().Format(time.RFC3339)}); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		}
	}
	addr := net.JoinHostPort(po.Status.PodIP, strconv.Itoa(p.httpPort))
	if p.tls {
		// Its certificate names its DNS name, not the pod's IP.
		addr = p.instance(po).HTTPAddr
	}
	if _, err := p.drain(ctx, addr); err != nil {
		return fmt.Errorf("kubernetes: drain pod %s (%s): %w", in.ID, addr, err)
	}
	return nil
}

// CheckTLS checks, when Config.TLS is set, that the workload's pod
// template starts tide with mutual TLS: some container has --tls-ca,
// --tls-cert and --tls-key (as args, --flag value or --flag=value, or as
// the environment variables TIDE_TLS_CA, TIDE_TLS_CERT, TIDE_TLS_KEY),
// each naming a file under one of its volume mounts (the Secret). It
// fails with an error wrapping ErrNoTLS if none does. Without
// Config.TLS it checks nothing.
func (p *Provisioner) CheckTLS(ctx context.Context) error {
	if !p.tls {
		return nil
	}
	var tmpl corev1.PodTemplateSpec
	if p.kind == KindDeployment {
		d, err := p.c.AppsV1().Deployments(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			return p.apiErr(err, "get", "deployments", p.name)
		}
		tmpl = d.Spec.Template
	} else {
		s, err := p.c.AppsV1().StatefulSets(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			return p.apiErr(err, "get", "statefulsets", p.name)
		}
		tmpl = s.Spec.Template
	}
	var why []string
	for _, c := range tmpl.Spec.Containers {
		err := containerTLS(c)
		if err == nil {
			return nil
		}
		why = append(why, "container "+c.Name+": "+err.Error())
	}
	if len(why) == 0 {
		why = append(why, "no containers")
	}
	return fmt.Errorf("%w: the controller runs with --tls-*, but the nodes %s %s/%s adds would not (%s); give its tide container the --tls-* flags and mount the Secret with the files (deploy/kubernetes/README.md, TLS)",
		ErrNoTLS, strings.ToLower(p.kind), p.ns, p.name, strings.Join(why, "; "))
}

// containerTLS checks that c runs tide with the three --tls-* files, each
// on a volume mount.
func containerTLS(c corev1.Container) error {
	var missing, unmounted []string
	for _, f := range []struct{ flag, env string }{{"--tls-ca", "TIDE_TLS_CA"}, {"--tls-cert", "TIDE_TLS_CERT"}, {"--tls-key", "TIDE_TLS_KEY"}} {
		file, ok := argValue(c.Args, f.flag)
		for _, e := range c.Env {
			if e.Name == f.env && (e.Value != "" || e.ValueFrom != nil) {
				file, ok = e.Value, true
			}
		}
		if !ok || (file == "" && !envFrom(c, f.env)) {
			missing = append(missing, f.flag)
			continue
		}
		// A path made of variables, or from a ConfigMap, cannot be
		// checked here.
		if file == "" || strings.Contains(file, "$(") {
			continue
		}
		onMount := false
		for _, m := range c.VolumeMounts {
			mp := strings.TrimSuffix(m.MountPath, "/")
			onMount = onMount || file == mp || strings.HasPrefix(file, mp+"/")
		}
		if !onMount {
			unmounted = append(unmounted, f.flag+" "+file)
		}
	}
	switch {
	case len(missing) > 0:
		return fmt.Errorf("no %s (args or TIDE_TLS_* env)", strings.Join(missing, ", "))
	case len(unmounted) > 0:
		return fmt.Errorf("%s on no volume mount", strings.Join(unmounted, ", "))
	}
	return nil
}

// argValue is the value of flag in args (--flag value or --flag=value).
func argValue(args []string, flag string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
		if a == flag && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// envFrom reports whether c's environment sets name through valueFrom.
func envFrom(c corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil {
			return true
		}
	}
	return false
}

// Terminate lowers the workload's replicas by one so that pod in.ID is
// removed. For a StatefulSet the pod must be the highest ordinal, else
// Terminate refuses with ErrNotRemovable; a pod at or above the replica
// count is already being removed, and Terminate succeeds without scaling.
// For a Deployment, Terminate first gives the pod the lowest deletion cost;
// a pod that is gone or being deleted, or that a previous Terminate already
// lowered the replicas for, needs nothing more.
func (p *Provisioner) Terminate(ctx context.Context, in provision.Instance) error {
	if in.ID == "" {
		return errors.New("kubernetes: terminate: instance has no pod name")
	}
	if p.kind == KindDeployment {
		return p.terminateDeployment(ctx, in.ID)
	}
	ord, err := p.removable(ctx, in.ID)
	if err != nil {
		return fmt.Errorf("terminate: %w", err)
	}
	_, err = p.scale(ctx, func(r int32) (int32, bool, error) {
		// The ordinals are [start, start+r); ord is relative to start.
		switch {
		case ord >= r:
			return r, false, nil // already lowered
		case ord < r-1:
			return r, false, p.notHighest(in.ID, r)
		}
		return r - 1, true, nil
	})
	return err
}

func (p *Provisioner) terminateDeployment(ctx context.Context, pod string) error {
	po, err := p.c.CoreV1().Pods(p.ns).Get(ctx, pod, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return p.apiErr(err, "get", "pods", pod)
	}
	if po.DeletionTimestamp != nil {
		return nil
	}
	if !p.owns(po) {
		return fmt.Errorf("kubernetes: terminate: pod %s does not belong to deployment %s: %w", pod, p.name, ErrNotRemovable)
	}
	done := -1
	if v, ok := po.Annotations[ScaledDownToAnnotation]; ok {
		if n, err := strconv.Atoi(v); err == nil {
			done = n
		}
	}
	_, err = p.scale(ctx, func(r int32) (int32, bool, error) {
		if r == 0 || (done >= 0 && int(r) <= done) {
			return r, false, nil
		}
		ann := map[string]string{DeletionCostAnnotation: lowestDeletionCost, ScaledDownToAnnotation: strconv.Itoa(int(r - 1))}
		if err := p.annotate(ctx, pod, ann); err != nil {
			if apierrors.IsNotFound(err) {
				return r, false, errPodGone
			}
			return r, false, err
		}
		return r - 1, true, nil
	})
	if errors.Is(err, errPodGone) {
		return nil // the pod went while we were at it
	}
	return err
}

// List returns the pods the selector matches, sorted by name (a
// StatefulSet's by ordinal).
func (p *Provisioner) List(ctx context.Context) ([]provision.Instance, error) {
	pods, err := p.pods(ctx)
	if err != nil {
		return nil, err
	}
	sort.Slice(pods, func(i, j int) bool { return podLess(pods[i].Name, pods[j].Name) })
	out := make([]provision.Instance, 0, len(pods))
	for _, po := range pods {
		out = append(out, p.instance(po))
	}
	return out, nil
}

// instance describes a pod.
func (p *Provisioner) instance(po *corev1.Pod) provision.Instance {
	in := provision.Instance{ID: po.Name, State: podState(po), Started: po.CreationTimestamp.Time}
	if po.Status.StartTime != nil {
		in.Started = po.Status.StartTime.Time
	}
	svc := p.service
	if svc == "" {
		svc = po.Spec.Subdomain
	}
	host := po.Spec.Hostname
	if host == "" {
		host = po.Name
	}
	switch {
	case svc != "" && !p.usePodIP:
		in.HTTPAddr, in.ChordAddr = p.dnsAddrs(host, svc)
	case po.Status.PodIP != "":
		in.HTTPAddr = net.JoinHostPort(po.Status.PodIP, strconv.Itoa(p.httpPort))
		in.ChordAddr = net.JoinHostPort(po.Status.PodIP, strconv.Itoa(p.chordPort))
	}
	return in
}

func podState(po *corev1.Pod) string {
	if po.DeletionTimestamp != nil || po.Status.Phase == corev1.PodSucceeded || po.Status.Phase == corev1.PodFailed {
		return provision.StateTerminated
	}
	if _, ok := po.Annotations[DrainingAnnotation]; ok {
		return provision.StateDraining
	}
	if po.Status.Phase == corev1.PodRunning {
		for _, c := range po.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return provision.StateRunning
			}
		}
	}
	return provision.StatePending
}

func (p *Provisioner) dnsAddrs(host, svc string) (httpAddr, chordAddr string) {
	fqdn := host + "." + svc + "." + p.ns + ".svc"
	return net.JoinHostPort(fqdn, strconv.Itoa(p.httpPort)), net.JoinHostPort(fqdn, strconv.Itoa(p.chordPort))
}

// removable checks that lowering the StatefulSet's replicas removes pod
// and returns its ordinal relative to spec.ordinals.start. A pod already
// past the replica count counts as removable (it is going).
func (p *Provisioner) removable(ctx context.Context, pod string) (int32, error) {
	sts, err := p.c.AppsV1().StatefulSets(p.ns).Get(ctx, p.name, metav1.GetOptions{})
	if err != nil {
		return 0, p.apiErr(err, "get", "statefulsets", p.name)
	}
	ord, ok := p.ordinal(pod)
	start := ordinalStart(sts)
	if !ok || ord < start {
		return 0, fmt.Errorf("kubernetes: pod %s is not a pod of statefulset %s/%s: %w", pod, p.ns, p.name, ErrNotRemovable)
	}
	sc, err := p.getScale(ctx)
	if err != nil {
		return 0, err
	}
	if r := sc.Spec.Replicas; ord-start < r-1 {
		return 0, p.notHighest(pod, r+start)
	}
	return ord - start, nil
}

func (p *Provisioner) notHighest(pod string, end int32) error {
	return fmt.Errorf("kubernetes: pod %s is not the highest ordinal of statefulset %s/%s (that is %s-%d); a StatefulSet only removes its highest ordinal, so drain and terminate Victim() instead: %w",
		pod, p.ns, p.name, p.name, end-1, ErrNotRemovable)
}

// ordinal parses <name>-<ordinal>.
func (p *Provisioner) ordinal(pod string) (int32, bool) {
	rest, ok := strings.CutPrefix(pod, p.name+"-")
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseInt(rest, 10, 32)
	if err != nil || n < 0 {
		return 0, false
	}
	return int32(n), true
}

func ordinalStart(sts *appsv1.StatefulSet) int32 {
	if sts.Spec.Ordinals != nil {
		return sts.Spec.Ordinals.Start
	}
	return 0
}

// owns reports whether a pod belongs to the Deployment: its controller is
// one of the Deployment's ReplicaSets (named <deployment>-<hash>), or, for
// a pod with no controller reference, its name starts with the
// Deployment's.
func (p *Provisioner) owns(po *corev1.Pod) bool {
	if p.kind == KindStatefulSet {
		_, ok := p.ordinal(po.Name)
		return ok
	}
	if ref := metav1.GetControllerOf(po); ref != nil {
		return ref.Kind == "ReplicaSet" && strings.HasPrefix(ref.Name, p.name+"-")
	}
	return strings.HasPrefix(po.Name, p.name+"-")
}

// scale reads the workload's scale subresource, lets next decide the new
// replica count (or not to update), and writes it, retrying on conflicts.
// It returns the replica count it read last.
func (p *Provisioner) scale(ctx context.Context, next func(r int32) (int32, bool, error)) (int32, error) {
	var old int32
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sc, err := p.getScale(ctx)
		if err != nil {
			return err
		}
		old = sc.Spec.Replicas
		n, update, err := next(old)
		if err != nil || !update {
			return err
		}
		if n < 0 {
			return fmt.Errorf("kubernetes: %s %s/%s: cannot scale below zero replicas", p.kind, p.ns, p.name)
		}
		sc.Spec.Replicas = n
		if p.kind == KindDeployment {
			_, err = p.c.AppsV1().Deployments(p.ns).UpdateScale(ctx, p.name, sc, metav1.UpdateOptions{})
		} else {
			_, err = p.c.AppsV1().StatefulSets(p.ns).UpdateScale(ctx, p.name, sc, metav1.UpdateOptions{})
		}
		if apierrors.IsConflict(err) {
			return err // retried
		}
		if err != nil {
			return p.apiErr(err, "update", p.resource()+"/scale", p.name)
		}
		return nil
	})
	if apierrors.IsConflict(err) {
		return old, p.apiErr(err, "update", p.resource()+"/scale", p.name)
	}
	return old, err
}

func (p *Provisioner) getScale(ctx context.Context) (*autoscalingv1.Scale, error) {
	var sc *autoscalingv1.Scale
	var err error
	if p.kind == KindDeployment {
		sc, err = p.c.AppsV1().Deployments(p.ns).GetScale(ctx, p.name, metav1.GetOptions{})
	} else {
		sc, err = p.c.AppsV1().StatefulSets(p.ns).GetScale(ctx, p.name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, p.apiErr(err, "get", p.resource()+"/scale", p.name)
	}
	return sc, nil
}

func (p *Provisioner) resource() string {
	if p.kind == KindDeployment {
		return "deployments"
	}
	return "statefulsets"
}

// pods lists the pods the selector matches.
func (p *Provisioner) pods(ctx context.Context) ([]*corev1.Pod, error) {
	sel, err := p.podSelector(ctx)
	if err != nil {
		return nil, err
	}
	list, err := p.c.CoreV1().Pods(p.ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, p.apiErr(err, "list", "pods", "")
	}
	out := make([]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// podSelector is Config.Selector, or the workload's spec.selector.
func (p *Provisioner) podSelector(ctx context.Context) (labels.Selector, error) {
	p.mu.Lock()
	sel := p.selector
	p.mu.Unlock()
	if sel != nil {
		return sel, nil
	}
	var ls *metav1.LabelSelector
	if p.kind == KindDeployment {
		d, err := p.c.AppsV1().Deployments(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			return nil, p.apiErr(err, "get", "deployments", p.name)
		}
		ls = d.Spec.Selector
	} else {
		s, err := p.c.AppsV1().StatefulSets(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			return nil, p.apiErr(err, "get", "statefulsets", p.name)
		}
		ls = s.Spec.Selector
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: selector of %s %s/%s: %w", p.kind, p.ns, p.name, err)
	}
	if sel.Empty() {
		return nil, fmt.Errorf("kubernetes: %s %s/%s has an empty selector; set Config.Selector", p.kind, p.ns, p.name)
	}
	p.mu.Lock()
	p.selector = sel
	p.mu.Unlock()
	return sel, nil
}

// annotate merges annotations into a pod's metadata.
func (p *Provisioner) annotate(ctx context.Context, pod string, ann map[string]string) error {
	var b strings.Builder
	b.WriteString(`{"metadata":{"annotations":{`)
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%q", k, ann[k])
	}
	b.WriteString(`}}}`)
	_, err := p.c.CoreV1().Pods(p.ns).Patch(ctx, pod, types.MergePatchType, []byte(b.String()), metav1.PatchOptions{})
	if err != nil {
		return p.apiErr(err, "patch", "pods", pod)
	}
	return nil
}

// apiErr names the request that failed, and the RBAC rule it needs when the
// API server forbade it. The API error stays reachable through errors.As
// and the apierrors predicates.
func (p *Provisioner) apiErr(err error, verb, resource, name string) error {
	what := resource
	if name != "" {
		what += " " + p.ns + "/" + name
	} else {
		what += " in namespace " + p.ns
	}
	if apierrors.IsForbidden(err) {
		group := "apps"
		if resource == "pods" {
			group = `"" (core)`
		}
		return fmt.Errorf("kubernetes: %s %s: forbidden: the service account needs verb %q on %s in API group %s: %w", verb, what, verb, resource, group, err)
	}
	return fmt.Errorf("kubernetes: %s %s: %w", verb, what, err)
}

func (p *Provisioner) sleep(ctx context.Context) error {
	t := time.NewTimer(p.poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// podLess orders names with trailing ordinals numerically (tide-2 before
// tide-10).
func podLess(a, b string) bool {
	pa, na, oka := splitOrdinal(a)
	pb, nb, okb := splitOrdinal(b)
	if oka && okb && pa == pb {
		return na < nb
	}
	return a < b
}

func splitOrdinal(s string) (string, int, bool) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return s, 0, false
	}
	n, err := strconv.Atoi(s[i+1:])
	return s[:i], n, err == nil
}

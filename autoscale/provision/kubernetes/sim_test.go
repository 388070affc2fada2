package kubernetes

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// cluster is a fake API server (client-go's fake clientset) plus the bits
// of the StatefulSet and ReplicaSet controllers the provisioner relies on:
// reactors serve the scale subresource from the workload's spec.replicas,
// and every replica change creates or removes pods the way the real
// controllers would.
type cluster struct {
	t  *testing.T
	cs *fake.Clientset
	ns string

	mu        sync.Mutex
	versions  map[string]int // "kind/name" -> resourceVersion of its scale
	seq       int            // pod counter: UIDs, IPs, creation times
	ips       map[string]string
	drained   []string // addresses the drain func was called with
	conflicts int      // the next UpdateScale calls answer Conflict
	frozen    bool     // replica changes create and remove no pods
	lateIP    bool     // new pods get their IP only after being listed once
	podIP     string   // every pod's IP, if set (e.g. 127.0.0.1)
	// graceful marks removed pods as terminating instead of deleting them.
	graceful bool
}

var (
	stsGVR    = appsv1.SchemeGroupVersion.WithResource("statefulsets")
	deployGVR = appsv1.SchemeGroupVersion.WithResource("deployments")
	podGVR    = corev1.SchemeGroupVersion.WithResource("pods")
	podGVK    = corev1.SchemeGroupVersion.WithKind("Pod")
	epoch     = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
)

const testLabel = "app.kubernetes.io/name"

func newCluster(t *testing.T, ns string, objs ...runtime.Object) *cluster {
	t.Helper()
	c := &cluster{t: t, cs: fake.NewClientset(objs...), ns: ns, versions: map[string]int{}, ips: map[string]string{}}
	for _, kind := range []string{"statefulsets", "deployments"} {
		kind := kind
		c.cs.PrependReactor("get", kind, func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() != "scale" {
				return false, nil, nil
			}
			sc, err := c.getScale(kind, a.GetNamespace(), a.(k8stesting.GetAction).GetName())
			return true, sc, err
		})
		c.cs.PrependReactor("update", kind, func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() != "scale" {
				return false, nil, nil
			}
			sc, ok := a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale)
			if !ok {
				return true, nil, apierrors.NewBadRequest("not a Scale")
			}
			out, err := c.updateScale(kind, a.GetNamespace(), sc)
			return true, out, err
		})
	}
	c.cs.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		c.assignLateIPs(a.GetNamespace())
		return false, nil, nil
	})
	// Pods for the replicas the workloads start with.
	for _, o := range objs {
		switch w := o.(type) {
		case *appsv1.StatefulSet:
			c.reconcile("statefulsets", w.Namespace, w.Name)
		case *appsv1.Deployment:
			c.reconcile("deployments", w.Namespace, w.Name)
		}
	}
	return c
}

func gvrOf(kind string) schema.GroupVersionResource {
	if kind == "deployments" {
		return deployGVR
	}
	return stsGVR
}

// replicas reads a workload's spec.replicas from the tracker.
func (c *cluster) replicas(kind, name string) int32 {
	c.t.Helper()
	obj, err := c.cs.Tracker().Get(gvrOf(kind), c.ns, name)
	if err != nil {
		c.t.Fatalf("get %s %s: %v", kind, name, err)
	}
	switch w := obj.(type) {
	case *appsv1.StatefulSet:
		return *w.Spec.Replicas
	case *appsv1.Deployment:
		return *w.Spec.Replicas
	}
	c.t.Fatalf("%s %s is a %T", kind, name, obj)
	return 0
}

// setReplicas changes spec.replicas behind the provisioner's back (as a
// previous controller run would have) and reconciles the pods.
func (c *cluster) setReplicas(kind, name string, r int32) {
	c.t.Helper()
	obj, err := c.cs.Tracker().Get(gvrOf(kind), c.ns, name)
	if err != nil {
		c.t.Fatal(err)
	}
	switch w := obj.(type) {
	case *appsv1.StatefulSet:
		w.Spec.Replicas = &r
	case *appsv1.Deployment:
		w.Spec.Replicas = &r
	}
	if err := c.cs.Tracker().Update(gvrOf(kind), obj, c.ns); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.versions[kind+"/"+name]++
	c.mu.Unlock()
	c.reconcile(kind, c.ns, name)
}

func (c *cluster) getScale(kind, ns, name string) (*autoscalingv1.Scale, error) {
	obj, err := c.cs.Tracker().Get(gvrOf(kind), ns, name)
	if err != nil {
		return nil, err
	}
	var r int32
	var sel *metav1.LabelSelector
	switch w := obj.(type) {
	case *appsv1.StatefulSet:
		r, sel = *w.Spec.Replicas, w.Spec.Selector
	case *appsv1.Deployment:
		r, sel = *w.Spec.Replicas, w.Spec.Selector
	}
	c.mu.Lock()
	rv := c.versions[kind+"/"+name]
	c.mu.Unlock()
	return &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, ResourceVersion: strconv.Itoa(rv)},
		Spec:       autoscalingv1.ScaleSpec{Replicas: r},
		Status:     autoscalingv1.ScaleStatus{Replicas: r, Selector: metav1.FormatLabelSelector(sel)},
	}, nil
}

func (c *cluster) updateScale(kind, ns string, sc *autoscalingv1.Scale) (*autoscalingv1.Scale, error) {
	gr := schema.GroupResource{Group: "apps", Resource: kind + "/scale"}
	c.mu.Lock()
	key := kind + "/" + sc.Name
	if c.conflicts > 0 {
		c.conflicts--
		c.versions[key]++ // someone else wrote meanwhile
		c.mu.Unlock()
		return nil, apierrors.NewConflict(gr, sc.Name, fmt.Errorf("the object has been modified"))
	}
	if sc.ResourceVersion != "" && sc.ResourceVersion != strconv.Itoa(c.versions[key]) {
		c.mu.Unlock()
		return nil, apierrors.NewConflict(gr, sc.Name, fmt.Errorf("resourceVersion %s is stale", sc.ResourceVersion))
	}
	if sc.Spec.Replicas < 0 {
		c.mu.Unlock()
		return nil, apierrors.NewBadRequest("negative replicas")
	}
	c.versions[key]++
	frozen := c.frozen
	c.mu.Unlock()
	obj, err := c.cs.Tracker().Get(gvrOf(kind), ns, sc.Name)
	if err != nil {
		return nil, err
	}
	r := sc.Spec.Replicas
	switch w := obj.(type) {
	case *appsv1.StatefulSet:
		w.Spec.Replicas = &r
	case *appsv1.Deployment:
		w.Spec.Replicas = &r
	}
	if err := c.cs.Tracker().Update(gvrOf(kind), obj, ns); err != nil {
		return nil, err
	}
	if !frozen {
		c.reconcile(kind, ns, sc.Name)
	}
	return c.getScale(kind, ns, sc.Name)
}

// pods returns the namespace's pods straight from the tracker.
func (c *cluster) pods() []corev1.Pod {
	c.t.Helper()
	obj, err := c.cs.Tracker().List(podGVR, podGVK, c.ns)
	if err != nil {
		c.t.Fatal(err)
	}
	items := obj.(*corev1.PodList).Items
	sort.Slice(items, func(i, j int) bool { return podLess(items[i].Name, items[j].Name) })
	return items
}

func (c *cluster) pod(name string) (*corev1.Pod, bool) {
	obj, err := c.cs.Tracker().Get(podGVR, c.ns, name)
	if err != nil {
		return nil, false
	}
	return obj.(*corev1.Pod), true
}

func (c *cluster) newPod(name string, lbls map[string]string, owner metav1.OwnerReference, subdomain string) *corev1.Pod {
	c.mu.Lock()
	c.seq++
	n := c.seq
	ip := c.podIP
	if ip == "" {
		ip = fmt.Sprintf("10.1.%d.%d", n/250, n%250+1)
	}
	late := c.lateIP
	c.mu.Unlock()
	created := metav1.NewTime(epoch.Add(time.Duration(n) * time.Second))
	po := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: c.ns, Labels: lbls, UID: types.UID(fmt.Sprintf("uid-%d", n)),
			CreationTimestamp: created,
			OwnerReferences:   []metav1.OwnerReference{owner},
		},
		Spec: corev1.PodSpec{Subdomain: subdomain, Containers: []corev1.Container{{Name: "tide", Image: "tide:latest"}}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: ip, StartTime: &created,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	if subdomain != "" {
		po.Spec.Hostname = name
	}
	if late {
		po.Status.PodIP, po.Status.Phase, po.Status.Conditions = "", corev1.PodPending, nil
	}
	c.mu.Lock()
	c.ips[ip] = name
	c.mu.Unlock()
	return po
}

// assignLateIPs gives pods that were created without an IP their IP, the
// second time anyone lists pods after their creation.
func (c *cluster) assignLateIPs(ns string) {
	obj, err := c.cs.Tracker().List(podGVR, podGVK, ns)
	if err != nil {
		return
	}
	for _, po := range obj.(*corev1.PodList).Items {
		if po.Status.PodIP != "" || po.DeletionTimestamp != nil {
			continue
		}
		if po.Annotations["sim/listed"] == "" {
			if po.Annotations == nil {
				po.Annotations = map[string]string{}
			}
			po.Annotations["sim/listed"] = "1"
		} else {
			delete(po.Annotations, "sim/listed")
			c.mu.Lock()
			ip := c.podIP
			if ip == "" {
				ip = fmt.Sprintf("10.2.0.%d", len(c.ips)+1)
			}
			c.ips[ip] = po.Name
			c.mu.Unlock()
			po.Status.PodIP, po.Status.Phase = ip, corev1.PodRunning
			po.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		}
		po := po
		_ = c.cs.Tracker().Update(podGVR, &po, ns)
	}
}

// reconcile creates and removes pods to match a workload's replicas, like
// the StatefulSet controller (ordinals [start, start+replicas); the highest
// ordinals go first) or the ReplicaSet controller (the lowest
// pod-deletion-cost goes first, the newest among equals).
func (c *cluster) reconcile(kind, ns, name string) {
	c.t.Helper()
	obj, err := c.cs.Tracker().Get(gvrOf(kind), ns, name)
	if err != nil {
		c.t.Fatal(err)
	}
	remove := func(po *corev1.Pod) {
		c.mu.Lock()
		graceful := c.graceful
		c.mu.Unlock()
		if graceful {
			now := metav1.NewTime(time.Now())
			po.DeletionTimestamp = &now
			if err := c.cs.Tracker().Update(podGVR, po, ns); err != nil {
				c.t.Error(err)
			}
			return
		}
		if err := c.cs.Tracker().Delete(podGVR, ns, po.Name); err != nil {
			c.t.Error(err)
		}
	}
	switch w := obj.(type) {
	case *appsv1.StatefulSet:
		start := ordinalStart(w)
		r := *w.Spec.Replicas
		owner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: w.Name, Controller: ptr(true)}
		for o := start; o < start+r; o++ {
			pn := fmt.Sprintf("%s-%d", w.Name, o)
			if po, ok := c.pod(pn); ok && po.DeletionTimestamp == nil {
				continue
			} else if ok {
				_ = c.cs.Tracker().Delete(podGVR, ns, pn)
			}
			if err := c.cs.Tracker().Add(c.newPod(pn, w.Spec.Template.Labels, owner, w.Spec.ServiceName)); err != nil {
				c.t.Error(err)
			}
		}
		for _, po := range c.pods() {
			rest, ok := cutOrdinal(po.Name, w.Name)
			if ok && (rest < start || rest >= start+r) && po.DeletionTimestamp == nil {
				po := po
				remove(&po)
			}
		}
	case *appsv1.Deployment:
		rs := w.Name + "-5d8f9c"
		owner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs, Controller: ptr(true)}
		var live []corev1.Pod
		for _, po := range c.pods() {
			if ref := metav1.GetControllerOf(&po); ref != nil && ref.Name == rs && po.DeletionTimestamp == nil {
				live = append(live, po)
			}
		}
		r := int(*w.Spec.Replicas)
		for i := len(live); i < r; i++ {
			c.mu.Lock()
			pn := fmt.Sprintf("%s-%05d", rs, c.seq+1)
			c.mu.Unlock()
			if err := c.cs.Tracker().Add(c.newPod(pn, w.Spec.Template.Labels, owner, "")); err != nil {
				c.t.Error(err)
			}
		}
		if len(live) > r {
			cost := func(po corev1.Pod) int {
				v, err := strconv.Atoi(po.Annotations[DeletionCostAnnotation])
				if err != nil {
					return 0
				}
				return v
			}
			sort.Slice(live, func(i, j int) bool {
				if ci, cj := cost(live[i]), cost(live[j]); ci != cj {
					return ci < cj
				}
				return live[j].CreationTimestamp.Before(&live[i].CreationTimestamp)
			})
			for i := 0; i < len(live)-r; i++ {
				remove(&live[i])
			}
		}
	}
}

func cutOrdinal(pod, set string) (int32, bool) {
	p := &Provisioner{name: set}
	return p.ordinal(pod)
}

func ptr[T any](v T) *T { return &v }

// drainFunc records the addresses it is asked to drain.
func (c *cluster) drainFunc(ctx context.Context, addr string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drained = append(c.drained, addr)
	return 0, nil
}

func (c *cluster) drainedAddrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.drained...)
}

// statefulSet builds a StatefulSet of tide pods.
func statefulSet(ns, name, service string, replicas int32) *appsv1.StatefulSet {
	lbls := map[string]string{testLabel: "tide", "tide/role": "member"}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    &replicas,
			ServiceName: service,
			Selector:    &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "tide", Image: "tide:latest"}}},
			},
		},
	}
}

func deployment(ns, name string, replicas int32) *appsv1.Deployment {
	lbls := map[string]string{testLabel: "tide", "tide/role": "member"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "tide", Image: "tide:latest"}}},
			},
		},
	}
}

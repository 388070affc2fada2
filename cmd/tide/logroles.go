package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"tide/autoscale/provision"
	awsprov "tide/autoscale/provision/aws"
	dockerprov "tide/autoscale/provision/docker"
	k8sprov "tide/autoscale/provision/kubernetes"
	"tide/cluster"
	"tide/paxos/node"
	"tide/tlsconf"
)

// roleHostFlags choose where `tide log up` runs role processes: local
// child processes, Docker containers with CPU limits, a Service and a
// Deployment each on Kubernetes, or an EC2 instance each.
type roleHostFlags struct {
	cmd         *cobra.Command
	provisioner string
	cpus        float64
	roleCPUs    string
	image       string
	cluster     string
	network     string
	build       bool

	k8sNamespace, k8sImage, k8sCluster, k8sPull string

	awsRegion, awsEndpoint, awsSubnet, awsImage, awsType, awsTypes string
	awsKey, awsBinaryURL, awsCluster                               string
	awsGroups                                                      []string

	tlsCAKey string

	desc    string
	cleanup func(context.Context) error
}

func (f *roleHostFlags) flags(cmd *cobra.Command) {
	f.cmd = cmd
	fl := cmd.Flags()
	fl.StringVar(&f.provisioner, "provisioner", "local", "where roles run: local (child processes), docker (a container each), kubernetes (a Service and a Deployment each) or aws (an EC2 instance each)")
	fl.Float64Var(&f.cpus, "cpus", 0, "docker, kubernetes: CPU limit of each role's container, like docker run --cpus (0: none)")
	fl.StringVar(&f.roleCPUs, "role-cpus", "", "docker, kubernetes: CPU limits by role kind, overriding --cpus, e.g. proxy=0.5,acceptor=0.25 (kinds: "+strings.Join(node.Kinds, ", ")+")")
	fl.StringVar(&f.image, "docker-image", dockerprov.DefaultImage, "docker: image of the role containers (see --docker-build)")
	fl.StringVar(&f.cluster, "docker-cluster", "tide-log", "docker: cluster label of the role containers, so several logs share an engine")
	fl.StringVar(&f.network, "docker-network", "", "docker: user-defined network (default tide-<cluster>, created if missing)")
	fl.BoolVar(&f.build, "docker-build", false, "docker: build the image FROM scratch around this (static) tide binary first")
	fl.StringVar(&f.k8sNamespace, "k8s-namespace", "", "kubernetes: namespace of the role Services and Deployments (default: the kubeconfig's, or the pod's own)")
	fl.StringVar(&f.k8sImage, "k8s-image", "tide:latest", "kubernetes: image of the role pods, with the tide binary as entrypoint (see deploy/kubernetes)")
	fl.StringVar(&f.k8sPull, "k8s-pull-policy", "IfNotPresent", "kubernetes: imagePullPolicy of the role pods: Always, IfNotPresent or Never")
	fl.StringVar(&f.k8sCluster, "k8s-cluster", "tide-log", "kubernetes: name of the log, the prefix of its objects' names and their tide.log/cluster label, so several logs share a namespace")
	fl.StringVar(&f.awsRegion, "aws-region", "", "aws: region (default: the SDK's configuration)")
	fl.StringVar(&f.awsEndpoint, "aws-endpoint-url", "", "aws: EC2 API endpoint (e.g. a moto_server)")
	fl.StringVar(&f.awsSubnet, "aws-subnet", "", "aws: subnet ID of the role instances and their network interfaces (required)")
	fl.StringSliceVar(&f.awsGroups, "aws-security-groups", nil, "aws: security group IDs of the role interfaces, which must open ports 5057 and 5058 between roles and to this machine (default: the VPC's default group)")
	fl.StringVar(&f.awsImage, "aws-image", "", "aws: AMI of the role instances: Linux with systemd and curl (required)")
	fl.StringVar(&f.awsType, "aws-instance-type", "t3.small", "aws: instance type of every role")
	fl.StringVar(&f.awsTypes, "aws-instance-types", "", "aws: instance types by role kind, overriding --aws-instance-type, e.g. proxy=c7i.large,acceptor=m7i.large")
	fl.StringVar(&f.awsKey, "aws-key-name", "", "aws: EC2 key pair of the role instances, for SSH (optional)")
	fl.StringVar(&f.awsBinaryURL, "aws-binary-url", "", "aws: URL the instances download the linux tide binary from (empty: the AMI has it at /usr/local/bin/tide)")
	fl.StringVar(&f.awsCluster, "aws-cluster", "tide-log", "aws: name of the log, the tide:log-cluster tag of its instances and interfaces")
	fl.StringVar(&f.tlsCAKey, "tls-ca-key", "", "kubernetes, aws: the key of --tls-ca (tide cert init's ca.key): give each role a certificate of its own for its address (ClusterIP, interface IP), signed here, instead of --tls-cert's")
}

// checkFlags refuses flags of a provisioner other than the chosen one,
// and --tls-ca-key where it does not apply.
func (f *roleHostFlags) checkFlags() error {
	if f.tlsCAKey != "" {
		if f.provisioner != "kubernetes" && f.provisioner != "aws" {
			return fmt.Errorf("--tls-ca-key applies to --provisioner kubernetes and aws, not %s", f.provisioner)
		}
		if globalTLS.CA == "" {
			return errors.New("--tls-ca-key needs --tls-ca, the CA whose key it is")
		}
	}
	if f.cmd == nil {
		return nil
	}
	var wrong []string
	f.cmd.Flags().Visit(func(fl *pflag.Flag) {
		for _, p := range []string{"docker", "k8s", "aws"} {
			prov := map[string]string{"docker": "docker", "k8s": "kubernetes", "aws": "aws"}[p]
			if strings.HasPrefix(fl.Name, p+"-") && f.provisioner != prov {
				wrong = append(wrong, "--"+fl.Name)
			}
		}
		if (fl.Name == "cpus" || fl.Name == "role-cpus") && f.provisioner != "docker" && f.provisioner != "kubernetes" {
			wrong = append(wrong, "--"+fl.Name)
		}
	})
	if len(wrong) > 0 {
		return fmt.Errorf("%s do not apply to --provisioner %s", strings.Join(wrong, ", "), f.provisioner)
	}
	return nil
}

// parseKinds turns "kind=value,..." into a map, checking the kinds.
func parseKinds(flag, spec string) (map[string]string, error) {
	out := map[string]string{}
	if spec == "" {
		return out, nil
	}
	for _, kv := range strings.Split(spec, ",") {
		kind, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return nil, fmt.Errorf("%s %q: want kind=value pairs (%q is not one)", flag, spec, kv)
		}
		if !slices.Contains(node.Kinds, kind) {
			return nil, fmt.Errorf("%s: unknown kind %q (want one of %s)", flag, kind, strings.Join(node.Kinds, ", "))
		}
		out[kind] = v
	}
	return out, nil
}

// parseRoleCPUs turns "kind=cpus,..." and a default into limits in
// billionths of a CPU, keyed by kind ("" for the default).
func parseRoleCPUs(def float64, spec string) (map[string]int64, error) {
	if def < 0 {
		return nil, fmt.Errorf("--cpus %v is negative", def)
	}
	out := map[string]int64{"": int64(def * 1e9)}
	if spec == "" {
		return out, nil
	}
	for _, kv := range strings.Split(spec, ",") {
		kind, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		cpus, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || cpus <= 0 {
			return nil, fmt.Errorf("--role-cpus %q: want kind=cpus pairs with cpus > 0 (%q is not one)", spec, kv)
		}
		if !slices.Contains(node.Kinds, kind) {
			return nil, fmt.Errorf("--role-cpus: unknown kind %q (want one of %s)", kind, strings.Join(node.Kinds, ", "))
		}
		out[kind] = int64(cpus * 1e9)
	}
	return out, nil
}

// limits are the CPU limits the flags give each kind, in billionths of
// a CPU ("" for the default); none for local roles.
func (f *roleHostFlags) limits() (map[string]int64, error) {
	if f.provisioner == "local" {
		return nil, nil
	}
	return parseRoleCPUs(f.cpus, f.roleCPUs)
}

// open returns the role host the flags name.
func (f *roleHostFlags) open(ctx context.Context, dir, host string) (cluster.RoleHost, error) {
	if err := f.checkFlags(); err != nil {
		return nil, err
	}
	switch f.provisioner {
	case "local":
		f.desc = "local processes"
		extra, err := tlsArgs()
		if err != nil {
			return nil, err
		}
		return &cluster.LocalRoles{Local: &cluster.Local{Dir: dir}, StateDir: dir + "/state", Host: host, Extra: extra, TLS: logCerts}, nil
	case "docker":
		cpus, err := parseRoleCPUs(f.cpus, f.roleCPUs)
		if err != nil {
			return nil, err
		}
		if f.build {
			bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			if err := buildSelfImage(bctx, f.image); err != nil {
				return nil, err
			}
		}
		files, extra, err := containerTLS()
		if err != nil {
			return nil, err
		}
		p, err := dockerprov.New(dockerprov.Config{Image: f.image, Cluster: f.cluster, Network: f.network, Files: files})
		if err != nil {
			return nil, err
		}
		f.desc = fmt.Sprintf("docker containers of %s on network %s", p.Config().Image, p.Config().Network) + f.describeCPUs()
		f.cleanup = func(ctx context.Context) error {
			defer p.Close()
			return p.Cleanup(ctx)
		}
		return &cluster.ProvisionedRoles{C: p, CPUs: cpus, Extra: extra, Healthy: tlsHealthy()}, nil
	case "kubernetes":
		cpus, err := parseRoleCPUs(f.cpus, f.roleCPUs)
		if err != nil {
			return nil, err
		}
		// With --tls-*, the files go in a Secret every role pod mounts,
		// and the roles start with the flags naming them.
		certs, err := rolesTLS(f.tlsCAKey)
		if err != nil {
			return nil, err
		}
		r, err := k8sprov.NewRoles(k8sprov.RolesConfig{Namespace: f.k8sNamespace, Image: f.k8sImage, PullPolicy: corev1.PullPolicy(f.k8sPull), Cluster: f.k8sCluster, TLS: certs})
		if err != nil {
			return nil, err
		}
		f.desc = fmt.Sprintf("kubernetes: a Service and a Deployment of %s per role in namespace %s", f.k8sImage, r.Namespace()) + f.describeCPUs()
		f.cleanup = r.Cleanup
		// Pods listen on 0.0.0.0 and go by their Service's ClusterIP.
		return &cluster.ProvisionedRoles{C: r, CPUs: cpus, Bind: "0.0.0.0", StartTimeout: 5 * time.Minute, Healthy: tlsHealthy()}, nil
	case "aws":
		types, err := parseKinds("--aws-instance-types", f.awsTypes)
		if err != nil {
			return nil, err
		}
		// With --tls-*, each instance's user data writes the files to
		// /etc/tide/tls, and the role starts with the flags naming them.
		certs, err := rolesTLS(f.tlsCAKey)
		if err != nil {
			return nil, err
		}
		r, err := awsprov.NewRoles(ctx, awsprov.RolesConfig{Region: f.awsRegion, EndpointURL: f.awsEndpoint, Subnet: f.awsSubnet,
			SecurityGroups: f.awsGroups, Image: f.awsImage, InstanceType: f.awsType, InstanceTypes: types, KeyName: f.awsKey,
			BinaryURL: f.awsBinaryURL, Cluster: f.awsCluster, TLS: certs})
		if err != nil {
			return nil, err
		}
		f.desc = fmt.Sprintf("aws: an EC2 instance (%s, AMI %s) per role in subnet %s", f.awsType, f.awsImage, f.awsSubnet)
		if f.awsTypes != "" {
			f.desc += " (" + f.awsTypes + ")"
		}
		f.cleanup = r.Cleanup
		// The instances boot first: allow them minutes.
		return &cluster.ProvisionedRoles{C: r, Bind: "0.0.0.0", DataDir: "/var/lib/tide-log", StartTimeout: 10 * time.Minute, Healthy: tlsHealthy()}, nil
	}
	return nil, fmt.Errorf("--provisioner %q: want local, docker, kubernetes or aws", f.provisioner)
}

// containerTLS is the --tls-* files' contents at their paths in a role
// container, and the flags that name them there; nil without --tls-*.
// The same certificate serves every role: it names every address a role
// container may get (tide cert node NAME --ip ... for the network's
// addresses) and the client's.
func containerTLS() (map[string][]byte, []string, error) {
	t, err := rolesTLS("")
	if t == nil || err != nil {
		return nil, nil, err
	}
	files := map[string][]byte{}
	for name, b := range t.Files() {
		files["/tls/"+name] = b
	}
	return files, t.Flags("/tls"), nil
}

// rolesTLS is the --tls-* files' contents, for provisioners that put them
// on the roles' machines themselves (Kubernetes, EC2); nil without
// --tls-*. With caKey, the key of --tls-ca, each role gets a certificate
// issued for its address instead of --tls-cert's.
func rolesTLS(caKey string) (*provision.TLS, error) {
	if !globalTLS.Enabled() {
		return nil, nil
	}
	var t provision.TLS
	for _, f := range []struct {
		flag, path string
		to         *[]byte
	}{{"--tls-ca", globalTLS.CA, &t.CA}, {"--tls-cert", globalTLS.Cert, &t.Cert}, {"--tls-key", globalTLS.Key, &t.Key}} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.flag, err)
		}
		*f.to = b
	}
	if caKey == "" {
		return &t, nil
	}
	ca, err := tls.LoadX509KeyPair(globalTLS.CA, caKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca-key: load the CA %s with key %s: %w", globalTLS.CA, caKey, err)
	}
	t.Cert, t.Key = nil, nil
	t.Issue = func(ip string) ([]byte, []byte, error) {
		addr := net.ParseIP(ip)
		if addr == nil {
			return nil, nil, fmt.Errorf("%q is not an IP address", ip)
		}
		return tlsconf.Issue(ca, tlsconf.NodeCert{Name: "tide-log-role-" + ip, IPs: []net.IP{addr}})
	}
	// Fail now, not at the first role, if the CA cannot sign.
	if _, _, err := t.Issue("127.0.0.1"); err != nil {
		return nil, fmt.Errorf("--tls-ca-key: %w", err)
	}
	return &t, nil
}

// issueOwn gives tide log up a certificate when --tls-ca-key is set and
// --tls-cert and --tls-key are not: issued by the CA for every address of
// this machine's interfaces (in a pod, the pod's IP: the roles reply
// there, and check the certificate against it) and its host name, written
// to dir/tls/up.crt and up.key, which the global flags then name.
func (f *roleHostFlags) issueOwn(dir string) error {
	if f.tlsCAKey == "" || globalTLS.Cert != "" || globalTLS.Key != "" {
		return nil
	}
	if err := f.checkFlags(); err != nil {
		return err
	}
	ca, err := tls.LoadX509KeyPair(globalTLS.CA, f.tlsCAKey)
	if err != nil {
		return fmt.Errorf("--tls-ca-key: load the CA %s with key %s: %w", globalTLS.CA, f.tlsCAKey, err)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("--tls-ca-key: this machine's addresses, for its certificate: %w", err)
	}
	nc := tlsconf.NodeCert{Name: "tide-log-up"}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			nc.IPs = append(nc.IPs, n.IP)
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		nc.DNS = []string{h}
	}
	cert, key, err := tlsconf.Issue(ca, nc)
	if err != nil {
		return fmt.Errorf("--tls-ca-key: %w", err)
	}
	tdir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(tdir, "up.crt"), filepath.Join(tdir, "up.key")
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(certPath, cert, 0o644); err != nil {
		return err
	}
	globalTLS.Cert, globalTLS.Key = certPath, keyPath
	return nil
}

// tlsHealthy waits for a role's /healthz over mutual TLS with the
// --tls-* certificate (logCerts); nil without it, which is plain HTTP.
func tlsHealthy() func(ctx context.Context, addr string) error {
	if logCerts == nil {
		return nil
	}
	hc := logCerts.HTTPClient(2 * time.Second)
	return func(ctx context.Context, addr string) error { return provision.WaitHealthy(ctx, hc, addr) }
}

func (f *roleHostFlags) describeCPUs() string {
	s := ""
	if f.cpus > 0 {
		s += fmt.Sprintf(", %g CPU each", f.cpus)
	}
	if f.roleCPUs != "" {
		s += " (" + f.roleCPUs + ")"
	}
	return s
}

// describe says where roles run, for the banner.
func (f *roleHostFlags) describe() string { return f.desc }

// close removes what the provisioner left: containers and the network of
// the cluster, or its Kubernetes objects, or its instances and network
// interfaces.
func (f *roleHostFlags) close() {
	if f.cleanup == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := f.cleanup(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s clean-up: %v\n", f.provisioner, err)
	}
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"tide/autoscale"
	"tide/autoscale/provision"
	tideaws "tide/autoscale/provision/aws"
	dockerprov "tide/autoscale/provision/docker"
	k8sprov "tide/autoscale/provision/kubernetes"
	localprov "tide/autoscale/provision/local"
	"tide/tlsconf"

	"tide/paxos/node"
)

// autoscaleFlags are `tide autoscale`'s settings.
type autoscaleFlags struct {
	config, provisioner, listen, stateDir, prometheus, logLease, holder string
	// docker
	dockerImage, dockerNetwork, dockerCluster, dockerMemory string
	dockerCPUs                                              float64
	dockerBuild                                             bool
	// kubernetes
	k8sNamespace, k8sKind, k8sName, k8sSelector, k8sService string
	// aws
	awsGroup, awsRegion, awsEndpoint, awsHook string
}

func newAutoscaleCmd() *cobra.Command {
	var f autoscaleFlags
	cmd := &cobra.Command{
		Use:   "autoscale",
		Short: "Run the autoscaling controller for the storage ring",
		Long: `Run the autoscaling controller: every period it reads each node's metrics
(its /metrics, or a Prometheus server with --prometheus), evaluates the store
policy, and launches, drains or terminates nodes through a provisioner:

  local       child processes on this machine (default)
  docker      containers of a FROM-scratch tide image on a user-defined network
  kubernetes  a StatefulSet or Deployment, through the scale subresource
  aws         an EC2 Auto Scaling group, with a termination lifecycle hook

Several controllers may run; one is active. Leadership is a lock file in
--state-dir, or with --log-lease a lease in the tide log, so a crashed
controller is replaced and the change it left in flight is finished.

Every decision is an event: in the log, at GET /events on --listen, in the
tide_autoscale_events_total metric, and in --state-dir/events.jsonl.
'tide autoscale config' prints the policy settings and their defaults.

With the global --tls-ca, --tls-cert and --tls-key it reads the nodes'
metrics and ring and drains them over mutual TLS, and the local provisioner
starts its nodes with the same files (a certificate that names the nodes'
address, 127.0.0.1); docker copies them into each container (naming the
network's addresses). kubernetes and aws start no node themselves: the
StatefulSet's pod template (deploy/kubernetes/tls) or the group's launch
template gives nodes their files, and the certificate names what the
controller dials: the pods' DNS names (--dns '*.SERVICE.NAMESPACE.svc'),
or the instances' private IPs (--ip with the subnets' addresses). With
kubernetes the controller refuses a pod template without --tls-* files on a
volume mount; with aws it warns when the launch template's user data has no
--tls-ca. --listen then serves mutual TLS: a client presents a
certificate of the CA; on loopback it also takes plain text (curl, a metrics
scraper on the machine). 'tide autoscale events|status' take the same flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAutoscale(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "policy file (YAML; see 'tide autoscale config'); default: the built-in defaults")
	fl.StringVar(&f.provisioner, "provisioner", "local", "local, docker, kubernetes or aws")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7070", "serve /events, /status and /metrics here (empty: off)")
	fl.StringVar(&f.stateDir, "state-dir", "tide-autoscale", "controller state: leader lock, change in flight, events; and the local provisioner's nodes")
	fl.StringVar(&f.prometheus, "prometheus", "", "read metrics from this Prometheus server (e.g. http://127.0.0.1:9090) instead of scraping nodes")
	fl.StringVar(&f.logLease, "log-lease", "", "elect the leader through a lease in the tide log (a deployment file or a role's HTTP address), and keep the change in flight there")
	fl.StringVar(&f.holder, "id", "", "this controller's name in the log lease (default: host name and pid)")
	fl.StringVar(&f.dockerImage, "docker-image", dockerprov.DefaultImage, "docker: image of tide nodes")
	fl.StringVar(&f.dockerNetwork, "docker-network", "", "docker: user-defined network (default tide-<cluster>, created if missing)")
	fl.StringVar(&f.dockerCluster, "docker-cluster", dockerprov.DefaultCluster, "docker: cluster label, so several clusters share an engine")
	fl.Float64Var(&f.dockerCPUs, "docker-cpus", 0, "docker: CPU limit per node (0: none)")
	fl.StringVar(&f.dockerMemory, "docker-memory", "", "docker: memory limit per node, e.g. 512MiB (empty: none)")
	fl.BoolVar(&f.dockerBuild, "docker-build", false, "docker: build the image FROM scratch around this (static) tide binary first")
	fl.StringVar(&f.k8sNamespace, "k8s-namespace", "", "kubernetes: namespace (default: the kubeconfig's, or the pod's own)")
	fl.StringVar(&f.k8sKind, "k8s-kind", k8sprov.KindStatefulSet, "kubernetes: StatefulSet or Deployment")
	fl.StringVar(&f.k8sName, "k8s-name", "tide", "kubernetes: the workload's name")
	fl.StringVar(&f.k8sSelector, "k8s-selector", "app.kubernetes.io/name=tide", "kubernetes: label selector of the tide pods")
	fl.StringVar(&f.k8sService, "k8s-service", "", "kubernetes: headless service of the pods' DNS names (default: the pods' subdomain)")
	fl.StringVar(&f.awsGroup, "aws-group", "", "aws: Auto Scaling group name")
	fl.StringVar(&f.awsRegion, "aws-region", "", "aws: region (default: the SDK's configuration)")
	fl.StringVar(&f.awsEndpoint, "aws-endpoint-url", "", "aws: API endpoint (e.g. a moto_server)")
	fl.StringVar(&f.awsHook, "aws-lifecycle-hook", tideaws.DefaultLifecycleHook, "aws: termination lifecycle hook name (empty: none)")
	cmd.AddCommand(newAutoscaleEventsCmd(), newAutoscaleStatusCmd(), newAutoscaleConfigCmd())
	return cmd
}

// controllerOptions is what `tide autoscale` and `tide up --autoscale`
// share.
type controllerOptions struct {
	cfg      autoscale.Config
	prov     provision.Provisioner
	stateDir string
	listen   string
	source   autoscale.Source
	leader   autoscale.Leader
	state    autoscale.State
	// http reaches the nodes' HTTP ports (metrics, ring, health): with
	// --tls-*, over mutual TLS. Default: plain HTTP.
	http *http.Client
	// tls, if set, makes listen mutual TLS (and plain text too on
	// loopback).
	tls *tlsconf.Config
}

func runAutoscale(ctx context.Context, f autoscaleFlags) error {
	cfg, err := autoscale.LoadConfig(f.config)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.stateDir, 0o755); err != nil {
		return err
	}
	// With --tls-* the controller reads and drains nodes over mutual TLS,
	// and the local provisioner starts its nodes with the same files.
	tlsCfg, err := setLogTLS() // the log lease's client too
	if err != nil {
		return err
	}
	extra, err := tlsArgs()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go tlsCfg.Watch(ctx, 0)
	capacity, err := launchCapacity(cfg)
	if err != nil {
		return err
	}
	var prov provision.Provisioner
	switch f.provisioner {
	case "local":
		// A controller that crashes leaves its nodes running for the next
		// one, which adopts them (several controllers may stand by).
		prov, err = localprov.New(localprov.Config{Dir: filepath.Join(f.stateDir, "nodes"), Capacity: capacity, Replicas: cfg.Launch.Replicas, Outlive: true,
			Extra: extra, HTTPClient: &http.Client{Transport: tlsCfg.HTTPTransport(), Timeout: 10 * time.Minute}})
	case "docker":
		var mem int64
		if f.dockerMemory != "" {
			if mem, err = parseBytes(f.dockerMemory); err != nil {
				return fmt.Errorf("--docker-memory: %w", err)
			}
		}
		if f.dockerBuild {
			if err := buildSelfImage(ctx, f.dockerImage); err != nil {
				return err
			}
		}
		// With --tls-*, the files go into every node container, and the
		// nodes start with them (their certificate must name the
		// containers' addresses).
		files, tlsFlags, err := containerTLS()
		if err != nil {
			return err
		}
		prov, err = dockerprov.New(dockerprov.Config{Image: f.dockerImage, Cluster: f.dockerCluster, Network: f.dockerNetwork,
			NanoCPUs: int64(f.dockerCPUs * 1e9), Memory: mem, Capacity: capacity, Replicas: cfg.Launch.Replicas,
			Files: files, Extra: tlsFlags, HTTPClient: &http.Client{Transport: tlsCfg.HTTPTransport(), Timeout: 10 * time.Minute}})
	case "kubernetes":
		// It scales the workload you deployed and starts no pod itself,
		// so it gives nodes no certificate: with --tls-* it checks that
		// the pod template starts tide with --tls-* files on a volume
		// mount, and drains nodes over mutual TLS at their DNS names.
		var kp *k8sprov.Provisioner
		kp, err = k8sprov.New(k8sprov.Config{Namespace: f.k8sNamespace, Kind: f.k8sKind, Name: f.k8sName, Selector: f.k8sSelector, Service: f.k8sService,
			TLS: tlsCfg != nil, HTTPClient: &http.Client{Transport: tlsCfg.HTTPTransport(), Timeout: 30 * time.Minute}})
		if err == nil {
			err = checkK8sTLS(ctx, kp)
		}
		prov = kp
	case "aws":
		if f.awsGroup == "" {
			return fmt.Errorf("--provisioner aws needs --aws-group")
		}
		// The group's launch template starts the nodes, so its user data
		// carries their TLS files (tideaws.UserDataOptions.TLS); the
		// controller drains them over mutual TLS at their private IPs.
		// With --tls-* it looks for the flags in that user data, and only
		// warns: user data may fetch its script from elsewhere.
		var ap *tideaws.Provisioner
		ap, err = tideaws.New(ctx, tideaws.Config{Group: f.awsGroup, Region: f.awsRegion, EndpointURL: f.awsEndpoint, LifecycleHook: f.awsHook,
			HTTPClient: &http.Client{Transport: tlsCfg.HTTPTransport(), Timeout: 30 * time.Minute}})
		if err == nil && tlsCfg != nil {
			if cerr := ap.CheckTLS(ctx); cerr != nil {
				slog.Warn("autoscale: the nodes may start without TLS", "err", cerr)
			}
		}
		prov = ap
	default:
		return fmt.Errorf("--provisioner %q: want local, docker, kubernetes or aws", f.provisioner)
	}
	if err != nil {
		return fmt.Errorf("%s provisioner: %w", f.provisioner, err)
	}
	opts := controllerOptions{cfg: cfg, prov: prov, stateDir: f.stateDir, listen: f.listen, tls: tlsCfg}
	if tlsCfg != nil {
		opts.http = tlsCfg.HTTPClient(5 * time.Second)
	}
	if f.prometheus != "" {
		opts.source = &autoscale.PrometheusSource{URL: strings.TrimRight(f.prometheus, "/")}
	}
	if f.logLease != "" {
		d, err := loadCurrent(f.logLease)
		if err != nil {
			return fmt.Errorf("--log-lease: %w", err)
		}
		c, err := node.NewClient(d, "", 1)
		if err != nil {
			return fmt.Errorf("--log-lease: %w", err)
		}
		defer c.Close()
		holder := f.holder
		if holder == "" {
			h, _ := os.Hostname()
			holder = fmt.Sprintf("%s-%d", h, os.Getpid())
		}
		opts.leader = &autoscale.LogLease{KV: c, Holder: holder, TTL: 5 * time.Duration(cfg.Period)}
		opts.state = autoscale.LogState{KV: c}
	}
	err = runController(ctx, opts)
	if lp, ok := prov.(*localprov.Provisioner); ok {
		// Local nodes are this process's children: they stop with it, and
		// keep their data for the next run.
		lp.StopAll(10 * time.Second)
	}
	return err
}

// checkK8sTLS stops a controller with --tls-* whose workload would start
// nodes without TLS; a failed API request is only logged (Launch checks
// again), so that a controller starts while the API server is away.
func checkK8sTLS(ctx context.Context, p *k8sprov.Provisioner) error {
	err := p.CheckTLS(ctx)
	if errors.Is(err, k8sprov.ErrNoTLS) {
		return err
	}
	if err != nil {
		slog.Warn("autoscale: cannot check the workload's TLS yet", "err", err)
	}
	return nil
}

func launchCapacity(cfg autoscale.Config) (int64, error) {
	if cfg.Launch.Capacity == "" {
		return 0, nil
	}
	v, err := parseBytes(cfg.Launch.Capacity)
	if err != nil {
		return 0, fmt.Errorf("launch.capacity: %w", err)
	}
	return v, nil
}

// runController runs a controller until ctx ends.
func runController(ctx context.Context, o controllerOptions) error {
	c, err := newController(o)
	if err != nil {
		return err
	}
	if o.listen != "" {
		ln, err := net.Listen("tcp", o.listen)
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		// Its routes only read: a plain-text client on loopback may
		// read them as one with a certificate may.
		addr := ln.Addr().String()
		ln = o.tls.ListenTide(ln, true)
		srv := &http.Server{Handler: c.Handler()}
		go srv.Serve(ln)
		defer srv.Close()
		slog.Info("autoscale: serving events and status", "addr", addr, "tls", o.tls != nil)
	}
	slog.Info("autoscale: controller running", "provisioner", o.prov.Name(), "period", time.Duration(o.cfg.Period),
		"min", o.cfg.Store.Min, "max", o.cfg.Store.Max, "high", o.cfg.Store.High, "low", o.cfg.Store.Low)
	return c.Run(ctx)
}

// newController builds the store controller o describes.
func newController(o controllerOptions) (*autoscale.Controller, error) {
	if o.leader == nil {
		o.leader = &autoscale.FileLock{Path: filepath.Join(o.stateDir, "leader.lock")}
	}
	if o.state == nil {
		o.state = autoscale.FileState{Path: filepath.Join(o.stateDir, "pending.json")}
	}
	c := &autoscale.Controller{
		Policy: autoscale.StorePolicy{Cfg: o.cfg.Store, StaleAfter: time.Duration(o.cfg.StaleAfter)},
		Prov:   o.prov, Source: o.source, Leader: o.leader, State: o.state,
		EventsPath: filepath.Join(o.stateDir, "events.jsonl"),
		Period:     time.Duration(o.cfg.Period), Log: slog.Default(),
		// launch.flags reach nodes once, through the template: the local
		// and docker provisioners add Spec.Extra to every node they start.
		Template: provision.Spec{Replicas: o.cfg.Launch.Replicas, Extra: o.cfg.Launch.Flags},
		HTTP:     o.http,
	}
	if o.source == nil && o.http != nil {
		c.Source = &autoscale.Scraper{Client: o.http}
	}
	if capBytes, err := launchCapacity(o.cfg); err == nil {
		c.Template.Capacity = capBytes
	}
	if err := c.Init(); err != nil {
		return nil, err
	}
	return c, nil
}

func newAutoscaleEventsCmd() *cobra.Command {
	var addr, file string
	var since uint64
	var asJSON, follow bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List the autoscaler's events: decisions, their reasons, actions and outcomes",
		Long: `List the events of a running controller (GET /events on its --listen address)
or, with --file, of an events.jsonl in a controller's --state-dir (readable
after it stopped). --follow keeps printing new events.

A controller started with --tls-* serves mutual TLS: give the same global
--tls-ca, --tls-cert and --tls-key (a certificate of its CA), or reach it in
plain text on loopback.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			print := func(evs []autoscale.Event) {
				if asJSON {
					enc := json.NewEncoder(os.Stdout)
					for _, ev := range evs {
						enc.Encode(ev)
					}
					return
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
				for _, ev := range evs {
					extra := ev.Instance
					if ev.Error != "" {
						extra += " error: " + ev.Error
					}
					if ev.Seconds > 0 {
						extra += fmt.Sprintf(" (%.1fs)", ev.Seconds)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.Local().Format("15:04:05.000"), ev.System, ev.Action, ev.Outcome, ev.Reason, strings.TrimSpace(extra))
				}
				tw.Flush()
			}
			if file != "" {
				ev, err := autoscale.NewEvents(1<<20, "", nil)
				if err != nil {
					return err
				}
				b, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				var evs []autoscale.Event
				for _, line := range strings.Split(string(b), "\n") {
					var e autoscale.Event
					if json.Unmarshal([]byte(line), &e) == nil && e.Seq > since {
						evs = append(evs, e)
					}
				}
				_ = ev
				print(evs)
				return nil
			}
			hc, err := autoscaleClient()
			if err != nil {
				return err
			}
			for {
				var evs []autoscale.Event
				if err := fetchJSONWith(cmd.Context(), hc, fmt.Sprintf("http://%s/events?since=%d", addr, since), &evs); err != nil {
					return controllerErr(addr, err)
				}
				print(evs)
				if len(evs) > 0 {
					since = evs[len(evs)-1].Seq
				}
				if !follow {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:7070", "the controller's --listen address")
	cmd.Flags().StringVar(&file, "file", "", "read an events.jsonl file instead")
	cmd.Flags().Uint64Var(&since, "since", 0, "only events after this sequence number")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	return cmd
}

func newAutoscaleStatusCmd() *cobra.Command {
	var addr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a running controller's view: leadership, instances, ring and last metrics",
		Long: `Show what a running controller (its --listen address) sees: whether it leads,
the change in flight, when it last scaled out and in, and each instance with
its state and last metrics. --json prints the controller's GET /status.

A controller started with --tls-* serves mutual TLS: give the same global
--tls-ca, --tls-cert and --tls-key (a certificate of its CA), or reach it in
plain text on loopback.`,
		Example: `  tide autoscale status
  tide autoscale status --addr 127.0.0.1:7070 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var st autoscale.Status
			var raw json.RawMessage
			hc, err := autoscaleClient()
			if err != nil {
				return err
			}
			if err := fetchJSONWith(cmd.Context(), hc, "http://"+addr+"/status", &raw); err != nil {
				return controllerErr(addr, err)
			}
			if asJSON {
				fmt.Println(string(raw))
				return nil
			}
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("controller at %s: %w", addr, err)
			}
			fmt.Print(formatStatus(st, time.Now()))
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:7070", "the controller's --listen address")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the controller's status as JSON")
	return cmd
}

// formatStatus renders a controller's status for people: times as "12:03:04
// (2m ago)" or "never", instances as a table.
func formatStatus(st autoscale.Status, now time.Time) string {
	when := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format("15:04:05"), now.Sub(t).Round(time.Second))
	}
	var b strings.Builder
	role := "standby (another controller leads)"
	if st.Leader {
		role = "leader"
	}
	flight := "no change in flight"
	if st.InFlight {
		flight = "a change in flight"
	}
	fmt.Fprintf(&b, "%s controller, %s provisioner: %s, %s\n", st.System, st.Provision, role, flight)
	fmt.Fprintf(&b, "last scale-out: %s; last scale-in: %s\n", when(st.LastOut), when(st.LastIn))
	if st.RetryAfter.After(now) {
		fmt.Fprintf(&b, "launches retried after %s\n", st.RetryAfter.Local().Format("15:04:05"))
	}
	fmt.Fprintf(&b, "ring members: %d\n\n", len(st.Ring))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tSTATE\tHTTP\tCHORD\tDISK\tREQ/S\tSTARTED")
	for _, in := range st.Instances {
		disk, ops := "-", "-"
		if st.Last != nil {
			if o, ok := st.Last.Obs[in.ID]; ok {
				disk, ops = fmt.Sprintf("%.1f%%", o.DiskPercent), fmt.Sprintf("%.0f", o.OpsPerSec)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.State, in.HTTPAddr, in.ChordAddr, disk, ops, when(in.Started))
	}
	tw.Flush()
	return b.String()
}

func newAutoscaleConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the policy configuration file with every default",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Print(autoscale.DefaultConfig)
		},
	}
}

func fetchJSON(ctx context.Context, url string, v any) error {
	return fetchJSONWith(ctx, &http.Client{Timeout: 10 * time.Second}, url, v)
}

// fetchJSONWith is fetchJSON with the client hc.
func fetchJSONWith(ctx context.Context, hc *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if msg := strings.TrimSpace(string(b)); msg != "" {
			return fmt.Errorf("%s: %s", resp.Status, msg)
		}
		return fmt.Errorf("%s", resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// buildSelfImage builds the node image FROM scratch around this (static)
// tide binary.
func buildSelfImage(ctx context.Context, image string) error {
	cli, err := dockerprov.NewClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "building image %s around %s\n", image, self)
	return dockerprov.BuildImage(ctx, cli, self, image)
}

// controllerErr says which controller failed, and what a plain-text
// client refused by a controller's mutual TLS is missing.
func controllerErr(addr string, err error) error {
	if !globalTLS.Enabled() && strings.Contains(err.Error(), "HTTPS server") {
		return fmt.Errorf("controller at %s: %w (it serves mutual TLS, and plain text only on loopback: give --tls-ca, --tls-cert and --tls-key)", addr, err)
	}
	return fmt.Errorf("controller at %s: %w", addr, err)
}

// autoscaleClient reaches a controller's --listen: over mutual TLS with
// the global --tls-* flags, else in plain text (which a controller with
// --tls-* takes on loopback only).
func autoscaleClient() (*http.Client, error) {
	t, err := loadTLS()
	if err != nil {
		return nil, err
	}
	return t.HTTPClient(10 * time.Second), nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"tide/autoscale"
	"tide/autoscale/provision"
	localprov "tide/autoscale/provision/local"
	"tide/cluster"
	"tide/paxos/node"
	"tide/tlsconf"
	"tide/web"
)

// upOptions are tide up's flags.
type upOptions struct {
	nodes, replicas, basePort, respPort int
	dir, capacity, host                 string
	hostPerNode, resp, logOn, autoscale bool
	autoscaleConfig, autoscaleListen    string
	logCapacity, logConfig              string
	dashboard                           string
	demo, tls, insecure                 bool
	demoDuration                        time.Duration
}

// defaultLogCapacity is what one instance of each log role handles, in
// messages received per second: the README's `tide bench component`
// figures on a 2-core machine, rounded down. `--log-capacity` replaces it
// with a measured profile.
var defaultLogCapacity = map[string]float64{"batchers": 150000, "proxy-leaders": 12000, "acceptor-groups": 8000, "replicas": 5000, "unbatchers": 2000}

func newUpCmd() *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the whole system locally: a store ring, a tide log, the autoscaler and the dashboard",
		Long: `Start tide on this machine and run it until Ctrl-C:

  - a ring of --nodes storage nodes (files, KV over HTTP and the Redis
    protocol), each a child process;
  - a tide log with its default deployment (3 matchmakers, 1 batcher,
    2 leaders, 2 proxy leaders, 3 acceptors, 2 replicas, 1 unbatcher), a
    child process per role;
  - the autoscaler, in this process, watching both: it adds and drains
    storage nodes through the local provisioner, and resizes the log's
    compartments;
  - the dashboard, a page that shows all of it live.

It prints where everything listens and three commands to try. Data and logs
go under --data-dir: a second 'tide up' with the same directory brings the
same ring and log back; two at once in one directory are refused. Ctrl-C (or
SIGTERM, or closing the terminal) stops every child; on Linux the children
also die if this process is killed.

By default node i (from 1) listens on 127.0.0.i with the standard ports: 5057
(Chord), 5058 (HTTP) and 6379 (Redis), so the seed's scripts and redis-cli
work against any node unchanged. --host-per-node=false puts every node on
--host with consecutive ports from --base-port; --base-port 0 lets every node
take free ports and report them, so that several 'tide up' can run at once
(each with its own --data-dir, --dashboard and --autoscale-listen).

--tls runs every process with mutual TLS between them: the store nodes (KV
replication, file replication, Chord RPC), every log role, the autoscaler's
reads and drains, and the dashboard's reads. On first use it makes a CA and a
certificate for 127.0.0.1-254 and localhost under --data-dir/tls (ca.crt,
node.crt, node.key; the same certificate serves as a client's); later runs
reuse them. The global --tls-ca, --tls-cert and --tls-key give your own
instead. Ports on loopback still take plain text too, so redis-cli, curl and
the seed's scripts keep working unchanged; with TLS a plain-text client may
read but not change the cluster's membership or stop a node.

--demo also runs a load generator: it uploads files until the nodes pass the
autoscaler's high mark, writes keys and drives the log, so that a node and
log instances are added within a minute; after --demo-duration it deletes its
files and stops, and the autoscaler scales back in.`,
		Example: `  tide up
  tide up --demo
  tide up --tls
  tide up --nodes 5 --capacity 64MiB --autoscale-config autoscale.yaml
  tide up --data-dir /tmp/t2 --host-per-node=false --base-port 0 --dashboard 127.0.0.1:0 --autoscale-listen 127.0.0.1:0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("config") && cmd.Flags().Changed("autoscale-config") {
				return errors.New("--config and --autoscale-config are the same setting: give one")
			}
			return runUp(cmd, o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.nodes, "nodes", 3, "storage nodes to start with")
	f.IntVar(&o.replicas, "replicas", 3, "copies of each file and key (N)")
	f.StringVar(&o.dir, "data-dir", "tide-data", "directory for every process's data and log")
	f.StringVar(&o.capacity, "capacity", "", "each storage node's capacity, e.g. 64MiB (default: the filesystem's size; --demo: 64MiB)")
	f.BoolVar(&o.hostPerNode, "host-per-node", true, "give node i (from 1) the address 127.0.0.i with the standard ports")
	f.StringVar(&o.host, "host", "127.0.0.1", "with --host-per-node=false: the address every node listens on")
	f.IntVar(&o.basePort, "base-port", 5057, "first port (Chord on it, HTTP on the next); with --host-per-node=false, node i takes base+2(i-1) and base+2(i-1)+1; 0: free ports the nodes report")
	f.BoolVar(&o.resp, "resp", true, "serve the Redis protocol on every node")
	f.IntVar(&o.respPort, "resp-port", 6379, "Redis protocol port on each node's host (0: a free port; with --host-per-node=false, always 0)")
	f.BoolVar(&o.logOn, "log", true, "start a tide log")
	f.StringVar(&o.logCapacity, "log-capacity", "", "log roles' capacities for the log autoscaler, a JSON file (tide bench component --profile) or role=rate,... (default: figures measured on a 2-core machine)")
	f.StringVar(&o.logConfig, "log-autoscale-config", "", "the log policy as YAML (see tide log up --help)")
	f.BoolVar(&o.autoscale, "autoscale", true, "run the autoscaler over the ring and the log")
	f.StringVar(&o.autoscaleConfig, "autoscale-config", "", "store autoscaler policy file (write one with 'tide autoscale config > autoscale.yaml')")
	f.StringVar(&o.autoscaleConfig, "config", "", "alias of --autoscale-config, as 'tide autoscale --config'")
	f.StringVar(&o.autoscaleListen, "autoscale-listen", "127.0.0.1:7070", "where the store autoscaler serves /events, /status and /metrics (tide autoscale events --addr)")
	f.StringVar(&o.dashboard, "dashboard", "127.0.0.1:7080", "where the dashboard listens (empty: no dashboard)")
	f.BoolVar(&o.tls, "tls", false, "mutual TLS between every process, with a CA and certificate made under --data-dir/tls (or the global --tls-* files)")
	f.BoolVar(&o.insecure, "insecure", false, "without --tls: serve the dashboard in plain text on an interface other than loopback")
	f.BoolVar(&o.demo, "demo", false, "also run a load generator that makes the autoscaler scale out, then in")
	f.DurationVar(&o.demoDuration, "demo-duration", 45*time.Second, "with --demo: how long the load runs before it stops and its files are deleted")
	return cmd
}

func runUp(cmd *cobra.Command, o upOptions) error {
	start := time.Now()
	out := cmd.OutOrStdout()
	// Everything that can be wrong with the input is found before
	// anything starts.
	if o.nodes < 1 || o.nodes > 250 {
		return fmt.Errorf("--nodes %d out of range [1, 250]", o.nodes)
	}
	if o.demo && o.capacity == "" {
		o.capacity = "64MiB"
	}
	var capBytes int64
	if o.capacity != "" {
		var err error
		if capBytes, err = parseBytes(o.capacity); err != nil {
			return fmt.Errorf("--capacity: %w", err)
		}
	}
	cfg, err := autoscale.LoadConfig(o.autoscaleConfig)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--autoscale-config %s does not exist: write one with 'tide autoscale config > %s' and edit it", o.autoscaleConfig, o.autoscaleConfig)
		}
		return fmt.Errorf("--autoscale-config: %w", err)
	}
	if o.autoscaleConfig == "" && o.demo {
		cfg = demoStoreConfig(cfg)
	}
	if capBytes > 0 {
		cfg.Launch.Capacity = strconv.FormatInt(capBytes, 10)
	} else if capBytes, err = launchCapacity(cfg); err != nil {
		return err
	}
	if cmd.Flags().Changed("replicas") || o.autoscaleConfig == "" {
		cfg.Launch.Replicas = o.replicas
	}
	o.replicas = cfg.Launch.Replicas
	logPol, err := upLogPolicy(o)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	unlock, err := lockDir(abs)
	if err != nil {
		return err
	}
	defer unlock()
	if o.tls && !globalTLS.Enabled() {
		if globalTLS, err = upCerts(filepath.Join(abs, "tls"), o.host); err != nil {
			return fmt.Errorf("--tls: %w", err)
		}
	}
	// With TLS every child gets the files, and this process reads and
	// drains them, serves the autoscaler and the dashboard, and runs the
	// log's client over mutual TLS.
	tlsCfg, err := setLogTLS()
	if err != nil {
		return err
	}
	tlsFlags, err := tlsArgs()
	if err != nil {
		return err
	}
	if o.dashboard != "" {
		if err := checkDashboardListen(o.dashboard, "--tls", tlsCfg != nil, o.insecure); err != nil {
			return fmt.Errorf("--dashboard: %w", err)
		}
	}
	layout := cluster.Layout{HostPerNode: o.hostPerNode, Host: o.host, BasePort: o.basePort}
	respPort := o.respPort
	if !o.hostPerNode {
		respPort = 0
	}
	if o.basePort != 0 {
		if err := checkFree(layout, o.nodes, o.resp, respPort); err != nil {
			return err
		}
	}
	// The in-process listeners first: a busy port fails before any child
	// starts.
	var dashLn, asLn net.Listener
	if o.dashboard != "" {
		if dashLn, err = net.Listen("tcp", o.dashboard); err != nil {
			return fmt.Errorf("dashboard: %w (another tide up? choose a free --dashboard address, or 127.0.0.1:0)", err)
		}
		defer dashLn.Close()
	}
	if o.autoscale && o.autoscaleListen != "" {
		if asLn, err = net.Listen("tcp", o.autoscaleListen); err != nil {
			return fmt.Errorf("autoscaler: %w (another tide up or tide autoscale? choose a free --autoscale-listen, or 127.0.0.1:0)", err)
		}
		defer asLn.Close()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	go tlsCfg.Watch(ctx, 0)
	warn := func(name string, err error, tail string) {
		fmt.Fprintf(os.Stderr, "warning: %s exited unexpectedly (%v); its log ends:\n%s\n", name, err, indent(tail))
	}

	// The store ring, through the local provisioner, which the autoscaler
	// then manages.
	lay := func(i int) (string, string, error) {
		if o.basePort == 0 {
			return net.JoinHostPort(o.host, "0"), net.JoinHostPort(o.host, "0"), nil
		}
		c, h := layout.Addrs(i)
		return c, h, nil
	}
	prov, err := localprov.New(localprov.Config{Dir: filepath.Join(abs, "nodes"), Capacity: capBytes, Replicas: o.replicas,
		// --allow-kill: the course's fault-tolerance tests kill nodes of a
		// local ring over msgpack-rpc.
		Extra: append(append([]string{"--allow-kill"}, tlsFlags...), cfg.Launch.Flags...), Layout: lay, RESP: o.resp, RESPPort: respPort,
		HTTPClient: &http.Client{Transport: tlsCfg.HTTPTransport(), Timeout: 10 * time.Minute}})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "stopping storage nodes...")
		prov.StopAll(10 * time.Second)
		fmt.Fprintln(os.Stderr, "stopped")
	}()
	prov.OnExit(warn)
	fmt.Fprintf(out, "starting tide in %s\n", abs)
	resumed, err := prov.Resume(ctx, func(in provision.Instance) {
		fmt.Fprintf(out, "  restarted %s on its data (%s)\n", in.ID, in.HTTPAddr)
	})
	if err != nil {
		return explainBusy(err)
	}
	have, err := prov.List(ctx)
	if err != nil {
		return err
	}
	var nodes []provision.Instance
	for _, in := range have {
		if in.State == provision.StateRunning {
			nodes = append(nodes, in)
		}
	}
	if len(resumed) == 0 && len(nodes) == 0 {
		fmt.Fprintf(out, "  starting %d storage nodes\n", o.nodes)
	}
	for len(nodes) < o.nodes {
		join := ""
		if len(nodes) > 0 {
			join = nodes[0].ChordAddr
		}
		in, err := prov.Launch(ctx, provision.Spec{Join: join, Extra: cfg.Launch.Flags})
		if err != nil {
			return explainBusy(err)
		}
		nodes = append(nodes, in)
	}

	// The log.
	var lr *logRun
	if o.logOn {
		shape := node.DefaultShape
		shape.Host = "127.0.0.1"
		shape.BatchSize, shape.TickMillis, shape.HeartbeatTicks, shape.ElectionTicks, shape.ResendTicks = 200, 10, 5, 30, 10
		lr, err = startLogRun(ctx, logRunOptions{dir: filepath.Join(abs, "log"), shape: shape, rh: &roleHostFlags{provisioner: "local"},
			reuse: true, autoscale: o.autoscale, policy: logPol, period: 2 * time.Second, onExit: warn,
			log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, io.Discard)
		if err != nil {
			return fmt.Errorf("tide log: %w", err)
		}
		defer func() {
			fmt.Fprintln(os.Stderr, "stopping the log...")
			lr.Close()
		}()
	}

	// The store autoscaler.
	var ctl *autoscale.Controller
	if o.autoscale {
		co := controllerOptions{cfg: cfg, prov: prov, stateDir: abs, tls: tlsCfg}
		if tlsCfg != nil {
			co.http = tlsCfg.HTTPClient(5 * time.Second)
		}
		if ctl, err = newController(co); err != nil {
			return err
		}
		// The console gets the changes, not every reason to hold: those
		// are on the dashboard and at the controller's /events.
		quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		ctl.Log = quiet
		printChanges := func(ev autoscale.Event) {
			if ev.Action != autoscale.ActNone && ev.Outcome != "decided" {
				msg := fmt.Sprintf("autoscale: %s %s %s: %s", ev.System, strings.ReplaceAll(string(ev.Action), "_", " "), ev.Outcome, ev.Reason)
				if ev.Instance != "" && ev.System == "store" {
					msg += " (" + ev.Instance + ")"
				}
				if ev.Error != "" {
					msg += ": " + ev.Error
				}
				fmt.Fprintln(out, msg)
			}
		}
		ctl.Events.OnEvent(printChanges)
		if lr != nil && lr.events != nil {
			lr.events.OnEvent(printChanges)
		}
		if asLn != nil {
			srv := &http.Server{Handler: ctl.Handler(), ReadHeaderTimeout: 5 * time.Second}
			go srv.Serve(tlsCfg.ListenTide(asLn, true))
			defer srv.Close()
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); ctl.Run(cctx) }()
		defer func() { cancel(); <-done }()
	}

	// The dashboard.
	dashURL := ""
	if dashLn != nil {
		dash := &web.Dashboard{Src: web.Sources{
			StoreSeeds: func() []string {
				var s []string
				for _, in := range nodes {
					s = append(s, in.HTTPAddr)
				}
				return s
			},
			Instances: prov.List,
		}}
		if tlsCfg != nil {
			dash.HTTP = tlsCfg.HTTPClient(2 * time.Second)
		}
		if lr != nil {
			depPath := lr.depPath
			dash.Src.Log = func() (node.Deployment, bool) {
				d, err := node.LoadDeployment(depPath)
				return d, err == nil
			}
			if lr.events != nil {
				dash.Src.Events = append(dash.Src.Events, lr.events)
			}
		}
		if ctl != nil {
			dash.Src.Events = append(dash.Src.Events, ctl.Events)
		}
		go dash.Run(ctx)
		srv := &http.Server{Handler: dash.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(tlsCfg.ListenTide(dashLn, true))
		defer srv.Close()
		dashURL = dashboardURL(dashLn.Addr().String(), tlsCfg != nil)
	}

	// The banner.
	first := nodes[0]
	if first.RESPAddr == "" && o.resp {
		first.RESPAddr = respAddrOf(first.HTTPAddr)
	}
	fmt.Fprintf(out, "\ntide is up (%.1fs):\n", time.Since(start).Seconds())
	if dashURL != "" {
		fmt.Fprintf(out, "dashboard  %s\n", dashURL)
	}
	for _, in := range nodes {
		line := fmt.Sprintf("%-10s chord %s  http %s", "store", in.ChordAddr, in.HTTPAddr)
		if r := respAddrOf(in.HTTPAddr); r != "" {
			line += "  redis " + r
		}
		fmt.Fprintf(out, "%s  (%s)\n", line, in.ID)
	}
	if lr != nil {
		fmt.Fprintf(out, "%-10s %d roles, deployment %s\n", "log", len(lr.d.Roles()), lr.depPath)
	}
	if ctl != nil {
		watched := "store and log"
		if lr == nil {
			watched = "store"
		}
		if asLn != nil {
			fmt.Fprintf(out, "%-10s %s; events: tide autoscale events --addr %s\n", "autoscale", watched, asLn.Addr())
		} else {
			fmt.Fprintf(out, "%-10s %s; events in %s\n", "autoscale", watched, filepath.Join(abs, "events.jsonl"))
		}
	}
	if tlsCfg != nil {
		fmt.Fprintf(out, "%-10s mutual TLS between every process; CA %s, certificate %s, key %s\n", "tls", globalTLS.CA, globalTLS.Cert, globalTLS.Key)
	}
	fmt.Fprintf(out, "%-10s %s\n", "data", abs)
	fmt.Fprintln(out, "\nTry:")
	if first.RESPAddr != "" {
		h, p, _ := net.SplitHostPort(first.RESPAddr)
		fmt.Fprintf(out, "  redis-cli -h %s -p %s set greeting hello\n", h, p)
	} else {
		fmt.Fprintf(out, "  tide kv put %s greeting hello\n", first.HTTPAddr)
	}
	fmt.Fprintf(out, "  tide upload README.md %s\n", first.ChordAddr)
	if lr != nil {
		// With TLS the log's roles take its clients' commands over mutual
		// TLS only: the same flags the children got.
		creds := strings.Join(append([]string{""}, tlsFlags...), " ")
		fmt.Fprintf(out, "  tide log put%s %s greeting hello\n", creds, lr.depPath)
	} else {
		fmt.Fprintf(out, "  tide ring %s\n", first.ChordAddr)
	}
	fmt.Fprintln(out, "Press Ctrl-C to stop.")

	if o.demo {
		var dep string
		if lr != nil {
			dep = lr.depPath
		}
		go runDemo(ctx, demoOptions{nodes: func() []provision.Instance { l, _ := prov.List(ctx); return l }, capacity: capBytes,
			deployment: dep, duration: o.demoDuration, out: out})
	}
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "\nstopping...")
	return nil
}

// respAddrOf asks a node where it serves the Redis protocol.
func respAddrOf(httpAddr string) string {
	var info struct {
		RESP string `json:"resp_addr"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if fetchJSON(ctx, "http://"+httpAddr+"/internal/info", &info) != nil {
		return ""
	}
	return info.RESP
}

// upLogPolicy is the log autoscaler's policy for tide up: the log grows
// from its default shape under load and shrinks back to it, never below.
func upLogPolicy(o upOptions) (autoscale.LogPolicy, error) {
	if !o.logOn || !o.autoscale {
		return autoscale.LogPolicy{}, nil
	}
	if o.logCapacity != "" {
		return logPolicy(o.logCapacity, o.logConfig)
	}
	if o.logConfig != "" {
		p, err := logPolicy("", o.logConfig)
		if err != nil && strings.Contains(err.Error(), "names no capacity") {
			return logPolicy(capacityPairs(defaultLogCapacity), o.logConfig)
		}
		return p, err
	}
	cfg := autoscale.LogConfig{Capacity: defaultLogCapacity,
		Min: map[string]int{"batchers": 1, "proxy-leaders": 2, "acceptor-groups": 1, "replicas": 2, "unbatchers": 1}}
	if o.demo {
		cfg = demoLogConfig()
	}
	if err := cfg.Validate(); err != nil {
		return autoscale.LogPolicy{}, err
	}
	return autoscale.LogPolicy{Cfg: cfg}, nil
}

func capacityPairs(m map[string]float64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%g", k, v))
	}
	return strings.Join(parts, ",")
}

// lockDir takes an exclusive lock on dir for this process, so that two
// tide up never share one data directory.
func lockDir(dir string) (func(), error) {
	path := filepath.Join(dir, "tide-up.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		holder := strings.TrimSpace(string(b))
		if holder == "" {
			holder = "unknown"
		}
		return nil, fmt.Errorf("%s is in use by another tide up (pid %s): stop it, or give this one another --data-dir", dir, holder)
	}
	f.Truncate(0)
	f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return func() { f.Close() }, nil
}

// checkFree fails, naming the address, if one that node i of the layout
// would take is already bound by another process.
func checkFree(layout cluster.Layout, n int, resp bool, respPort int) error {
	for i := range n {
		c, h := layout.Addrs(i)
		addrs := []string{c, h}
		if resp && respPort != 0 {
			host, _, _ := net.SplitHostPort(c)
			addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(respPort)))
		}
		for _, a := range addrs {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				return fmt.Errorf("node%d's address %s is in use (another tide up, or a node left running?): stop it, or start with --host-per-node=false --base-port 0 to take free ports: %w", i+1, a, err)
			}
			ln.Close()
		}
	}
	return nil
}

// explainBusy names the address a node could not bind, when that is why
// it failed.
func explainBusy(err error) error {
	if m := busyRE.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("a node could not bind its %s address %s: another process holds it (another tide up? start this one with --host-per-node=false --base-port 0 for free ports)\n%w", m[1], m[2], err)
	}
	return err
}

var busyRE = regexp.MustCompile(`listen on (\w+) address (\S+): listen tcp \S+: bind: address already in use`)

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// upCerts returns the TLS files of tide up --tls in dir: a CA, and one
// certificate for every process and client, valid for localhost, every
// address of 127.0.0.0/24 (the nodes' 127.0.0.i and the log's roles) and
// host. It makes what is missing and reuses the rest.
func upCerts(dir, host string) (tlsconf.Files, error) {
	files := tlsconf.NodeFiles(dir, "node")
	if _, err := os.Stat(files.CA); err != nil {
		if err := tlsconf.InitCA(dir, "tide up CA", 10*365*24*time.Hour); err != nil {
			return tlsconf.Files{}, err
		}
	}
	_, errC := os.Stat(files.Cert)
	_, errK := os.Stat(files.Key)
	if errC == nil && errK == nil {
		return files, nil
	}
	var ips []net.IP
	for i := 1; i < 255; i++ {
		ips = append(ips, net.IPv4(127, 0, 0, byte(i)))
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
		ips = append(ips, ip)
	}
	nc := tlsconf.NodeCert{Name: "node", IPs: ips, DNS: []string{"localhost"}, NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour)}
	if net.ParseIP(host) == nil && host != "" && host != "localhost" {
		nc.DNS = append(nc.DNS, host)
	}
	if _, err := tlsconf.IssueNode(dir, nc); err != nil {
		return tlsconf.Files{}, err
	}
	return files, nil
}

// dashboardURL is where a browser reaches a dashboard listening on addr:
// with TLS, a port off loopback takes HTTPS only.
func dashboardURL(addr string, tls bool) string {
	if tls && !tlsconf.IsLoopback(addr) {
		return "https://" + addr + "/"
	}
	return "http://" + addr + "/"
}

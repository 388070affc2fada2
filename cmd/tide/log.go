package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"tide/autoscale"
	"tide/cluster"
	"tide/netport"
	"tide/paxos"
	"tide/paxos/node"
)

func newLogCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "log",
		Short: "The tide log: compartmentalized MultiPaxos with a linearizable KV",
		Long: `The tide log is a replicated log built as compartmentalized MultiPaxos:
batchers, leaders, proxy leaders, acceptor groups, replicas and unbatchers,
each its own process, each scaling on its own. Replicas run a linearizable
key-value store (get, put, del, cas).

TARGET in the client commands is a deployment file (written by 'tide log up')
or the HTTP address of any role process.

The configuration is state of the log itself: 'tide log scale' and 'tide log
replace' change it while the log runs, each change chosen in the log as a new
epoch; 'tide log status' shows the epoch and the history of changes.

With the global --tls-ca, --tls-cert and --tls-key, 'tide log up' and 'tide log
serve' run every role's transport as mutual TLS, and the client commands need
them too: a certificate of the log's CA that names the address the client
receives replies on (tide cert node NAME --ip ...).`,
	}
	cmd.AddCommand(newLogUpCmd(), newLogServeCmd(), newLogStatusCmd(), newLogScaleCmd(), newLogReplaceCmd(), newLogRemoveCmd(),
		newLogKVCmd("put", "put TARGET KEY VALUE", 3), newLogKVCmd("get", "get TARGET KEY", 2),
		newLogKVCmd("del", "del TARGET KEY", 2), newLogKVCmd("cas", "cas TARGET KEY EXPECT VALUE", 4))
	return cmd
}

func shapeFlags(cmd *cobra.Command, s *node.Shape) {
	f := cmd.Flags()
	f.IntVar(&s.Matchmakers, "matchmakers", s.Matchmakers, "matchmakers, which let acceptor groups change at runtime (0: acceptor groups are fixed)")
	f.IntVar(&s.Batchers, "batchers", s.Batchers, "batchers (0: clients send single commands to the leader)")
	f.IntVar(&s.Leaders, "leaders", s.Leaders, "leaders (one active, the rest standby)")
	f.IntVar(&s.ProxyLeaders, "proxy-leaders", s.ProxyLeaders, "proxy leaders")
	f.IntVar(&s.Groups, "groups", s.Groups, "acceptor groups")
	f.IntVar(&s.F, "f", s.F, "failures tolerated: each group has 2f+1 acceptors")
	f.IntVar(&s.Replicas, "replicas", s.Replicas, "replicas")
	f.IntVar(&s.Unbatchers, "unbatchers", s.Unbatchers, "unbatchers (0: replicas reply to clients)")
	f.IntVar(&s.BatchSize, "batch-size", 500, "most commands per batch (under load a batcher waits for half its clients' outstanding commands, up to this)")
	f.IntVar(&s.TickMillis, "tick-ms", 10, "protocol tick in milliseconds")
	f.IntVar(&s.HeartbeatTicks, "heartbeat-ticks", 5, "active leader's heartbeat period, in ticks")
	f.IntVar(&s.ElectionTicks, "election-ticks", 30, "silence before a standby leader campaigns, in ticks (randomized up to twice this)")
	f.IntVar(&s.ResendTicks, "resend-ticks", 10, "wait before retransmitting an unanswered message, in ticks")
}

func newLogUpCmd() *cobra.Command {
	shape := node.DefaultShape
	var dir, capacity string
	var autoscaleOn bool
	var period time.Duration
	var rh roleHostFlags
	var policyPath string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a local tide log, one process per role, until Ctrl-C",
		Long: `Start a local tide log with every role as its own child process: by default
3 matchmakers, 1 batcher, 2 leaders, 2 proxy leaders, one group of 3 acceptors,
2 replicas and 1 unbatcher. The deployment is written to
--data-dir/deployment.json; pass it (or any role's HTTP address) to
'tide log put|get|del|cas|status|scale|replace|remove', which this process's
control endpoint serves while it runs. With --autoscale and --capacity, a
controller resizes batchers, proxy leaders, acceptor groups, replicas and
unbatchers with load.

--provisioner runs the roles elsewhere: a Docker container each (docker), a
ClusterIP Service and a one-pod Deployment each, the ClusterIP being the
role's address (kubernetes; run tide log up in the cluster, see
deploy/kubernetes/log), or an EC2 instance each on a network interface made
for it first (aws; run it in the VPC). Ctrl-C removes them all.

With the global --tls-ca, --tls-cert and --tls-key every role speaks mutual
TLS, on its role port and its HTTP port (plain text is taken on loopback
only, and changes nothing), and so does the control endpoint. Local roles
get the files' paths; docker copies the files into each container, so the
certificate must name every address of the network. kubernetes puts them
in a Secret per role, mounted at /tls; aws writes them to /etc/tide/tls on
each instance from its user data (16 KiB at most, so a certificate of a few
KB). A role goes by its Service's ClusterIP (kubernetes) or its network
interface's private IP (aws), which the certificate must name: with
--tls-ca-key CA.KEY each role gets a certificate of its own for its address,
issued here by the CA of --tls-ca, and without --tls-cert and --tls-key tide
log up issues its own too, for this machine's addresses (where roles send
replies: in a pod, the pod's IP), into --data-dir/tls. Without --tls-ca-key
the one certificate names every address a role may get (tide cert node
roles --ip with the subnet's addresses; a cluster's Service range is usually
too large to list). Health checks and reconfigurations are mutual TLS.`,
		Example: `  tide log up
  tide log up --proxy-leaders 3 --groups 2 --data-dir /tmp/log
  tide log up --autoscale --capacity proxy-leaders=2000,batchers=4000
  tide log up --provisioner docker --docker-build --cpus 0.5
  tide log up --provisioner kubernetes --tls-ca /tls/ca.crt --tls-ca-key /tls/ca.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			if err := rh.issueOwn(abs); err != nil {
				return err
			}
			if _, err := setLogTLS(); err != nil {
				return err
			}
			var policy autoscale.LogPolicy
			if autoscaleOn {
				if policy, err = logPolicy(capacity, policyPath); err != nil {
					return err
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			run, err := startLogRun(ctx, logRunOptions{dir: abs, shape: shape, rh: &rh, autoscale: autoscaleOn, policy: policy, period: period}, os.Stdout)
			if err != nil {
				return err
			}
			defer func() {
				fmt.Fprintln(os.Stderr, "stopping roles...")
				run.Close()
			}()
			d, depPath := run.d, run.depPath
			if autoscaleOn {
				run.events.OnEvent(func(ev autoscale.Event) {
					if ev.Outcome != "decided" {
						fmt.Printf("autoscale: %s %s: %s (%s)\n", ev.Action, ev.Outcome, ev.Reason, ev.Error)
					}
				})
				fmt.Printf("autoscaling every %s with capacities %v (events in %s)\n", period, policy.Cfg.Capacity, filepath.Join(abs, "autoscale-events.jsonl"))
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ROLE\tADDRESS\tHTTP")
			for _, a := range d.Roles() {
				kind, _, _ := d.RoleOf(a)
				fmt.Fprintf(w, "%s\t%s\thttp://%s\n", kind, a, d.HTTP[a])
			}
			w.Flush()
			fmt.Printf("\nlog is up; deployment: %s\nTry:\n  tide log put %s greeting hello\n  tide log get %s greeting\n  tide log status %s\n  tide log scale %s proxy-leaders 3\nPress Ctrl-C to stop.\n", depPath, depPath, depPath, depPath, depPath)
			<-ctx.Done()
			return nil
		},
	}
	shapeFlags(cmd, &shape)
	cmd.Flags().StringVar(&dir, "data-dir", "tide-log", "directory for the deployment, role state and logs")
	cmd.Flags().StringVar(&shape.Host, "host", "127.0.0.1", "interface every role listens on")
	cmd.Flags().BoolVar(&autoscaleOn, "autoscale", false, "resize batchers, proxy leaders, acceptor groups, replicas and unbatchers with load (needs --capacity)")
	cmd.Flags().StringVar(&capacity, "capacity", "", "with --autoscale: each role's capacity in messages/s, a JSON file (tide bench component --profile) or role=rate,... ")
	cmd.Flags().DurationVar(&period, "autoscale-period", 5*time.Second, "with --autoscale: how often to measure and decide")
	cmd.Flags().StringVar(&policyPath, "autoscale-config", "", "with --autoscale: the log policy as YAML: capacity, target, high, low, periods, min, max, scale_out_cooldown, scale_in_cooldown (--capacity replaces its capacity)")
	rh.flags(cmd)
	return cmd
}

// logPolicy builds the log policy from --autoscale-config (a YAML file
// of autoscale.LogConfig, optional) and --capacity: a JSON file of role
// -> messages/s, or role=rate pairs, which replaces the file's capacity.
func logPolicy(capacity, configPath string) (autoscale.LogPolicy, error) {
	var cfg autoscale.LogConfig
	if configPath != "" {
		b, err := os.ReadFile(configPath)
		if err != nil {
			return autoscale.LogPolicy{}, fmt.Errorf("--autoscale-config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return autoscale.LogPolicy{}, fmt.Errorf("--autoscale-config %s: %w", configPath, err)
		}
		if capacity == "" {
			if len(cfg.Capacity) == 0 {
				return autoscale.LogPolicy{}, fmt.Errorf("--autoscale-config %s names no capacity, and --capacity is not given (measure it with tide bench component --profile FILE)", configPath)
			}
			if err := cfg.Validate(); err != nil {
				return autoscale.LogPolicy{}, fmt.Errorf("--autoscale-config %s: %w", configPath, err)
			}
			return autoscale.LogPolicy{Cfg: cfg}, nil
		}
	}
	if capacity == "" {
		return autoscale.LogPolicy{}, errors.New("--autoscale needs --capacity (measure it with tide bench component --profile FILE)")
	}
	if b, err := os.ReadFile(capacity); err == nil {
		if err := json.Unmarshal(b, &cfg.Capacity); err != nil {
			return autoscale.LogPolicy{}, fmt.Errorf("--capacity %s: %w", capacity, err)
		}
	} else {
		cfg.Capacity = map[string]float64{}
		for _, kv := range strings.Split(capacity, ",") {
			role, rate, ok := strings.Cut(strings.TrimSpace(kv), "=")
			v, err := strconv.ParseFloat(rate, 64)
			if !ok || err != nil {
				return autoscale.LogPolicy{}, fmt.Errorf("--capacity %q: want a JSON file or role=rate pairs (%q is neither)", capacity, kv)
			}
			cfg.Capacity[role] = v
		}
	}
	if err := cfg.Validate(); err != nil {
		return autoscale.LogPolicy{}, fmt.Errorf("--capacity/--autoscale-config: %w", err)
	}
	return autoscale.LogPolicy{Cfg: cfg}, nil
}

func newLogServeCmd() *cobra.Command {
	var depPath, depJSON, dataDir, httpAddr, join, kind, control, addrFile string
	var roles, listen []string
	var procs int
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run one or more roles of a tide log deployment in this process",
		Long: `Run roles of a tide log in this process. Either --deployment names the
deployment file and --role picks roles it lists (default: all), or --join names
the HTTP address of any running role process: the current configuration is
fetched from it, and --role with --kind starts a new instance, which serves once
a reconfiguration adds it (tide log scale does both).

A --role or --http-addr with port 0 takes a free port, and the role goes by the
address it holds; the port is picked below the kernel's ephemeral range, so
that no outgoing connection can hold it when the role restarts on it. The process binds every address first and, with --addr-file,
reports them ({"roles": [...], "http": ...}) before it reads the deployment:
with --deployment -, from its standard input, so that a supervisor (tide log up)
starts every role on port 0, collects their addresses, and then hands each the
deployment laid out on them.

The process runs with GODEBUG=schedtrace=2147483647 (it executes itself again
with it, in place, unless GODEBUG already sets schedtrace): the Go runtime's
monitor thread then wakes every 10 ms instead of every 20 µs while a role is
busy, which halves the CPU a write costs. GODEBUG=schedtrace=0 opts out. The
only output is a line of scheduler statistics on standard error every 24.8
days of the machine's uptime.`,
		Example: `  tide log serve --deployment tide-log/deployment.json --role 127.0.0.1:7001 --http-addr 127.0.0.1:7101
  tide log serve --join 127.0.0.1:7101 --kind proxy --role 127.0.0.1:0 --addr-file proxy.ready.json`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{steadySysmonAnnotation: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if procs < 0 {
				return fmt.Errorf("--procs %d: want 0 (Go's default) or more", procs)
			}
			tlsCfg, err := setLogTLS()
			if err != nil {
				return err
			}
			if procs > 0 {
				runtime.GOMAXPROCS(procs)
			}
			var d node.Deployment
			load := func() error {
				var err error
				switch {
				case join != "":
					d, err = loadTarget(join)
				case depJSON != "":
					d, err = node.ReadDeployment(strings.NewReader(depJSON))
					if err != nil {
						err = fmt.Errorf("--deployment-json: %w", err)
					}
				case depPath == "-":
					d, err = node.ReadDeployment(os.Stdin)
					if err != nil {
						err = fmt.Errorf("--deployment -: the deployment on standard input: %w", err)
					}
				default:
					d, err = node.LoadDeployment(depPath)
				}
				return err
			}
			if kind != "" && !slices.Contains(node.Kinds, kind) {
				return fmt.Errorf("--kind %q: want one of %s", kind, strings.Join(node.Kinds, ", "))
			}
			if kind != "" && len(roles) == 0 {
				return errors.New("--kind needs --role ADDR")
			}
			if depPath == "-" && join == "" && depJSON == "" && len(roles) == 0 {
				return errors.New("--deployment - needs --role: the roles bind before the deployment arrives")
			}
			if len(listen) > 0 && len(listen) != len(roles) {
				return fmt.Errorf("--listen gives %d addresses for %d --role addresses: give one per role, in the same order", len(listen), len(roles))
			}
			loaded := false
			if len(roles) == 0 {
				if err := load(); err != nil {
					return err
				}
				roles, loaded = d.Roles(), true
			}
			lns, err := bindRoles(roles, listen)
			if err != nil {
				return err
			}
			defer func() {
				for _, l := range lns {
					l.Close()
				}
			}()
			httpLn, err := netport.Listen(httpAddr)
			if err != nil {
				return fmt.Errorf("--http-addr %s: %w", httpAddr, err)
			}
			if addrFile != "" {
				rep := map[string]any{"roles": roles, "http": httpLn.Addr().String()}
				if err := writeAddrFile(addrFile, rep); err != nil {
					httpLn.Close()
					return err
				}
			}
			if !loaded {
				if err := load(); err != nil {
					httpLn.Close()
					return err
				}
			}
			if control != "" {
				d.Control = control
			}
			d.Certs = tlsCfg
			specs := make([]node.RoleSpec, len(roles))
			for i, a := range roles {
				k := kind
				if k == "" {
					if k, _, err = d.RoleOf(a); err != nil {
						httpLn.Close()
						return err
					}
				}
				specs[i] = node.RoleSpec{Addr: a, Kind: k, Listener: lns[i]}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go tlsCfg.Watch(ctx, 0)
			return node.ServeRolesOn(ctx, d, specs, dataDir, httpLn, slog.Default())
		},
	}
	cmd.Flags().StringVar(&depPath, "deployment", "deployment.json", "deployment file; - reads it from standard input once the roles are bound")
	cmd.Flags().StringVar(&depJSON, "deployment-json", "", "the deployment itself, as JSON (instead of --deployment; containers use it)")
	cmd.Flags().StringVar(&join, "join", "", "HTTP address of a running role process to fetch the configuration from (instead of --deployment)")
	cmd.Flags().StringVar(&kind, "kind", "", "role kind of --role addresses the configuration does not list yet: "+strings.Join(node.Kinds, ", "))
	cmd.Flags().StringSliceVar(&roles, "role", nil, "role addresses to run here (default: all): each role's address in the configuration, which peers send to; port 0 takes a free port, and the role goes by the address it holds")
	cmd.Flags().StringSliceVar(&listen, "listen", nil, "addresses the --role roles bind instead, one per --role in order, e.g. 0.0.0.0:5057 behind a Kubernetes Service whose ClusterIP is the role's address (default: the --role address)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "tide-log/state", "directory for durable role state (tide log up's --data-dir keeps it in its state subdirectory)")
	cmd.Flags().StringVar(&httpAddr, "http-addr", "127.0.0.1:0", "address this process binds for /metrics, /status and /deployment (others reach it at the address the deployment lists, which may differ, e.g. 0.0.0.0:5058 here)")
	cmd.Flags().StringVar(&control, "control", "", "HTTP address of the process that starts and stops roles (set by tide log up)")
	cmd.Flags().IntVar(&procs, "procs", 0, "CPUs this process runs Go code on at once (GOMAXPROCS; 0: Go's default, the CPU limit); tide log up sets 1 for local roles, which share the machine (a role's state machine runs on one goroutine, and fewer threads waking one another cost less CPU per command)")
	cmd.Flags().StringVar(&addrFile, "addr-file", "", "once every address is bound, write them as JSON ({\"roles\": [...], \"http\": ...}) to this file, e.g. for roles started on port 0")
	return cmd
}

// bindRoles binds each role address, or its --listen address when given.
// A role bound on its own address with port 0 goes by the address it got:
// roles[i] is rewritten to it.
func bindRoles(roles, listen []string) ([]net.Listener, error) {
	var lns []net.Listener
	fail := func(err error) ([]net.Listener, error) {
		for _, l := range lns {
			l.Close()
		}
		return nil, err
	}
	for i, a := range roles {
		at, flag := a, "--role"
		if len(listen) > 0 {
			at, flag = listen[i], "--listen"
		}
		if _, _, err := net.SplitHostPort(at); err != nil {
			return fail(fmt.Errorf("%s %q: want HOST:PORT: %w", flag, at, err))
		}
		l, err := netport.Listen(at)
		if err != nil {
			return fail(fmt.Errorf("%s %s: %w", flag, at, err))
		}
		lns = append(lns, l)
		if _, port, _ := net.SplitHostPort(a); port == "0" && len(listen) == 0 {
			roles[i] = l.Addr().String()
		}
	}
	return lns, nil
}

func newLogScaleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scale TARGET ROLE N",
		Short: "Grow or shrink one compartment of a running log",
		Long: `Make compartment ROLE of the log have N instances, while the log runs:
ROLE is one of ` + strings.Join(cluster.RoleNames, ", ") + `.
New instances start as processes, join, and are added by a reconfiguration
chosen in the log; removed ones drain what they hold in flight before they stop.
Acceptor groups change by a new leader round over the new groups; the old
groups stop once no slot depends on them. TARGET is the deployment file or a
role's HTTP address, of a log started by 'tide log up'.`,
		Example: `  tide log scale tide-log/deployment.json proxy-leaders 4
  tide log scale 127.0.0.1:41693 acceptor-groups 2`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[2])
			if err != nil || n < 0 {
				return fmt.Errorf("N must be a count, got %q", args[2])
			}
			if _, ok := cluster.Roles[args[1]]; !ok {
				return fmt.Errorf("unknown role %q: want one of %s", args[1], strings.Join(cluster.RoleNames, ", "))
			}
			return control(cmd.Context(), args[0], "/scale?role="+url.QueryEscape(args[1])+"&n="+args[2])
		},
	}
	return cmd
}

func newLogReplaceCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "replace TARGET ACCEPTOR",
		Short: "Replace one acceptor of a running log with a new one",
		Long: `Start a new acceptor, put it in ACCEPTOR's place through a reconfiguration
chosen in the log, wait until the old acceptor configuration is retired (no slot
depends on it), then stop ACCEPTOR. TARGET is the deployment file or a role's
HTTP address, of a log started by 'tide log up'.`,
		Example: `  tide log status tide-log/deployment.json   # the acceptors' addresses
  tide log replace tide-log/deployment.json 127.0.0.1:37417`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return control(cmd.Context(), args[0], "/replace?addr="+url.QueryEscape(args[1]))
		},
	}
}

func newLogRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove TARGET ADDR",
		Short: "Take one batcher, leader, proxy leader, replica or unbatcher out of a running log",
		Long: `Remove the instance at ADDR through a reconfiguration chosen in the log, wait
until it has drained (a leader hands leadership over first if it is the active
one; a replica leaves once a majority of those staying hold the log through the
change), then stop it. Acceptors are replaced ('tide log replace') or leave with
their group ('tide log scale TARGET acceptor-groups N'). TARGET is the
deployment file or a role's HTTP address, of a log started by 'tide log up'.`,
		Example: `  tide log remove tide-log/deployment.json 127.0.0.1:43425`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return control(cmd.Context(), args[0], "/remove?addr="+url.QueryEscape(args[1]))
		},
	}
}

// control posts a change to the control endpoint of the log's supervisor
// and streams its progress.
func control(ctx context.Context, target, path string) error {
	if _, err := setLogTLS(); err != nil {
		return err
	}
	d, err := loadTarget(target)
	if err != nil {
		return err
	}
	if d.Control == "" {
		return fmt.Errorf("%s has no control endpoint: scale and replace need a log started by 'tide log up'", target)
	}
	if d.TLS && d.Certs == nil {
		return fmt.Errorf("control endpoint %s: %w", d.Control, node.ErrNeedTLS)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+d.Control+path, nil)
	if err != nil {
		return err
	}
	resp, err := d.HTTPClient(0).Do(req)
	if err != nil {
		return fmt.Errorf("control endpoint %s: %w", d.Control, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("control endpoint %s: %s", d.Control, strings.TrimSpace(string(b)))
	}
	sc := bufio.NewScanner(resp.Body)
	last := ""
	for sc.Scan() {
		last = sc.Text()
		if last != "ok" {
			fmt.Println(last)
		}
	}
	if strings.HasPrefix(last, "error: ") {
		return errors.New(strings.TrimPrefix(last, "error: "))
	}
	if last != "ok" {
		return fmt.Errorf("control endpoint %s: the change ended without an answer: %v", d.Control, sc.Err())
	}
	return nil
}

// loadTarget reads a deployment from a file or from a role's HTTP
// address; it carries the TLS material of setLogTLS.
func loadTarget(target string) (node.Deployment, error) {
	if st, err := os.Stat(target); err == nil && !st.IsDir() {
		d, err := node.LoadDeployment(target)
		d.Certs = logCerts
		return d, err
	}
	d := node.Deployment{Certs: logCerts}
	resp, err := d.HTTPClient(5 * time.Second).Get("http://" + strings.TrimPrefix(target, "http://") + "/deployment")
	if err != nil {
		return d, fmt.Errorf("%s is neither a deployment file nor a reachable role: %w", target, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return d, fmt.Errorf("deployment from %s: %w", target, err)
	}
	d.Certs = logCerts
	return d, d.Validate()
}

// loadCurrent is loadTarget with the newest configuration any role of the
// deployment knows (a deployment file holds the one it was written with).
func loadCurrent(target string) (node.Deployment, error) {
	d, err := loadTarget(target)
	if err != nil || d.Unreplicated != "" {
		return d, err
	}
	if nd, err := cluster.Newest(d); err == nil {
		return nd, nil
	}
	return d, nil
}

func newLogKVCmd(op, use string, nargs int) *cobra.Command {
	var quorum, absent bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use: use,
		Short: map[string]string{"put": "Set a key in the log's linearizable KV", "get": "Read a key of the log's linearizable KV",
			"del": "Delete a key of the log's linearizable KV", "cas": "Compare-and-swap a key of the log's linearizable KV"}[op],
		Long: map[string]string{
			"put": "Set KEY to VALUE: the command goes through the log (batcher, leader, proxy leader,\nacceptors) and is applied by the replicas exactly once; OK once it is chosen and executed.",
			"get": "Print KEY's value, read through the log (linearizable), or with --quorum-read from a\nread quorum of acceptors and a replica that has executed that far, without a slot.",
			"del": "Delete KEY through the log; an error if it did not exist.",
			"cas": "Set KEY to VALUE only if its current value is EXPECT (or, with --expect-absent, if it\ndoes not exist); otherwise fail and print the current value.",
		}[op] + "\n\nTARGET is the log's deployment file (tide up and tide log up print it) or the HTTP\naddress of any role process. A log none of whose roles answers fails at once.",
		Example: map[string]string{
			"put": "  tide log put tide-data/log/deployment.json greeting hello",
			"get": "  tide log get tide-data/log/deployment.json greeting\n  tide log get --quorum-read 127.0.0.1:41401 greeting",
			"del": "  tide log del tide-data/log/deployment.json greeting",
			"cas": "  tide log cas tide-data/log/deployment.json greeting hello bye\n  tide log cas --expect-absent tide-data/log/deployment.json lock - me",
		}[op],
		Args: cobra.ExactArgs(nargs),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := setLogTLS(); err != nil {
				return err
			}
			d, err := loadTarget(args[0])
			if err != nil {
				return err
			}
			if d.TLS && d.Certs == nil {
				return node.ErrNeedTLS
			}
			if d.Unreplicated == "" {
				// Fail at once when no role answers, rather than at the
				// time-out.
				nd, err := cluster.Newest(d)
				if errors.Is(err, node.ErrNoMember) {
					why := strings.TrimPrefix(strings.TrimPrefix(err.Error(), node.ErrNoMember.Error()), "; ")
					if why != "" {
						why = " (" + why + ")"
					}
					return fmt.Errorf("no role of the log in %s answered: is it running? ('tide log status %s' shows each role)%s", args[0], args[0], why)
				}
				d = nd
			}
			c, err := node.NewClient(d, "", 1)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			key := args[1]
			switch op {
			case "put":
				if err := c.Put(ctx, key, []byte(args[2])); err != nil {
					return err
				}
				fmt.Println("OK")
			case "get":
				mode := paxos.ReadThroughLog
				if quorum {
					mode = paxos.ReadQuorum
				}
				v, found, err := c.Get(ctx, key, mode)
				if err != nil {
					return err
				}
				if !found {
					return fmt.Errorf("key %q not found", key)
				}
				fmt.Println(string(v))
			case "del":
				existed, err := c.Del(ctx, key)
				if err != nil {
					return err
				}
				if !existed {
					return fmt.Errorf("key %q not found", key)
				}
				fmt.Println("OK")
			case "cas":
				var expect []byte
				if !absent {
					expect = []byte(args[2])
				}
				ok, old, err := c.CAS(ctx, key, expect, []byte(args[3]))
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("cas %q: current value is %q", key, old)
				}
				fmt.Println("OK")
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	if op == "get" {
		cmd.Flags().BoolVar(&quorum, "quorum-read", false, "read from acceptor quorums and a replica instead of through the log")
	}
	if op == "cas" {
		cmd.Flags().BoolVar(&absent, "expect-absent", false, "succeed only if the key does not exist (EXPECT is ignored)")
	}
	return cmd
}

func newLogStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status TARGET",
		Short: "Show the configuration (epoch and history) and every role: ballot, chosen watermark, executed slots, message rates",
		Long: `Show the log's configuration, as the newest role knows it: its epoch and the
history of changes (what changed, when, and why), and then every role
instance: its kind, address, whether it answers, its ballot, the chosen
watermark and executed slots, and the messages it receives and sends per
second (over a second between two samples). TARGET is the deployment file or
the HTTP address of any role process; if no role answers, it says so at once.`,
		Example: `  tide log status tide-data/log/deployment.json
  tide log status 127.0.0.1:42709 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := setLogTLS(); err != nil {
				return err
			}
			d, err := loadCurrent(args[0])
			if err != nil {
				return err
			}
			first, err := collectStatus(d)
			if err != nil {
				return err
			}
			time.Sleep(time.Second)
			second, _ := collectStatus(d)
			type row struct {
				node.Status
				InPerSec  float64 `json:"in_per_sec"`
				OutPerSec float64 `json:"out_per_sec"`
				Up        bool    `json:"up"`
			}
			var rows []row
			for _, a := range d.Roles() {
				r := row{Status: node.Status{Addr: a}}
				r.Kind, _, _ = d.RoleOf(a)
				if s, ok := second[a]; ok {
					r.Status, r.Up = s, true
					if f, ok := first[a]; ok {
						r.InPerSec = float64(s.MessagesIn - f.MessagesIn)
						r.OutPerSec = float64(s.MessagesOut - f.MessagesOut)
					}
				}
				rows = append(rows, r)
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(struct {
					Epoch   uint64         `json:"epoch"`
					Config  paxos.Config   `json:"config"`
					History []paxos.Change `json:"history"`
					Roles   []row          `json:"roles"`
				}{d.Log.Epoch, d.Log, d.Log.History, rows})
			}
			c := d.Log
			groups := make([]string, len(c.Groups))
			for i, g := range c.Groups {
				groups[i] = strconv.Itoa(len(g.Acceptors))
			}
			fmt.Printf("configuration epoch %d: %d matchmakers, %d batchers, %d leaders, %d proxy leaders, %d acceptor groups (%s acceptors), %d replicas, %d unbatchers\n",
				c.Epoch, len(c.Matchmakers), len(c.Batchers), len(c.Leaders), len(c.ProxyLeaders), len(c.Groups), strings.Join(groups, "+"), len(c.Replicas), len(c.Unbatchers))
			if len(c.History) > 0 {
				fmt.Println("history:")
				for _, h := range c.History {
					fmt.Printf("  epoch %d  %s  %s  (%s)\n", h.Epoch, time.UnixMilli(h.At).Format(time.DateTime), h.What, h.Why)
				}
			}
			fmt.Println()
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ROLE\tADDRESS\tUP\tEPOCH\tBALLOT\tACTIVE\tCHOSEN<\tEXECUTED<\tIN/s\tOUT/s")
			for _, r := range rows {
				fmt.Fprintf(w, "%s\t%s\t%v\t%d\t%s\t%v\t%d\t%d\t%.0f\t%.0f\n", r.Kind, r.Addr, r.Up, r.Epoch, r.Ballot, r.Active, r.Chosen, r.Executed, r.InPerSec, r.OutPerSec)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func collectStatus(d node.Deployment) (map[string]node.Status, error) {
	out := map[string]node.Status{}
	c := d.HTTPClient(2 * time.Second)
	seen := map[string]bool{}
	var addrs []string
	for _, h := range d.HTTPMap() {
		if !seen[h] {
			seen[h] = true
			addrs = append(addrs, h)
		}
	}
	sort.Strings(addrs)
	for _, h := range addrs {
		resp, err := c.Get("http://" + h + "/status")
		if err != nil {
			continue
		}
		var st []node.Status
		json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		for _, s := range st {
			out[s.Addr] = s
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no role of the deployment answered")
	}
	return out, nil
}

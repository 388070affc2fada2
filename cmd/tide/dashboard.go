package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"tide/paxos/node"
	"tide/tlsconf"
	"tide/web"
)

func newDashboardCmd() *cobra.Command {
	var nodes, controllers []string
	var logTarget, listen string
	var insecure bool
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve the live dashboard of a running (deployed) tide",
		Long: `Serve the dashboard that 'tide up' serves, for a tide deployed elsewhere:
the store ring as a circle (each node's range, disk use, files and keys,
request rate and latency), the tide log (each role's instances and message
rates, the leader, its ballot, the configuration epoch), the autoscalers'
events on a timeline, and throughput and latency charts. The page polls
this process, which reads every node's /hash_ring, /internal/info and
/metrics, every log role's /deployment and /status, and each controller's
/events; GET /api/state is the JSON the page draws (see the README).
With the global --tls-ca, --tls-cert and --tls-key it reads nodes and log
roles over mutual TLS, and serves the page over mutual TLS too: a browser
presents a certificate of the cluster's CA (import NAME.crt and NAME.key, as
made by 'tide cert node', into it). On a loopback --listen the page is also
served in plain text, for a browser on the same machine. Without TLS, a
--listen off loopback needs --insecure: the page shows the cluster's
addresses, load and membership to anyone who reaches it.

--nodes takes any store nodes, by HTTP or Chord address (a bare IP means
the Chord port 5057): the ring is read from the first that answers, so one
live member is enough. --log takes the log's deployment file or any role's
HTTP address. --autoscale takes controllers' --listen addresses.`,
		Example: `  tide dashboard --nodes 10.0.0.1
  tide dashboard --nodes 10.0.0.1:5058,10.0.0.2:5058 --log 10.0.1.1:5058 --autoscale 10.0.2.1:7070 --listen 0.0.0.0:7080 \
      --tls-ca certs/ca.crt --tls-cert certs/dash.crt --tls-key certs/dash.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(nodes) == 0 && logTarget == "" {
				return errors.New("give --nodes (store nodes) or --log (a tide log), or both")
			}
			// With --tls-* every node and log role is read over mutual
			// TLS (the log client's too).
			tlsCfg, err := setLogTLS()
			if err != nil {
				return err
			}
			if err := checkDashboardListen(listen, "--tls-ca, --tls-cert, --tls-key", tlsCfg != nil, insecure); err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
			if tlsCfg == nil {
				sigs = append(sigs, syscall.SIGHUP) // with TLS, SIGHUP reloads the certificates
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), sigs...)
			defer stop()
			go tlsCfg.Watch(ctx, 0)
			var https []string
			for _, a := range nodes {
				h, err := storeHTTPAddr(ctx, a)
				if err != nil {
					return fmt.Errorf("--nodes %s: %w", a, err)
				}
				https = append(https, h)
			}
			d := &web.Dashboard{Src: web.Sources{StoreSeeds: func() []string { return https }}}
			if tlsCfg != nil {
				d.HTTP = tlsCfg.HTTPClient(2 * time.Second)
			}
			if logTarget != "" {
				dep, err := loadTarget(logTarget)
				if err != nil {
					return fmt.Errorf("--log: %w", err)
				}
				d.Src.Log = func() (node.Deployment, bool) { return dep, true }
			}
			for _, c := range controllers {
				d.Src.Events = append(d.Src.Events, web.HTTPEvents{Addr: c, Client: d.HTTP})
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second}
			go srv.Serve(tlsCfg.ListenTide(ln, true))
			defer srv.Close()
			go d.Run(ctx)
			if tlsCfg == nil && !tlsconf.IsLoopback(ln.Addr().String()) {
				fmt.Fprintf(os.Stderr, "warning: the dashboard serves plain text on %s (--insecure): anyone who reaches it sees the cluster\n", ln.Addr())
			}
			fmt.Printf("dashboard  %s\n", dashboardURL(ln.Addr().String(), tlsCfg != nil))
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&nodes, "nodes", nil, "store nodes (HTTP or Chord addresses; comma-separated or repeated)")
	f.StringVar(&logTarget, "log", "", "the tide log: its deployment file, or any role's HTTP address")
	f.StringSliceVar(&controllers, "autoscale", nil, "autoscalers' --listen addresses, for their events")
	f.StringVar(&listen, "listen", "127.0.0.1:7080", "where the dashboard listens")
	f.BoolVar(&insecure, "insecure", false, "without --tls-*: serve the page in plain text on an interface other than loopback")
	return cmd
}

// storeHTTPAddr finds a store node's HTTP address from either of its
// addresses: one that answers /healthz is the HTTP address; otherwise it
// is taken as a Chord address (a bare IP means port 5057) and the node is
// asked for its HTTP address.
func storeHTTPAddr(ctx context.Context, addr string) (string, error) {
	t, err := loadTLS()
	if err != nil {
		return "", err
	}
	if resp, err := t.HTTPClient(2 * time.Second).Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return addr, nil
		}
	}
	sc, err := newStoreClient()
	if err != nil {
		return "", err
	}
	defer sc.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	h, err := sc.RPC.HTTPAddr(cctx, chordAddr(addr))
	if err != nil {
		return "", fmt.Errorf("neither the HTTP address (GET /healthz) nor the Chord address (%s) of a store node answered: %w", chordAddr(addr), err)
	}
	return h, nil
}

// checkDashboardListen refuses a dashboard in plain text off loopback
// unless the user said --insecure.
func checkDashboardListen(listen, tlsHint string, tls, insecure bool) error {
	if tls || insecure || tlsconf.IsLoopback(listen) {
		return nil
	}
	return fmt.Errorf("%s is not a loopback address: serve the dashboard over mutual TLS (%s), or give --insecure to serve it in plain text", listen, tlsHint)
}

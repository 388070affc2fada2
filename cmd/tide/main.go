// Command tide runs and drives tide: storage nodes, local clusters, and the
// clients for them.
package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"tide/store"
	"tide/tlsconf"
)

// The main goroutine starts on the process's main thread (see main).
func init() { runtime.LockOSThread() }

func main() {
	root := newRoot()
	// A command that asks for it (steadySysmonAnnotation) executes itself
	// again first, from the main thread: a parent-death signal (cluster
	// starts every child with one) belongs to the thread it was set on,
	// the main thread, and a process that executes from another thread
	// carries on as that thread, without it.
	if c, _, err := root.Find(os.Args[1:]); err == nil && c.Annotations[steadySysmonAnnotation] != "" {
		steadySysmon()
	}
	runtime.UnlockOSThread()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tide:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	var level, format string
	root := &cobra.Command{
		Use:   "tide",
		Short: "tide: an autoscaling distributed data system",
		Long: `tide is an autoscaling distributed data system, in one binary:

  the store    a Chord ring of storage nodes holding files and a replicated
               key-value namespace (N replicas, W/R quorums), served over
               HTTP, the Redis protocol and the seed systems' contracts
  the log      a linearizable replicated log and KV store: compartmentalized
               MultiPaxos, each role its own process
  autoscale    a controller that adds and drains storage nodes and resizes
               the log's compartments, through local processes, Docker,
               Kubernetes or EC2
  dashboard    a live view of all of it in a browser

'tide up' starts all four on this machine; start there.

Every flag can also be set through an environment variable: TIDE_ followed by
the flag name in upper case with dashes as underscores (--data-dir is
TIDE_DATA_DIR). A flag given on the command line wins.`,
		Example: `  tide up                      # the whole system, and the dashboard's address
  tide up --demo               # with load that makes it scale out, then in
  tide kv put 127.0.0.1:5058 greeting hello
  tide log status tide-data/log/deployment.json`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// tide's commands are the ones listed here; cobra's generated
		// completion command is not one of them.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
			}
			opts := &slog.HandlerOptions{Level: lv}
			switch format {
			case "text":
				slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, opts)))
			case "json":
				slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, opts)))
			default:
				return fmt.Errorf("--log-format %q: want text or json", format)
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&level, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&format, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&globalTLS.CA, "tls-ca", "", "CA certificate of the cluster's mutual TLS (tide cert init); with --tls-cert and --tls-key")
	root.PersistentFlags().StringVar(&globalTLS.Cert, "tls-cert", "", "this process's certificate, signed by --tls-ca (tide cert node)")
	root.PersistentFlags().StringVar(&globalTLS.Key, "tls-key", "", "the private key of --tls-cert")
	root.PersistentFlags().StringVar(&authToken, "auth-token", "", "bearer token a client sends to nodes' HTTP APIs started with --http-tokens")
	root.AddCommand(newNodeCmd(), newChordCmd(), newLogCmd(), newKVCmd(), newUploadCmd(), newDownloadCmd(), newRingCmd(), newUpCmd(), newDashboardCmd(), newBenchCmd(), newAutoscaleCmd(), NewAWSPeersCmd(), newAntipodeCmd(), newNetdelayCmd(), newChaosCmd(), newCertCmd(), newVersionCmd())
	strictGroups(root)
	return root
}

// strictGroups makes every command group (a command with subcommands
// and nothing to run itself) fail on an unknown subcommand, as the root
// does, instead of printing its help and exiting 0: a script's typo must
// not pass for success. Without arguments a group prints its help.
func strictGroups(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		strictGroups(c)
	}
	if cmd.HasParent() && cmd.HasSubCommands() && !cmd.Runnable() {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q; run '%s --help' for its commands", args[0], cmd.CommandPath(), cmd.CommandPath())
			}
			return cmd.Help()
		}
	}
}

// applyEnv sets every flag not given on the command line from TIDE_<NAME>:
// the command's own flags and the global ones it inherits (--log-level is
// TIDE_LOG_LEVEL). A flag set this way counts as given.
func applyEnv(cmd *cobra.Command) error {
	var err error
	set := func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		env := "TIDE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
				return
			}
			f.Changed = true // given, as on the command line
		}
	}
	cmd.Flags().VisitAll(set)
	cmd.InheritedFlags().VisitAll(set)
	return err
}

// nodeAddr turns either address of a store node into its Chord address:
// a bare IP means the standard Chord port 5057, as the seed scripts take
// it, and an HTTP address (one that answers /internal/info) is swapped for
// the Chord address the node reports. Commands that speak Chord take it,
// so that a user need not know which port is which.
func nodeAddr(s string) string {
	// With --tls-* and --auth-token, as the command's own requests: a
	// node with TLS and tokens answers a plain request without a token 401.
	t, _ := loadTLS() // a bad --tls-* fails the command's own client
	c := t.HTTPClient(time.Second)
	if authToken != "" {
		c.Transport = store.BearerTransport{Token: authToken, Base: c.Transport}
	}
	if strings.Contains(s, ":") {
		if resp, err := c.Get("http://" + strings.TrimPrefix(s, "http://") + "/internal/info"); err == nil {
			var info struct {
				Chord string `json:"chord_addr"`
			}
			err := json.NewDecoder(resp.Body).Decode(&info)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK && info.Chord != "" {
				return info.Chord
			}
		}
	}
	return chordAddr(s)
}

// chordAddr accepts "ip:port", or a bare ip as the seed scripts take, which
// means the standard Chord port 5057.
func chordAddr(s string) string {
	if !strings.Contains(s, ":") || strings.HasSuffix(s, "]") {
		return s + ":5057"
	}
	return s
}

// globalTLS and authToken are the global --tls-* and --auth-token flags:
// a node's own certificate, or a client's.
var (
	globalTLS tlsconf.Files
	authToken string
)

// loadTLS loads --tls-ca, --tls-cert and --tls-key: nil when none is given.
func loadTLS() (*tlsconf.Config, error) { return tlsconf.Load(globalTLS, slog.Default()) }

// logCerts is the material setLogTLS loaded: the deployments that
// loadTarget reads carry it (node.Deployment.Certs), so that their roles,
// clients, reconfigurations and HTTP clients speak mutual TLS.
var logCerts *tlsconf.Config

// setLogTLS loads --tls-* for the tide log (nil: none).
func setLogTLS() (*tlsconf.Config, error) {
	t, err := loadTLS()
	if err != nil {
		return nil, err
	}
	logCerts = t
	return t, nil
}

// tlsArgs is the --tls-* command line of this process's TLS files, with
// absolute paths, for the child processes it starts; nil without TLS.
func tlsArgs() ([]string, error) {
	if !globalTLS.Enabled() {
		return nil, nil
	}
	var out []string
	for _, f := range []struct{ flag, path string }{{"--tls-ca", globalTLS.CA}, {"--tls-cert", globalTLS.Cert}, {"--tls-key", globalTLS.Key}} {
		abs, err := filepath.Abs(f.path)
		if err != nil {
			return nil, err
		}
		out = append(out, f.flag, abs)
	}
	return out, nil
}

// newStoreClient is a client of the store with the global TLS and token
// flags.
func newStoreClient() (*store.Client, error) {
	t, err := loadTLS()
	if err != nil {
		return nil, err
	}
	return store.NewClientWith(t, authToken), nil
}

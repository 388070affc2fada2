package main

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tide/tlsconf"
)

func newCertCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Make the certificates of mutual TLS: a CA, then one per node or client",
		Long: `Make the certificates tide's processes use for mutual TLS between them
(--tls-ca, --tls-cert, --tls-key on tide node, tide log serve and the
clients). 'tide cert init' creates a CA in --dir; 'tide cert node NAME'
issues NAME.crt and NAME.key, signed by it, valid as both a server and a
client certificate. Give every process ca.crt, and its own certificate and
key; ca.key stays with whoever issues certificates.

A process reloads its certificate when the files change or on SIGHUP, so
rotating one is 'tide cert node NAME' again with the same name.`,
		Example: `  tide cert init --dir certs
  tide cert node node1 --ip 10.0.0.1 --dns node1.tide.internal --dir certs
  tide node --tls-ca certs/ca.crt --tls-cert certs/node1.crt --tls-key certs/node1.key ...`,
	}
	cmd.AddCommand(newCertInitCmd(), newCertNodeCmd())
	return cmd
}

func newCertInitCmd() *cobra.Command {
	var dir, name string
	var days int
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a CA (ca.crt, ca.key) in --dir",
		Long: `Create a certificate authority in --dir: ca.crt, the certificate every tide
process is given as --tls-ca, and ca.key, its private key (mode 0600), which
signs node certificates (tide cert node). An existing CA is never
overwritten.`,
		Example: `  tide cert init --dir certs
  tide cert init --dir /etc/tide/tls --name "tide prod CA" --days 3650`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if days < 1 {
				return fmt.Errorf("--days %d: want 1 or more", days)
			}
			if err := tlsconf.InitCA(dir, name, time.Duration(days)*24*time.Hour); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA written: %s (give every process --tls-ca %s), key %s (keep it private)\n",
				filepath.Join(dir, tlsconf.CAFile), filepath.Join(dir, tlsconf.CAFile), filepath.Join(dir, tlsconf.CAKeyFile))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "tide-certs", "directory for ca.crt and ca.key")
	cmd.Flags().StringVar(&name, "name", "tide CA", "the CA's common name")
	cmd.Flags().IntVar(&days, "days", 3650, "how long the CA is valid, in days")
	return cmd
}

func newCertNodeCmd() *cobra.Command {
	var dir string
	var ips, dns []string
	var days int
	cmd := &cobra.Command{
		Use:   "node NAME",
		Short: "Issue NAME.crt and NAME.key, signed by the CA in --dir",
		Long: `Issue a certificate for a tide process (a node, a log role, a client such
as the CLI) and write NAME.crt and NAME.key to --dir, next to the CA that
signs it. It is valid for the addresses peers dial the process at: every
--ip and --dns (repeatable, or comma-separated); a client certificate needs
none. Issuing NAME again replaces its files: processes using them reload the
new certificate by themselves (rotation without a restart).`,
		Example: `  tide cert node node1 --ip 10.0.0.1 --dir certs
  tide cert node node2 --ip 10.0.0.2,127.0.0.1 --dns node2,node2.tide.internal --dir certs
  tide cert node admin --dir certs      # a client certificate for the CLI`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if days < 1 {
				return fmt.Errorf("--days %d: want 1 or more", days)
			}
			var parsed []net.IP
			for _, s := range ips {
				ip := net.ParseIP(strings.TrimSpace(s))
				if ip == nil {
					return fmt.Errorf("--ip %q: want an IP address (names go in --dns)", s)
				}
				parsed = append(parsed, ip)
			}
			c, err := tlsconf.IssueNode(dir, tlsconf.NodeCert{Name: args[0], IPs: parsed, DNS: dns,
				NotAfter: time.Now().Add(time.Duration(days) * 24 * time.Hour)})
			if err != nil {
				return err
			}
			var sans []string
			for _, ip := range c.IPAddresses {
				sans = append(sans, ip.String())
			}
			sans = append(sans, c.DNSNames...)
			fmt.Fprintf(cmd.OutOrStdout(), "certificate written: %s, key %s; valid for [%s] until %s\n",
				tlsconf.CertFile(dir, args[0]), tlsconf.KeyFile(dir, args[0]), strings.Join(sans, " "), c.NotAfter.UTC().Format(time.DateOnly))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "tide-certs", "directory holding the CA (tide cert init), where the certificate is written")
	cmd.Flags().StringSliceVar(&ips, "ip", nil, "IP address the certificate is valid for (repeatable)")
	cmd.Flags().StringSliceVar(&dns, "dns", nil, "DNS name the certificate is valid for (repeatable)")
	cmd.Flags().IntVar(&days, "days", 365, "how long the certificate is valid, in days")
	return cmd
}

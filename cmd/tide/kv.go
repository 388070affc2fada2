package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"tide/store"
)

func newKVCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Read and write the store's replicated key-value namespace",
		Long: `Read and write keys of the store's replicated key-value namespace through any
node, which coordinates the request: a write is stored on the key's N replicas
and acknowledged once W hold it; a read asks R of them and returns the newest
version (its X-Tide-Version is the hybrid-logical-clock version). --w and --r
override W and R for one request, from 1 to N.

ADDR is either address of any node: its HTTP address (the one 'tide up'
prints as http) or its Chord address (a bare IP means the Chord port 5057);
the node is asked for the other. The same keys are served over HTTP
(GET/PUT/DELETE /kv/KEY) and the Redis protocol (redis-cli GET/SET/DEL).

With the global --tls-ca, --tls-cert and --tls-key the requests are mutual
TLS with that certificate (of the cluster's CA), and --auth-token is sent as
a bearer token to nodes started with --http-tokens.`,
		Example: `  tide kv put 127.0.0.1:5058 greeting hello
  echo -n hello | tide kv put 127.0.0.1 greeting
  tide kv get 127.0.0.2:5058 greeting
  tide kv get --r 3 127.0.0.2:5058 greeting
  tide kv del 127.0.0.3 greeting
  tide kv get --tls-ca certs/ca.crt --tls-cert certs/admin.crt --tls-key certs/admin.key 10.0.0.1:5058 greeting`,
	}
	var w, r int
	var timeout time.Duration
	do := func(method, addr, key string, body io.Reader, q string) (*http.Response, error) {
		h, err := storeHTTPAddr(context.Background(), strings.TrimPrefix(addr, "http://"))
		if err != nil {
			return nil, fmt.Errorf("ADDR %s: %w", addr, err)
		}
		u := "http://" + h + "/kv/" + url.PathEscape(key) + q
		req, err := http.NewRequest(method, u, body)
		if err != nil {
			return nil, err
		}
		t, err := loadTLS()
		if err != nil {
			return nil, err
		}
		c := t.HTTPClient(timeout)
		if authToken != "" {
			c.Transport = store.BearerTransport{Token: authToken, Base: c.Transport}
		}
		return c.Do(req)
	}
	check := func(resp *http.Response, err error) ([]byte, error) {
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		return b, nil
	}
	get := &cobra.Command{
		Use: "get ADDR KEY", Short: "Print a key's value (an error if it does not exist)", Args: cobra.ExactArgs(2),
		Long: `Print the value of KEY, read through the node at ADDR (its HTTP or Chord
address) from R of the key's N replicas: the newest version they hold. A key
that does not exist, or was deleted, is an error (exit 1).`,
		Example: "  tide kv get 127.0.0.1:5058 greeting\n  tide kv get --r 3 127.0.0.2 greeting",
		RunE: func(cmd *cobra.Command, args []string) error {
			q := ""
			if r > 0 {
				q = fmt.Sprintf("?r=%d", r)
			}
			b, err := check(do(http.MethodGet, args[0], args[1], nil, q))
			if err != nil {
				return err
			}
			os.Stdout.Write(b)
			if len(b) > 0 && b[len(b)-1] != '\n' {
				fmt.Println()
			}
			return nil
		},
	}
	put := &cobra.Command{
		Use: "put ADDR KEY [VALUE]", Short: "Set a key to VALUE, or to standard input", Args: cobra.RangeArgs(2, 3),
		Long: `Set KEY to VALUE, or to what standard input holds, through the node at ADDR
(its HTTP or Chord address): the write is stored on the key's N replicas and
acknowledged once W hold it. It prints OK.`,
		Example: "  tide kv put 127.0.0.1:5058 greeting hello\n  tide kv put 127.0.0.1:5058 photo < photo.jpg\n  tide kv put --w 3 127.0.0.1 greeting hello",
		RunE: func(cmd *cobra.Command, args []string) error {
			var body io.Reader = os.Stdin
			if len(args) == 3 {
				body = strings.NewReader(args[2])
			}
			q := ""
			if w > 0 {
				q = fmt.Sprintf("?w=%d", w)
			}
			if _, err := check(do(http.MethodPut, args[0], args[1], body, q)); err != nil {
				return err
			}
			fmt.Println("OK")
			return nil
		},
	}
	del := &cobra.Command{
		Use: "del ADDR KEY", Short: "Delete a key (it leaves a tombstone, collected after --tombstone-ttl)", Args: cobra.ExactArgs(2),
		Long: `Delete KEY through the node at ADDR (its HTTP or Chord address). The delete
is a write of a tombstone on the key's N replicas, which keeps an older version
from coming back; tombstones are collected after the nodes' --tombstone-ttl.`,
		Example: "  tide kv del 127.0.0.1:5058 greeting",
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := check(do(http.MethodDelete, args[0], args[1], nil, "")); err != nil {
				return err
			}
			fmt.Println("OK")
			return nil
		},
	}
	for _, c := range []*cobra.Command{get, put, del} {
		c.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	}
	get.Flags().IntVar(&r, "r", 0, "read quorum R for this request, 1 to N (0: the node's --read-quorum)")
	put.Flags().IntVar(&w, "w", 0, "write quorum W for this request, 1 to N (0: the node's --write-quorum)")
	cmd.AddCommand(get, put, del)
	return cmd
}

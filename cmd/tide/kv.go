package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newKVCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Read and write the store's replicated key-value namespace",
		Long: `Read and write keys through any store node. ADDR is a node's HTTP address
(the file port). Writes wait for the write quorum, reads for the read quorum;
--w and --r override them per request.`,
	}
	var w, r int
	var timeout time.Duration
	do := func(method, addr, key string, body io.Reader, q string) (*http.Response, error) {
		u := "http://" + strings.TrimPrefix(addr, "http://") + "/kv/" + url.PathEscape(key) + q
		req, err := http.NewRequest(method, u, body)
		if err != nil {
			return nil, err
		}
		c := http.Client{Timeout: timeout}
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
		Use: "get ADDR KEY", Short: "Print a key's value", Args: cobra.ExactArgs(2),
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
		Use: "put ADDR KEY [VALUE]", Short: "Set a key (VALUE, or standard input)", Args: cobra.RangeArgs(2, 3),
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
		Use: "del ADDR KEY", Short: "Delete a key", Args: cobra.ExactArgs(2),
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
	get.Flags().IntVar(&r, "r", 0, "read quorum for this request")
	put.Flags().IntVar(&w, "w", 0, "write quorum for this request")
	cmd.AddCommand(get, put, del)
	return cmd
}

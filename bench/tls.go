package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"tide/cluster"
	"tide/paxos/node"
	"tide/tlsconf"
)

// TLSCost is one workload measured without and with mutual TLS between
// the processes, in the same run, and the ratios TLS / plain.
type TLSCost struct {
	Target   string  `json:"target"`
	Test     string  `json:"test"`
	Clients  int     `json:"clients"`
	PlainRPS float64 `json:"plain_rps"`
	TLSRPS   float64 `json:"tls_rps"`
	PlainP50 float64 `json:"plain_p50_ms"`
	TLSP50   float64 `json:"tls_p50_ms"`
	PlainP99 float64 `json:"plain_p99_ms"`
	TLSP99   float64 `json:"tls_p99_ms"`
	// RPSRatio, P50Ratio and P99Ratio are TLS over plain.
	RPSRatio float64 `json:"rps_ratio"`
	P50Ratio float64 `json:"p50_ratio"`
	P99Ratio float64 `json:"p99_ratio"`
}

func (c *TLSCost) ratios() {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	c.RPSRatio, c.P50Ratio, c.P99Ratio = div(c.TLSRPS, c.PlainRPS), div(c.TLSP50, c.PlainP50), div(c.TLSP99, c.PlainP99)
}

// benchCerts makes a CA and a certificate for 127.0.0.1 in dir and returns
// its files.
func benchCerts(dir string) (tlsconf.Files, error) {
	if err := tlsconf.InitCA(dir, "tide bench CA", 24*time.Hour); err != nil {
		return tlsconf.Files{}, err
	}
	if _, err := tlsconf.IssueNode(dir, tlsconf.NodeCert{Name: "node", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}); err != nil {
		return tlsconf.Files{}, err
	}
	return tlsconf.NodeFiles(dir, "node"), nil
}

func tlsFlags(f tlsconf.Files) []string {
	return []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
}

// KVTLS runs redis-benchmark SET and GET (16-byte values over 100,000
// keys) against a 3-node tide cluster (N=3, W=2, R=2) entered through one
// node's Redis port, once in plain text and once with mutual TLS between
// the nodes (KV replication, Chord, HTTP), and reports both.
func KVTLS(ctx context.Context, requests, clients int, log io.Writer) ([]TLSCost, error) {
	if requests < 1 || clients < 1 {
		return nil, fmt.Errorf("requests and clients must be at least 1")
	}
	dir, err := os.MkdirTemp("", "tide-bench-kvtls-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	files, err := benchCerts(filepath.Join(dir, "certs"))
	if err != nil {
		return nil, err
	}
	tests := []string{"set", "get"}
	out := make([]TLSCost, len(tests))
	for i, t := range tests {
		out[i] = TLSCost{Target: "tide kv (3 nodes, N=3 W=2 R=2)", Test: t, Clients: clients}
	}
	for _, on := range []bool{false, true} {
		name, extra := "plain", []string(nil)
		if on {
			name, extra = "tls", tlsFlags(files)
		}
		fmt.Fprintf(log, "starting a 3-node tide cluster (%s)\n", name)
		local := &cluster.Local{Dir: filepath.Join(dir, name)}
		port, _, err := startTideRESP(ctx, local, 3, extra...)
		if err != nil {
			local.StopAll(5 * time.Second)
			return nil, err
		}
		for i, t := range tests {
			rps, p50, p99, err := RunRedisBenchmarkCSV(ctx, "-p", strconv.Itoa(port), "-t", t, "-n", strconv.Itoa(requests),
				"-c", strconv.Itoa(clients), "-r", "100000", "-d", "16")
			if err != nil {
				local.StopAll(5 * time.Second)
				return nil, err
			}
			fmt.Fprintf(log, "  %s %s: %.0f req/s, p50 %.3f ms, p99 %.3f ms\n", name, t, rps, p50, p99)
			if on {
				out[i].TLSRPS, out[i].TLSP50, out[i].TLSP99 = rps, p50, p99
			} else {
				out[i].PlainRPS, out[i].PlainP50, out[i].PlainP99 = rps, p50, p99
			}
		}
		local.StopAll(5 * time.Second)
	}
	for i := range out {
		out[i].ratios()
	}
	return out, nil
}

// LogTLS runs Log against a fresh local log of mode, once in plain text
// and once with every role's transport, and the clients', mutual TLS.
func LogTLS(ctx context.Context, mode, workload string, clients int, duration time.Duration, log io.Writer) (TLSCost, error) {
	c := TLSCost{Target: "tide log (" + mode + ")", Test: workload, Clients: clients}
	p, err := LogPlan(mode)
	if err != nil {
		return c, err
	}
	dir, err := os.MkdirTemp("", "tide-bench-logtls-")
	if err != nil {
		return c, err
	}
	defer os.RemoveAll(dir)
	files, err := benchCerts(filepath.Join(dir, "certs"))
	if err != nil {
		return c, err
	}
	cfg, err := tlsconf.Load(files, nil)
	if err != nil {
		return c, err
	}
	for _, on := range []bool{false, true} {
		name := "plain"
		roles := &cluster.LocalRoles{Local: &cluster.Local{Dir: filepath.Join(dir, name)}}
		plan := p
		if on {
			name = "tls"
			roles = &cluster.LocalRoles{Local: &cluster.Local{Dir: filepath.Join(dir, name)}, Extra: tlsFlags(files), TLS: cfg}
			lay := p.Lay
			plan.Lay = func(r, h []string) (node.Deployment, error) {
				d, err := lay(r, h)
				d.TLS, d.Certs = true, cfg
				return d, err
			}
		}
		roles.StateDir = filepath.Join(roles.Local.Dir, "state")
		fmt.Fprintf(log, "starting a local log (%s, %s)\n", mode, name)
		d, err := roles.StartNew(ctx, plan, func(node.Deployment) error { return nil })
		if err != nil {
			roles.Local.StopAll(5 * time.Second)
			return c, err
		}
		res, err := Log(ctx, d, mode+" "+name, workload, clients, duration, log)
		roles.Local.StopAll(5 * time.Second)
		if err != nil {
			return c, err
		}
		if res.Ops == 0 {
			return c, fmt.Errorf("%s: no operation completed (%d errors)", name, res.Errors)
		}
		if on {
			c.TLSRPS, c.TLSP50, c.TLSP99 = res.OpsPerSec, res.P50ms, res.P99ms
		} else {
			c.PlainRPS, c.PlainP50, c.PlainP99 = res.OpsPerSec, res.P50ms, res.P99ms
		}
	}
	c.ratios()
	return c, nil
}

// PrintTLSCosts writes costs as a table: plain, TLS and the ratio of each
// figure.
func PrintTLSCosts(w io.Writer, costs []TLSCost) error {
	fmt.Fprintf(w, "%-34s %-6s %7s %10s %10s %6s %9s %9s %6s %9s %9s %6s\n", "TARGET", "TEST", "CLIENTS",
		"REQ/S", "TLS REQ/S", "RATIO", "P50 MS", "TLS P50", "RATIO", "P99 MS", "TLS P99", "RATIO")
	for _, c := range costs {
		if _, err := fmt.Fprintf(w, "%-34s %-6s %7d %10.0f %10.0f %6.2f %9.3f %9.3f %6.2f %9.3f %9.3f %6.2f\n", c.Target, c.Test, c.Clients,
			c.PlainRPS, c.TLSRPS, c.RPSRatio, c.PlainP50, c.TLSP50, c.P50Ratio, c.PlainP99, c.TLSP99, c.P99Ratio); err != nil {
			return err
		}
	}
	return nil
}

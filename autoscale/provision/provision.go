// Package provision is the seam between tide's autoscaling controller and
// whatever runs tide nodes: local child processes, Docker containers,
// Kubernetes workloads or EC2 Auto Scaling Groups. The controller decides;
// a Provisioner carries the decision out.
package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"time"
)

// Instance is one tide node run by a provisioner.
type Instance struct {
	// ID is the provider's own name for the instance: a process name, a
	// container ID, a pod name or an EC2 instance ID.
	ID string `json:"id"`
	// HTTPAddr is host:port of the node's HTTP service (files, KV,
	// /metrics, /internal/leave) as the controller reaches it.
	HTTPAddr string `json:"http_addr"`
	// ChordAddr is host:port of the node's ring RPC service, which new
	// nodes join through.
	ChordAddr string `json:"chord_addr"`
	// RESPAddr is where the node serves the Redis protocol, if it does
	// and the provisioner knows.
	RESPAddr string `json:"resp_addr,omitempty"`
	// State is one of the State* constants.
	State string `json:"state"`
	// Kind is "node" or a tide log role kind, as Spec.Kind said; empty
	// for instances a provisioner cannot tell.
	Kind    string    `json:"kind,omitempty"`
	Started time.Time `json:"started"`
}

// Instance states, as List reports them.
const (
	StatePending    = "pending"    // launched, not yet serving
	StateRunning    = "running"    // serving
	StateDraining   = "draining"   // handing its data off
	StateTerminated = "terminated" // gone, or going
)

// Spec says how to launch one node.
type Spec struct {
	// Name is a unique name the controller suggests (e.g. "node-4").
	// Provisioners that name instances themselves may ignore it.
	Name string
	// Join is the chord address of a live ring member; empty starts a new
	// ring.
	Join string
	// Token is the node's ring position in decimal; empty lets the node
	// pick the token that halves the largest range.
	Token string
	// Capacity in bytes (--capacity); 0 means the filesystem's size.
	Capacity int64
	// Replicas is the replication factor (--replicas); 0 means the default.
	Replicas int
	// Extra holds further `tide node` flags.
	Extra []string

	// Args, when set, replaces the `tide node` command line: the instance
	// runs `tide Args...` (a tide log role: `log serve ...`). Join, Token,
	// Capacity, Replicas and Extra are then ignored. Provisioners that do
	// not run arbitrary tide commands refuse it.
	Args []string
	// IP is the address to give the instance, one the provisioner handed
	// out (docker: Reserve); empty lets the provisioner pick.
	IP string
	// Kind labels the instance ("node", or a tide log role kind); List
	// reports it. Empty is "node".
	Kind string
	// NanoCPUs, when above 0, overrides the provisioner's CPU limit for
	// this instance, in billionths of a CPU.
	NanoCPUs int64
}

// Provisioner launches, drains, terminates and lists tide nodes.
//
// Launch returns once the instance exists; it need not be serving yet (the
// controller waits for that through the node's /healthz). Drain hands the
// node's data to the rest of the ring and returns when nothing is left on
// it; Terminate then removes the instance. Every method is safe to call
// again after a failure or a controller crash: draining a node that already
// left, or terminating one that is gone, succeeds.
type Provisioner interface {
	Name() string
	Launch(ctx context.Context, s Spec) (Instance, error)
	Drain(ctx context.Context, in Instance) error
	Terminate(ctx context.Context, in Instance) error
	List(ctx context.Context) ([]Instance, error)
}

// LogTailer is implemented by provisioners that can show an instance's
// recent output. The controller quotes it when a new node fails to join,
// before the instance is terminated and its output is gone.
type LogTailer interface {
	// Logs returns up to the last tail lines the instance printed.
	Logs(ctx context.Context, id string, tail int) (string, error)
}

// ErrNotFound reports an instance the provisioner does not know.
var ErrNotFound = errors.New("provision: no such instance")

// DrainNode asks the tide node at httpAddr to leave the ring gracefully
// (POST /internal/leave). The node hands every file and key to its new
// owners, answers, and exits. A node that no longer answers is taken to
// have left already, so a drain that a crashed controller started can be
// repeated safely.
func DrainNode(ctx context.Context, client *http.Client, httpAddr string) (moved int, err error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/internal/leave", nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, fmt.Errorf("drain %s: %w", httpAddr, err)
		}
		// Connection refused or reset: the node is not running.
		return 0, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("drain %s: %s: %s", httpAddr, resp.Status, body)
	}
	var out struct {
		Moved int `json:"moved"`
	}
	_ = json.Unmarshal(body, &out)
	return out.Moved, nil
}

// WaitHealthy polls http://httpAddr/healthz until it answers 200 or ctx
// ends.
func WaitHealthy(ctx context.Context, client *http.Client, httpAddr string) error {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/healthz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy: %w", httpAddr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TLS is the mutual TLS material a provisioner gives the tide processes
// it starts: the contents of the files their --tls-ca, --tls-cert and
// --tls-key name. Either one certificate serves every process, so it
// names every address peers and clients dial them at, or Issue makes each
// process a certificate of its own for its address.
type TLS struct {
	CA, Cert, Key []byte
	// Issue, when set, makes the certificate and key of the process at
	// ip, signed by the CA, instead of Cert and Key: for provisioners
	// that learn a process's address only as they create it (a Service's
	// ClusterIP, a network interface's private IP).
	Issue func(ip string) (cert, key []byte, err error)
}

// For is the material of the process at ip: t itself, or with Issue a
// copy holding the certificate issued for ip.
func (t *TLS) For(ip string) (*TLS, error) {
	if t.Issue == nil {
		return t, nil
	}
	cert, key, err := t.Issue(ip)
	if err != nil {
		return nil, fmt.Errorf("issue the certificate of %s: %w", ip, err)
	}
	return &TLS{CA: t.CA, Cert: cert, Key: key}, nil
}

// Names of the TLS files in the directory a provisioner puts them in,
// the keys of a Kubernetes Secret holding them.
const (
	TLSCAFile   = "ca.crt"
	TLSCertFile = "role.crt"
	TLSKeyFile  = "role.key"
)

// Validate checks that the CA, and the certificate and the key or
// Issue, are there.
func (t *TLS) Validate() error {
	if len(t.CA) == 0 || (t.Issue == nil && (len(t.Cert) == 0 || len(t.Key) == 0)) {
		return errors.New("TLS material needs the CA, the certificate and the key")
	}
	return nil
}

// Files are the three files' contents by their names in dir.
func (t *TLS) Files() map[string][]byte {
	return map[string][]byte{TLSCAFile: t.CA, TLSCertFile: t.Cert, TLSKeyFile: t.Key}
}

// Flags are the --tls-* flags naming the files in dir.
func (t *TLS) Flags(dir string) []string {
	return []string{"--tls-ca", path.Join(dir, TLSCAFile), "--tls-cert", path.Join(dir, TLSCertFile), "--tls-key", path.Join(dir, TLSKeyFile)}
}

package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"tide/paxos"
	"tide/tlsconf"
)

// Deployment is what every process of a tide log shares: the protocol
// configuration, where each role's process serves HTTP (metrics, status,
// and this deployment), and the tick.
type Deployment struct {
	Log paxos.Config `json:"log"`
	// HTTP maps a role address to its process's HTTP address.
	HTTP map[string]string `json:"http"`
	// TickMillis is the protocol tick. Default 10.
	TickMillis int `json:"tick_ms"`
	// Unreplicated, if set, is the address of a single unreplicated KV
	// server used as a baseline; the log roles are then ignored.
	Unreplicated string `json:"unreplicated,omitempty"`
	// Control is the HTTP address of the process that starts and stops
	// this deployment's role processes (`tide log up`), which `tide log
	// scale` and `tide log replace` ask. Empty if none.
	Control string `json:"control,omitempty"`
	// TLS is set when the roles speak mutual TLS (tide log serve with
	// --tls-*): a client then needs a certificate of the log's CA.
	TLS bool `json:"tls,omitempty"`
	// Certs is the TLS material this process reaches the log with, and
	// runs its roles with: the roles' transport, clients,
	// reconfigurations and HTTP clients (HTTPClient) of this deployment
	// take it; nil is plain TCP. It is not part of the JSON: each process
	// sets its own.
	Certs *tlsconf.Config `json:"-"`
}

// HTTPMap returns every known role's HTTP address: those the
// configuration records, and those the deployment started with.
func (d Deployment) HTTPMap() map[string]string {
	out := map[string]string{}
	for k, v := range d.HTTP {
		out[k] = v
	}
	for k, v := range d.Log.HTTP {
		out[k] = v
	}
	return out
}

// Tick returns the tick duration.
func (d Deployment) Tick() time.Duration {
	if d.TickMillis <= 0 {
		return 10 * time.Millisecond
	}
	return time.Duration(d.TickMillis) * time.Millisecond
}

// Validate checks the deployment.
func (d Deployment) Validate() error {
	if d.Unreplicated != "" {
		return nil
	}
	return d.Log.Validate()
}

// LoadDeployment reads a deployment from a JSON file.
func LoadDeployment(path string) (Deployment, error) {
	f, err := os.Open(path)
	if err != nil {
		return Deployment{}, err
	}
	defer f.Close()
	d, err := ReadDeployment(f)
	if err != nil {
		return d, fmt.Errorf("deployment %s: %w", path, err)
	}
	return d, nil
}

// Save writes the deployment as JSON.
func (d Deployment) Save(path string) error {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// RoleOf returns the kind ("matchmaker", "batcher", "leader", "proxy", "acceptor",
// "replica", "unbatcher") and index of a role address.
func (d Deployment) RoleOf(addr string) (string, int, error) {
	c := d.Log
	find := func(list []string) int {
		for i, a := range list {
			if a == addr {
				return i
			}
		}
		return -1
	}
	for _, k := range []struct {
		kind string
		list []string
	}{{"matchmaker", c.Matchmakers}, {"batcher", c.Batchers}, {"leader", c.Leaders}, {"proxy", c.ProxyLeaders}, {"replica", c.Replicas}, {"unbatcher", c.Unbatchers}} {
		if i := find(k.list); i >= 0 {
			return k.kind, i, nil
		}
	}
	for gi, g := range c.Groups {
		if i := find(g.Acceptors); i >= 0 {
			return "acceptor", gi*1000 + i, nil
		}
	}
	if addr == d.Unreplicated && addr != "" {
		return "unreplicated", 0, nil
	}
	return "", 0, errors.New("address " + addr + " is not a role of this deployment")
}

// ReadDeployment decodes one deployment, as JSON, from r and checks it.
func ReadDeployment(r io.Reader) (Deployment, error) {
	var d Deployment
	dec := json.NewDecoder(r)
	if err := dec.Decode(&d); err != nil {
		if errors.Is(err, io.EOF) {
			return d, errors.New("no deployment: the input is empty")
		}
		return d, err
	}
	return d, d.Validate()
}

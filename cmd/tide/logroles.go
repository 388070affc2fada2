package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	dockerprov "tide/autoscale/provision/docker"
	"tide/cluster"
	"tide/paxos/node"
)

// roleHostFlags choose where `tide log up` runs role processes: local
// child processes, or Docker containers with CPU limits.
type roleHostFlags struct {
	provisioner string
	cpus        float64
	roleCPUs    string
	image       string
	cluster     string
	network     string
	build       bool

	prov *dockerprov.Provisioner
}

func (f *roleHostFlags) flags(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.provisioner, "provisioner", "local", "where roles run: local (child processes) or docker (a container each)")
	fl.Float64Var(&f.cpus, "cpus", 0, "docker: CPU limit of each role's container, like docker run --cpus (0: none)")
	fl.StringVar(&f.roleCPUs, "role-cpus", "", "docker: CPU limits by role kind, overriding --cpus, e.g. proxy=0.5,acceptor=0.25 (kinds: "+strings.Join(node.Kinds, ", ")+")")
	fl.StringVar(&f.image, "docker-image", dockerprov.DefaultImage, "docker: image of the role containers (see --docker-build)")
	fl.StringVar(&f.cluster, "docker-cluster", "tide-log", "docker: cluster label of the role containers, so several logs share an engine")
	fl.StringVar(&f.network, "docker-network", "", "docker: user-defined network (default tide-<cluster>, created if missing)")
	fl.BoolVar(&f.build, "docker-build", false, "docker: build the image FROM scratch around this (static) tide binary first")
}

// parseRoleCPUs turns "kind=cpus,..." and a default into limits in
// billionths of a CPU, keyed by kind ("" for the default).
func parseRoleCPUs(def float64, spec string) (map[string]int64, error) {
	if def < 0 {
		return nil, fmt.Errorf("--cpus %v is negative", def)
	}
	out := map[string]int64{"": int64(def * 1e9)}
	if spec == "" {
		return out, nil
	}
	for _, kv := range strings.Split(spec, ",") {
		kind, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		cpus, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || cpus <= 0 {
			return nil, fmt.Errorf("--role-cpus %q: want kind=cpus pairs with cpus > 0 (%q is not one)", spec, kv)
		}
		if !slices.Contains(node.Kinds, kind) {
			return nil, fmt.Errorf("--role-cpus: unknown kind %q (want one of %s)", kind, strings.Join(node.Kinds, ", "))
		}
		out[kind] = int64(cpus * 1e9)
	}
	return out, nil
}

// limits are the CPU limits the flags give each kind, in billionths of
// a CPU ("" for the default); none for local roles.
func (f *roleHostFlags) limits() (map[string]int64, error) {
	if f.provisioner == "local" {
		return nil, nil
	}
	return parseRoleCPUs(f.cpus, f.roleCPUs)
}

// open returns the role host the flags name.
func (f *roleHostFlags) open(ctx context.Context, dir, depPath, host string) (cluster.RoleHost, error) {
	switch f.provisioner {
	case "local":
		if f.cpus != 0 || f.roleCPUs != "" {
			return nil, fmt.Errorf("--cpus and --role-cpus need --provisioner docker (local roles share the machine)")
		}
		return &cluster.LocalRoles{Local: &cluster.Local{Dir: dir}, DepPath: depPath, StateDir: dir + "/state", Host: host}, nil
	case "docker":
		cpus, err := parseRoleCPUs(f.cpus, f.roleCPUs)
		if err != nil {
			return nil, err
		}
		if f.build {
			bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			if err := buildSelfImage(bctx, f.image); err != nil {
				return nil, err
			}
		}
		p, err := dockerprov.New(dockerprov.Config{Image: f.image, Cluster: f.cluster, Network: f.network})
		if err != nil {
			return nil, err
		}
		f.prov = p
		return &cluster.ProvisionedRoles{C: p, CPUs: cpus}, nil
	}
	return nil, fmt.Errorf("--provisioner %q: want local or docker", f.provisioner)
}

// describe says where roles run, for the banner.
func (f *roleHostFlags) describe() string {
	if f.prov == nil {
		return "local processes"
	}
	s := fmt.Sprintf("docker containers of %s on network %s", f.prov.Config().Image, f.prov.Config().Network)
	if f.cpus > 0 {
		s += fmt.Sprintf(", %g CPU each", f.cpus)
	}
	if f.roleCPUs != "" {
		s += " (" + f.roleCPUs + ")"
	}
	return s
}

// close removes what the docker provisioner left (containers of the
// cluster, its network).
func (f *roleHostFlags) close() {
	if f.prov == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.prov.Cleanup(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "docker clean-up: %v\n", err)
	}
	f.prov.Close()
}

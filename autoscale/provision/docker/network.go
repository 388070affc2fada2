package docker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// ipPool is the run of addresses nodes get fixed addresses from:
// [first, last], skipping any in the engine's dynamic range and the
// gateway.
type ipPool struct {
	first, last netip.Addr
	gateway     netip.Addr
	dynamic     netip.Prefix // the engine's own range, if any
}

func (pl ipPool) contains(a netip.Addr) bool {
	return a.Is4() && a.Compare(pl.first) >= 0 && a.Compare(pl.last) <= 0
}

func (pl ipPool) usable(a netip.Addr) bool {
	return pl.contains(a) && a != pl.gateway && !(pl.dynamic.IsValid() && pl.dynamic.Contains(a))
}

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// span returns the first and last address of an IPv4 prefix.
func span(p netip.Prefix) (uint32, uint32) {
	base := u32(p.Masked().Addr())
	return base, base | (1<<(32-p.Bits()) - 1)
}

// upperHalf is the second half of p, which a network made here leaves to
// the engine's own address assignment.
func upperHalf(p netip.Prefix) netip.Prefix {
	base, _ := span(p)
	return netip.PrefixFrom(addr4(base+1<<(31-p.Bits())), p.Bits()+1)
}

// poolFor derives the node address pool from a network's IPAM settings:
// the addresses of the subnet outside the engine's dynamic range, less
// the network, broadcast and gateway addresses.
func poolFor(cfgs []network.IPAMConfig) (ipPool, error) {
	for _, c := range cfgs {
		if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() {
			continue
		}
		if c.Subnet.Bits() > 29 {
			return ipPool{}, fmt.Errorf("subnet %s is too small", c.Subnet)
		}
		lo, hi := span(c.Subnet)
		pl := ipPool{first: addr4(lo + 1), last: addr4(hi - 1), gateway: c.Gateway}
		if !pl.gateway.IsValid() {
			pl.gateway = addr4(lo + 1) // the engine's choice
		}
		if c.IPRange.IsValid() && c.IPRange.Addr().Is4() && c.IPRange != c.Subnet {
			pl.dynamic = c.IPRange
		}
		return pl, nil
	}
	return ipPool{}, errors.New("it has no IPv4 subnet")
}

// ensureNetwork finds the network, or creates it.
func (p *Provisioner) ensureNetwork(ctx context.Context) error {
	r, err := p.cli.NetworkInspect(ctx, p.cfg.Network, client.NetworkInspectOptions{})
	if err == nil {
		return p.useNetwork(r.Network)
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: inspect network %s: %w", p.cfg.Network, err)
	}
	var cands []netip.Prefix
	if p.cfg.Subnet != "" {
		cands = []netip.Prefix{netip.MustParsePrefix(p.cfg.Subnet)}
	} else {
		for i := range 256 {
			cands = append(cands, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, byte(i), 0}), 24))
		}
	}
	taken, err := p.takenSubnets(ctx)
	if err != nil {
		return err
	}
	tries := 0
	for _, cand := range cands {
		if overlapsAny(cand, taken) && p.cfg.Subnet == "" {
			continue
		}
		if tries++; tries > 16 {
			break
		}
		lo, _ := span(cand)
		_, err := p.cli.NetworkCreate(ctx, p.cfg.Network, client.NetworkCreateOptions{
			Driver: "bridge",
			IPAM: &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{
				Subnet: cand, IPRange: upperHalf(cand), Gateway: addr4(lo + 1),
			}}},
			Labels: map[string]string{LabelManaged: "true", LabelCluster: p.cfg.Cluster},
		})
		if err == nil || cerrdefs.IsConflict(err) || strings.Contains(err.Error(), "already exists") {
			// Made now, or by someone racing us: use it as it is.
			r, ierr := p.cli.NetworkInspect(ctx, p.cfg.Network, client.NetworkInspectOptions{})
			if ierr != nil {
				return fmt.Errorf("docker: inspect network %s: %w", p.cfg.Network, ierr)
			}
			return p.useNetwork(r.Network)
		}
		if p.cfg.Subnet == "" && strings.Contains(strings.ToLower(err.Error()), "overlap") {
			continue
		}
		return fmt.Errorf("docker: create network %s (subnet %s): %w", p.cfg.Network, cand, err)
	}
	return fmt.Errorf("docker: create network %s: no free subnet found in 10.213.0.0/16; set Config.Subnet", p.cfg.Network)
}

func (p *Provisioner) useNetwork(n network.Inspect) error {
	if n.Driver != "bridge" {
		return fmt.Errorf("docker: network %s uses the %q driver; want a bridge network", n.Name, n.Driver)
	}
	pl, err := poolFor(n.IPAM.Config)
	if err != nil {
		return fmt.Errorf("docker: network %s: %w", n.Name, err)
	}
	p.netID, p.ipam = n.ID, pl
	return nil
}

// takenSubnets lists the IPv4 subnets of the engine's networks and of
// this machine's interfaces, which a new network must not overlap.
func (p *Provisioner) takenSubnets(ctx context.Context) ([]netip.Prefix, error) {
	var out []netip.Prefix
	nets, err := p.cli.NetworkList(ctx, client.NetworkListOptions{})
	if err != nil {
		return nil, fmt.Errorf("docker: list networks: %w", err)
	}
	for _, n := range nets.Items {
		for _, c := range n.IPAM.Config {
			if c.Subnet.IsValid() && c.Subnet.Addr().Is4() {
				out = append(out, c.Subnet)
			}
		}
	}
	// Only meaningful when the engine runs on this machine; harmless
	// otherwise.
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if pfx, err := netip.ParsePrefix(ipn.String()); err == nil && pfx.Addr().Is4() {
					out = append(out, pfx.Masked())
				}
			}
		}
	}
	return out, nil
}

func overlapsAny(p netip.Prefix, others []netip.Prefix) bool {
	for _, o := range others {
		if p.Overlaps(o) {
			return true
		}
	}
	return false
}

// usedIPs collects the addresses held on the network: by attached
// endpoints, and fixed addresses of containers that are stopped.
func (p *Provisioner) usedIPs(ctx context.Context) (map[netip.Addr]bool, error) {
	used := map[netip.Addr]bool{}
	r, err := p.cli.NetworkInspect(ctx, p.netID, client.NetworkInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		// Removed since (by Cleanup, or by hand): make it again.
		if err := p.ensureNetwork(ctx); err != nil {
			return nil, err
		}
		r, err = p.cli.NetworkInspect(ctx, p.netID, client.NetworkInspectOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("docker: inspect network %s: %w", p.cfg.Network, err)
	}
	for _, e := range r.Network.Containers {
		if e.IPv4Address.IsValid() {
			used[e.IPv4Address.Addr()] = true
		}
	}
	f := client.Filters{}.Add("network", p.netID)
	cs, err := p.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("docker: list containers on %s: %w", p.cfg.Network, err)
	}
	for _, c := range cs.Items {
		if ip, err := netip.ParseAddr(c.Labels[labelIP]); err == nil {
			used[ip] = true
		}
		if c.NetworkSettings == nil {
			continue
		}
		for _, es := range c.NetworkSettings.Networks {
			if es == nil || (es.NetworkID != "" && es.NetworkID != p.netID) {
				continue
			}
			if es.IPAddress.IsValid() {
				used[es.IPAddress] = true
			}
			if es.IPAMConfig != nil && es.IPAMConfig.IPv4Address.IsValid() {
				used[es.IPAMConfig.IPv4Address] = true
			}
		}
	}
	return used, nil
}

// initCursor starts address picks after the highest address this
// cluster's containers hold, so a fresh node does not take the address of
// one that left moments ago (whose ring entry may still linger).
func (p *Provisioner) initCursor(ctx context.Context) error {
	cs, err := p.containers(ctx)
	if err != nil {
		return err
	}
	p.next = p.ipam.first
	var hi netip.Addr
	for _, c := range cs {
		if ip, err := netip.ParseAddr(c.Labels[labelIP]); err == nil && p.ipam.contains(ip) && (!hi.IsValid() || ip.Compare(hi) > 0) {
			hi = ip
		}
	}
	if hi.IsValid() && hi != p.ipam.last {
		p.next = hi.Next()
	}
	return nil
}

// pickIP returns the next free pool address from the cursor on, wrapping
// around. The caller holds p.mu.
func (p *Provisioner) pickIP(ctx context.Context) (netip.Addr, error) {
	used, err := p.usedIPs(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	lo, hi := u32(p.ipam.first), u32(p.ipam.last)
	size := uint64(hi-lo) + 1
	start := u32(p.next)
	if start < lo || start > hi {
		start = lo
	}
	for i := uint64(0); i < size && i < 1<<20; i++ {
		a := addr4(lo + uint32((uint64(start-lo)+i)%size))
		if p.ipam.usable(a) && !used[a] && !p.reserved[a] {
			p.next = a.Next()
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("docker: network %s has no free address for another node (%s-%s all taken)", p.cfg.Network, p.ipam.first, p.ipam.last)
}

// removeNetwork removes the network if this cluster made it and nothing
// is attached to it any more.
func (p *Provisioner) removeNetwork(ctx context.Context) error {
	r, err := p.cli.NetworkInspect(ctx, p.cfg.Network, client.NetworkInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("docker: inspect network %s: %w", p.cfg.Network, err)
	}
	if r.Network.Labels[LabelCluster] != p.cfg.Cluster || len(r.Network.Containers) > 0 {
		return nil
	}
	if _, err := p.cli.NetworkRemove(ctx, r.Network.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: remove network %s: %w", p.cfg.Network, err)
	}
	return nil
}

func containerLogs(ctx context.Context, cli *client.Client, id string, tail int) (string, error) {
	opts := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true}
	if tail > 0 {
		opts.Tail = strconv.Itoa(tail)
	}
	r, err := cli.ContainerLogs(ctx, id, opts)
	if err != nil {
		return "", fmt.Errorf("docker: logs of %s: %w", id, err)
	}
	defer r.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, r); err != nil {
		return buf.String(), fmt.Errorf("docker: logs of %s: %w", id, err)
	}
	return buf.String(), nil
}

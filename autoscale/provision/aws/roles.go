package aws

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"tide/autoscale/provision"
)

// Tags Roles puts on the network interfaces and instances of a tide log.
const (
	// LogClusterTag names the log (RolesConfig.Cluster).
	LogClusterTag = "tide:log-cluster"
	// LogKindTag is an instance's role kind (batcher, leader, proxy, ...).
	LogKindTag = "tide:log-kind"
	// LogAddrTag is an instance's role address.
	LogAddrTag = "tide:log-addr"
)

// maxUserData is the most user data EC2 takes, before base64.
const maxUserData = 16 << 10

// RolesEC2API is the part of the EC2 API Roles uses; *ec2.Client
// implements it.
type RolesEC2API interface {
	CreateNetworkInterface(context.Context, *ec2.CreateNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.CreateNetworkInterfaceOutput, error)
	DeleteNetworkInterface(context.Context, *ec2.DeleteNetworkInterfaceInput, ...func(*ec2.Options)) (*ec2.DeleteNetworkInterfaceOutput, error)
	DescribeNetworkInterfaces(context.Context, *ec2.DescribeNetworkInterfacesInput, ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error)
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

// RolesConfig configures Roles.
type RolesConfig struct {
	// EC2 is the client; nil makes one from Region, EndpointURL and
	// Credentials (see NewClients).
	EC2         RolesEC2API
	Region      string
	EndpointURL string
	Credentials sdkaws.CredentialsProvider

	// Subnet the role instances and their network interfaces go in
	// (required), and the security groups of the interfaces (the VPC's
	// default when empty). They must let the instances reach each other,
	// and the machine running tide log up reach them, on RolePort and
	// RoleHTTPPort.
	Subnet         string
	SecurityGroups []string
	// Image is the AMI of the instances (required): a Linux with systemd
	// and curl, and the tide binary at BinaryPath unless BinaryURL is set.
	Image string
	// InstanceType of every role (default t3.small); InstanceTypes
	// overrides it by kind, e.g. {"proxy": "c7g.large"}. EC2 limits a
	// role's CPU by its instance type: CPU limits from tide log up
	// (--cpus) are not applied.
	InstanceType  string
	InstanceTypes map[string]string
	// KeyName is an EC2 key pair for SSH (optional).
	KeyName string
	// BinaryURL and BinaryPath: where the instances download the tide
	// binary from (empty: the AMI has it) and where it goes (default
	// /usr/local/bin/tide).
	BinaryURL  string
	BinaryPath string
	// Cluster names the log: the LogClusterTag of everything Roles
	// creates, and what Cleanup removes. Default "tide-log".
	Cluster string
	// PollInterval is how often Remove looks at a terminating instance's
	// network interface (default 2s); DetachTimeout bounds that wait
	// (default 5m).
	PollInterval  time.Duration
	DetachTimeout time.Duration
	// TLS, when set, is the mutual TLS material of the roles: each
	// instance's user data writes the files (with TLS.Issue, a
	// certificate issued for its address) to DefaultTLSDir and the role
	// starts with the --tls-* flags naming them. Peers dial a role at its
	// network interface's private IP, so without Issue the one
	// certificate names every address of the subnet.
	TLS *provision.TLS
	// Log receives progress; nil uses slog.Default().
	Log *slog.Logger
}

// Roles runs each role process of a tide log on an EC2 instance of its
// own. It implements cluster.Containers, so that cluster.ProvisionedRoles
// starts and stops roles through it:
//
//   - Reserve creates network interfaces in the subnet: each one's
//     private IP, assigned at creation, is a role's address, known before
//     the instance exists.
//   - Run launches an instance with that interface as its primary one
//     (device 0) and user data (RoleUserData) that installs tide and runs
//     the role's `tide log serve` command line as the systemd unit
//     tide-log.service, tagged with the cluster, the kind and the address.
//   - Remove terminates the instance and, once it is terminated (EC2 then
//     detaches the interface), deletes the interface; Release deletes interfaces no instance took; Cleanup
//     removes every instance and interface tagged with the cluster.
type Roles struct {
	cfg RolesConfig
	ec2 RolesEC2API
	log *slog.Logger

	mu    sync.Mutex
	byIP  map[string]string // private IP -> interface ID, reserved or taken
	taken map[string]bool   // interface IDs an instance took
	eniOf map[string]string // instance ID -> interface ID
}

// NewRoles checks cfg and returns Roles. It does not call AWS, unless to
// load the SDK's configuration.
func NewRoles(ctx context.Context, cfg RolesConfig) (*Roles, error) {
	if cfg.Subnet == "" {
		return nil, errors.New("aws: the subnet of the role instances is required (--aws-subnet)")
	}
	if cfg.Image == "" {
		return nil, errors.New("aws: the AMI of the role instances is required (--aws-image)")
	}
	if cfg.InstanceType == "" {
		cfg.InstanceType = "t3.small"
	}
	if cfg.BinaryPath == "" {
		cfg.BinaryPath = "/usr/local/bin/tide"
	}
	if !path.IsAbs(cfg.BinaryPath) || strings.ContainsAny(cfg.BinaryPath, " \t\n") {
		return nil, fmt.Errorf("aws: binary path %q: want an absolute path without whitespace", cfg.BinaryPath)
	}
	if cfg.Cluster == "" {
		cfg.Cluster = "tide-log"
	}
	if cfg.TLS != nil {
		if err := cfg.TLS.Validate(); err != nil {
			return nil, fmt.Errorf("aws: %w", err)
		}
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 2 * time.Second
	}
	if cfg.DetachTimeout <= 0 {
		cfg.DetachTimeout = 5 * time.Minute
	}
	r := &Roles{cfg: cfg, ec2: cfg.EC2, log: cfg.Log, byIP: map[string]string{}, taken: map[string]bool{}, eniOf: map[string]string{}}
	if r.log == nil {
		r.log = slog.Default()
	}
	r.log = r.log.With("provisioner", "aws", "cluster", cfg.Cluster)
	if r.ec2 == nil {
		c, err := NewClients(ctx, ClientOptions{Region: cfg.Region, EndpointURL: cfg.EndpointURL, Credentials: cfg.Credentials})
		if err != nil {
			return nil, err
		}
		r.ec2 = c.EC2.(*ec2.Client)
	}
	return r, nil
}

// Name is "aws".
func (r *Roles) Name() string { return "aws" }

func (r *Roles) tags(kind string, extra ...ec2types.Tag) []ec2types.Tag {
	t := []ec2types.Tag{{Key: sdkaws.String(LogClusterTag), Value: sdkaws.String(r.cfg.Cluster)}}
	if kind != "" {
		t = append(t, ec2types.Tag{Key: sdkaws.String(LogKindTag), Value: sdkaws.String(kind)})
	}
	return append(t, extra...)
}

// maxDuplicateIPs bounds how often Reserve asks again when the subnet
// hands out an address it already reserved.
const maxDuplicateIPs = 8

// Reserve creates n network interfaces and returns their private IPs,
// all distinct. On an error it deletes those it created.
func (r *Roles) Reserve(ctx context.Context, n int) ([]string, error) {
	var ips []string
	dups := 0
	for len(ips) < n {
		out, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{
			SubnetId:    sdkaws.String(r.cfg.Subnet),
			Groups:      r.cfg.SecurityGroups,
			Description: sdkaws.String("tide log role of " + r.cfg.Cluster),
			TagSpecifications: []ec2types.TagSpecification{{
				ResourceType: ec2types.ResourceTypeNetworkInterface,
				Tags:         r.tags("", ec2types.Tag{Key: sdkaws.String("Name"), Value: sdkaws.String(r.cfg.Cluster + "-role")}),
			}},
		})
		if err != nil {
			r.Release(ips...)
			return nil, fmt.Errorf("aws: create a network interface in subnet %s: %w", r.cfg.Subnet, err)
		}
		eni := out.NetworkInterface
		ip := sdkaws.ToString(eni.PrivateIpAddress)
		id := sdkaws.ToString(eni.NetworkInterfaceId)
		if ip == "" {
			r.deleteENI(ctx, id)
			r.Release(ips...)
			return nil, fmt.Errorf("aws: network interface %s in subnet %s has no private IP", id, r.cfg.Subnet)
		}
		r.mu.Lock()
		_, dup := r.byIP[ip]
		if !dup {
			r.byIP[ip] = id
		}
		r.mu.Unlock()
		if dup {
			// EC2 never hands out an address twice, but an emulator that
			// picks addresses at random (moto) can: give this interface
			// back and ask again, a bounded number of times.
			r.deleteENI(ctx, id)
			if dups++; dups > maxDuplicateIPs {
				r.Release(ips...)
				return nil, fmt.Errorf("aws: subnet %s handed out an address already reserved (%s) %d times", r.cfg.Subnet, ip, dups)
			}
			r.log.Warn("network interface got an address already reserved; retrying", "eni", id, "ip", ip)
			continue
		}
		r.log.Info("network interface created", "eni", id, "ip", ip)
		ips = append(ips, ip)
	}
	return ips, nil
}

// Release deletes the network interfaces of reserved addresses that no
// instance took.
func (r *Roles) Release(ips ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, ip := range ips {
		r.mu.Lock()
		id, ok := r.byIP[ip]
		taken := r.taken[id]
		if ok && !taken {
			delete(r.byIP, ip)
		}
		r.mu.Unlock()
		if !ok || taken {
			continue
		}
		if err := r.deleteENI(ctx, id); err != nil {
			r.log.Warn("release: delete network interface", "eni", id, "ip", ip, "err", err)
		}
	}
}

// Run launches the instance of the role at ip (a Reserve address), named
// name, of kind kind, running `tide args...` at boot, and returns its
// instance ID. nanoCPUs is not applied: the instance type is the limit.
func (r *Roles) Run(ctx context.Context, name, kind, ip string, nanoCPUs int64, args []string) (string, error) {
	r.mu.Lock()
	eni, ok := r.byIP[ip]
	r.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("aws: no reserved network interface has IP %s (Reserve hands out the addresses Run takes)", ip)
	}
	var tls *provision.TLS
	if r.cfg.TLS != nil {
		var err error
		if tls, err = r.cfg.TLS.For(ip); err != nil {
			return "", fmt.Errorf("aws: role %s: %w", name, err)
		}
	}
	ud, err := RoleUserData(RoleUserDataOptions{BinaryURL: r.cfg.BinaryURL, BinaryPath: r.cfg.BinaryPath, Args: args, TLS: tls})
	if err != nil {
		return "", err
	}
	itype := r.cfg.InstanceType
	if t, ok := r.cfg.InstanceTypes[kind]; ok {
		itype = t
	}
	if nanoCPUs > 0 {
		r.log.Debug("CPU limit not applied: the instance type bounds the role's CPU", "kind", kind, "type", itype)
	}
	in := &ec2.RunInstancesInput{
		ImageId:      sdkaws.String(r.cfg.Image),
		InstanceType: ec2types.InstanceType(itype),
		MinCount:     sdkaws.Int32(1),
		MaxCount:     sdkaws.Int32(1),
		UserData:     sdkaws.String(base64.StdEncoding.EncodeToString([]byte(ud))),
		NetworkInterfaces: []ec2types.InstanceNetworkInterfaceSpecification{{
			DeviceIndex:         sdkaws.Int32(0),
			NetworkInterfaceId:  sdkaws.String(eni),
			DeleteOnTermination: sdkaws.Bool(false), // Remove deletes it, once detached
		}},
		TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeInstance,
			Tags: r.tags(kind,
				ec2types.Tag{Key: sdkaws.String("Name"), Value: sdkaws.String(name)},
				ec2types.Tag{Key: sdkaws.String(LogAddrTag), Value: sdkaws.String(ip)}),
		}},
	}
	if r.cfg.KeyName != "" {
		in.KeyName = sdkaws.String(r.cfg.KeyName)
	}
	out, err := r.ec2.RunInstances(ctx, in)
	if err != nil {
		return "", fmt.Errorf("aws: run a %s instance (%s, AMI %s) with network interface %s: %w", kind, itype, r.cfg.Image, eni, err)
	}
	if len(out.Instances) != 1 {
		return "", fmt.Errorf("aws: run instances returned %d instances, want 1", len(out.Instances))
	}
	id := sdkaws.ToString(out.Instances[0].InstanceId)
	r.mu.Lock()
	r.taken[eni] = true
	r.eniOf[id] = eni
	r.mu.Unlock()
	r.log.Info("instance launched", "instance", id, "kind", kind, "ip", ip, "type", itype)
	return id, nil
}

// Remove terminates instance id and deletes its network interface once
// the instance is terminated (up to DetachTimeout: a minute or so on
// EC2). An instance that is gone already is
// removed.
func (r *Roles) Remove(ctx context.Context, id string) error {
	r.mu.Lock()
	eni := r.eniOf[id]
	r.mu.Unlock()
	if eni == "" {
		// An instance of an earlier process (Cleanup): its primary
		// interface, if tagged as ours.
		out, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil && apiCode(err) != "InvalidInstanceID.NotFound" {
			return fmt.Errorf("aws: describe instance %s: %w", id, err)
		}
		if out != nil {
			for _, res := range out.Reservations {
				for _, in := range res.Instances {
					for _, ni := range in.NetworkInterfaces {
						if ni.Attachment != nil && sdkaws.ToInt32(ni.Attachment.DeviceIndex) == 0 {
							eni = sdkaws.ToString(ni.NetworkInterfaceId)
						}
					}
				}
			}
		}
	}
	if _, err := r.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil && apiCode(err) != "InvalidInstanceID.NotFound" {
		return fmt.Errorf("aws: terminate instance %s: %w", id, err)
	}
	r.log.Info("instance terminating", "instance", id)
	if eni != "" {
		if err := r.deleteAfter(ctx, eni, id); err != nil {
			return fmt.Errorf("aws: instance %s terminated, but its network interface %s stays: %w", id, eni, err)
		}
	}
	r.mu.Lock()
	delete(r.eniOf, id)
	delete(r.taken, eni)
	for ip, e := range r.byIP {
		if e == eni {
			delete(r.byIP, ip)
		}
	}
	r.mu.Unlock()
	return nil
}

// deleteAfter deletes interface eni once instance (if any) is
// terminated, when EC2 has detached the interface from it. While EC2
// still reports the interface in use, it tries again, up to
// DetachTimeout.
func (r *Roles) deleteAfter(ctx context.Context, eni, instance string) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DetachTimeout)
	defer cancel()
	for {
		var err error
		var state ec2types.InstanceStateName
		if instance != "" {
			state, err = r.instanceState(ctx, instance)
		}
		if err == nil && (state == "" || state == ec2types.InstanceStateNameTerminated) {
			if err = r.deleteENI(ctx, eni); err == nil {
				return nil
			}
			if !strings.Contains(apiCode(err), "InUse") {
				return err
			}
		}
		t := time.NewTimer(r.cfg.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			if err != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
			}
			return fmt.Errorf("instance %s still %s: %w", instance, state, ctx.Err())
		case <-t.C:
		}
	}
}

// instanceState is the state of instance id, or "" when EC2 no longer
// knows it.
func (r *Roles) instanceState(ctx context.Context, id string) (ec2types.InstanceStateName, error) {
	out, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if apiCode(err) == "InvalidInstanceID.NotFound" {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("aws: describe instance %s: %w", id, err)
	}
	for _, res := range out.Reservations {
		for _, in := range res.Instances {
			if sdkaws.ToString(in.InstanceId) == id && in.State != nil {
				return in.State.Name, nil
			}
		}
	}
	return "", nil
}

func (r *Roles) deleteENI(ctx context.Context, id string) error {
	_, err := r.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: sdkaws.String(id)})
	if err != nil && apiCode(err) != "InvalidNetworkInterfaceID.NotFound" {
		return fmt.Errorf("aws: delete network interface %s: %w", id, err)
	}
	r.log.Info("network interface deleted", "eni", id)
	return nil
}

// Cleanup terminates every instance and deletes every network interface
// tagged with the cluster, including those of an earlier process.
func (r *Roles) Cleanup(ctx context.Context) error {
	tag := ec2types.Filter{Name: sdkaws.String("tag:" + LogClusterTag), Values: []string{r.cfg.Cluster}}
	var errs []error
	var token *string
	for {
		out, err := r.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{NextToken: token, Filters: []ec2types.Filter{tag,
			{Name: sdkaws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}}}})
		if err != nil {
			return fmt.Errorf("aws: describe the instances of %s: %w", r.cfg.Cluster, err)
		}
		for _, res := range out.Reservations {
			for _, in := range res.Instances {
				if err := r.Remove(ctx, sdkaws.ToString(in.InstanceId)); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if token = out.NextToken; token == nil || *token == "" {
			break
		}
	}
	out, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{tag}})
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("aws: describe the network interfaces of %s: %w", r.cfg.Cluster, err))...)
	}
	for _, ni := range out.NetworkInterfaces {
		if err := r.deleteAfter(ctx, sdkaws.ToString(ni.NetworkInterfaceId), ""); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RoleUserDataOptions configure the boot script RoleUserData renders.
type RoleUserDataOptions struct {
	// BinaryURL is where the tide binary is downloaded from; empty means
	// the AMI has it at BinaryPath (default /usr/local/bin/tide).
	BinaryURL  string
	BinaryPath string
	// Args is the tide command line of the role (`log serve ...`).
	Args []string
	// TLS, when set, is written to TLSDir (default DefaultTLSDir; the
	// key mode 0600) before the role starts, and the --tls-* flags naming
	// the files follow Args.
	TLS    *provision.TLS
	TLSDir string
}

// RoleUserData renders the user data (a bash script) of a role instance:
// it installs the tide binary unless the AMI has it, creates the role's
// --data-dir, writes the start script tide-log-start (exec tide with
// Args, each shell-quoted) and the systemd unit tide-log.service, which
// restarts the role when it fails, and starts it; with TLS it writes the
// TLS files first. It fails if the script exceeds EC2's 16 KiB.
func RoleUserData(o RoleUserDataOptions) (string, error) {
	if o.BinaryPath == "" {
		o.BinaryPath = "/usr/local/bin/tide"
	}
	if o.TLSDir == "" {
		o.TLSDir = DefaultTLSDir
	}
	if o.TLS != nil {
		if err := validateFiles(o.TLS); err != nil {
			return "", err
		}
		o.Args = append(slices.Clone(o.Args), o.TLS.Flags(o.TLSDir)...)
	}
	startPath := path.Join(path.Dir(o.BinaryPath), "tide-log-start")
	var start strings.Builder
	start.WriteString("#!/bin/bash\n# Runs this instance's tide log role (started by tide-log.service).\n")
	fmt.Fprintf(&start, "exec %s", shq(o.BinaryPath))
	for _, a := range o.Args {
		start.WriteString(" " + shq(a))
	}
	start.WriteString("\n")
	var b strings.Builder
	b.WriteString("#!/bin/bash\n")
	b.WriteString("# Boot script of a tide log role instance: installs the tide binary, its\n")
	b.WriteString("# start script and the systemd unit tide-log.service.\n")
	b.WriteString("set -euo pipefail\n")
	installBinary(&b, o.BinaryPath, o.BinaryURL)
	for i, a := range o.Args {
		if a == "--data-dir" && i+1 < len(o.Args) {
			fmt.Fprintf(&b, "mkdir -p %s\n", shq(o.Args[i+1]))
		}
	}
	if o.TLS != nil {
		writeTLS(&b, o.TLSDir, o.TLS)
	}
	installService(&b, startPath, start.String(), "tide-log.service", unitFile("tide log role", startPath, 5))
	if b.Len() > maxUserData {
		return "", errTooLarge("role", b.Len())
	}
	return b.String(), nil
}

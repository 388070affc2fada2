// Package aws runs tide nodes as the instances of an EC2 Auto Scaling group.
//
// Every instance of the group runs one tide node, started at boot by the
// user data that UserData renders: the node listens on 0.0.0.0:5057 (chord)
// and 0.0.0.0:5058 (HTTP), advertises the instance's private IP and joins a
// live member that `tide aws-peers` finds in the group. EnsureGroup creates
// such a group: a launch template with that user data, the group itself, and
// a termination lifecycle hook that holds an instance the group decides to
// terminate (scale-in, rebalancing) in Terminating:Wait until its data has
// been handed off.
//
// The Provisioner scales the group by its desired capacity: Launch raises it
// by one and returns the instance the group starts; Terminate removes one
// chosen, already drained instance and lowers it by one.
//
// Roles runs the role processes of a tide log instead, each on an EC2
// instance of its own whose address is the private IP of a network
// interface created before the launch (see Roles).
package aws

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"tide/autoscale/provision"
)

// Default ports of a tide node, as `tide node` and UserData use them.
const (
	DefaultChordPort = 5057
	DefaultHTTPPort  = 5058
)

// ErrAtMaxSize is returned by Launch when the group's desired capacity
// already equals its MaxSize.
var ErrAtMaxSize = errors.New("aws: auto scaling group is at its MaxSize")

// ErrNoTLS reports a group whose launch template's user data does not
// start tide with mutual TLS (see CheckTLS).
var ErrNoTLS = errors.New("aws: the launch template's user data does not give tide mutual TLS")

// ErrAtMinSize is returned by Terminate when removing the instance would
// take the group's desired capacity below its MinSize.
var ErrAtMinSize = errors.New("aws: auto scaling group is at its MinSize")

// AutoScalingAPI is the part of the EC2 Auto Scaling API this package uses;
// *autoscaling.Client implements it.
type AutoScalingAPI interface {
	DescribeAutoScalingGroups(context.Context, *autoscaling.DescribeAutoScalingGroupsInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
	DescribeAutoScalingInstances(context.Context, *autoscaling.DescribeAutoScalingInstancesInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingInstancesOutput, error)
	SetDesiredCapacity(context.Context, *autoscaling.SetDesiredCapacityInput, ...func(*autoscaling.Options)) (*autoscaling.SetDesiredCapacityOutput, error)
	TerminateInstanceInAutoScalingGroup(context.Context, *autoscaling.TerminateInstanceInAutoScalingGroupInput, ...func(*autoscaling.Options)) (*autoscaling.TerminateInstanceInAutoScalingGroupOutput, error)
	CompleteLifecycleAction(context.Context, *autoscaling.CompleteLifecycleActionInput, ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error)
	RecordLifecycleActionHeartbeat(context.Context, *autoscaling.RecordLifecycleActionHeartbeatInput, ...func(*autoscaling.Options)) (*autoscaling.RecordLifecycleActionHeartbeatOutput, error)
	CreateAutoScalingGroup(context.Context, *autoscaling.CreateAutoScalingGroupInput, ...func(*autoscaling.Options)) (*autoscaling.CreateAutoScalingGroupOutput, error)
	UpdateAutoScalingGroup(context.Context, *autoscaling.UpdateAutoScalingGroupInput, ...func(*autoscaling.Options)) (*autoscaling.UpdateAutoScalingGroupOutput, error)
	PutLifecycleHook(context.Context, *autoscaling.PutLifecycleHookInput, ...func(*autoscaling.Options)) (*autoscaling.PutLifecycleHookOutput, error)
}

// EC2API is the part of the EC2 API this package uses; *ec2.Client
// implements it.
type EC2API interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	CreateLaunchTemplate(context.Context, *ec2.CreateLaunchTemplateInput, ...func(*ec2.Options)) (*ec2.CreateLaunchTemplateOutput, error)
	CreateLaunchTemplateVersion(context.Context, *ec2.CreateLaunchTemplateVersionInput, ...func(*ec2.Options)) (*ec2.CreateLaunchTemplateVersionOutput, error)
	DescribeLaunchTemplateVersions(context.Context, *ec2.DescribeLaunchTemplateVersionsInput, ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplateVersionsOutput, error)
}

// Clients are the two AWS API clients the package works through.
type Clients struct {
	AutoScaling AutoScalingAPI
	EC2         EC2API
}

// ClientOptions say how NewClients reaches AWS.
type ClientOptions struct {
	// Region, e.g. "eu-west-1". Empty takes the SDK's default chain
	// (AWS_REGION, the shared config), then the instance metadata service
	// when IMDSRegion is set.
	Region string
	// IMDSRegion lets an empty Region be read from the EC2 instance
	// metadata service (for commands run on the instances themselves).
	IMDSRegion bool
	// EndpointURL overrides the AWS endpoints of both services, e.g. a
	// moto_server ("http://127.0.0.1:5000"). Empty uses AWS.
	EndpointURL string
	// Credentials; nil takes the SDK's default chain (environment, shared
	// files, instance profile).
	Credentials sdkaws.CredentialsProvider
	// RetryMaxAttempts bounds the SDK's retries of one call; 0 keeps the
	// SDK's default.
	RetryMaxAttempts int
}

// NewClients makes Auto Scaling and EC2 clients.
func NewClients(ctx context.Context, o ClientOptions) (Clients, error) {
	var opts []func(*config.LoadOptions) error
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	} else if o.IMDSRegion {
		opts = append(opts, config.WithEC2IMDSRegion())
	}
	if o.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(o.Credentials))
	}
	if o.EndpointURL != "" {
		opts = append(opts, config.WithBaseEndpoint(o.EndpointURL))
	}
	if o.RetryMaxAttempts > 0 {
		opts = append(opts, config.WithRetryMaxAttempts(o.RetryMaxAttempts))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil && o.Region == "" && o.IMDSRegion {
		return Clients{}, fmt.Errorf("aws: no region given (--region, AWS_REGION) and none from the instance metadata service: %w", err)
	}
	if err != nil {
		return Clients{}, fmt.Errorf("aws: load SDK configuration: %w", err)
	}
	if cfg.Region == "" {
		return Clients{}, errors.New("aws: no region: give one (--region, Config.Region) or set AWS_REGION")
	}
	return Clients{AutoScaling: autoscaling.NewFromConfig(cfg), EC2: ec2.NewFromConfig(cfg)}, nil
}

// Config configures a Provisioner.
type Config struct {
	// Group is the Auto Scaling group's name (required).
	Group string

	// Clients to use. When either is nil, both are made by NewClients
	// from Region, EndpointURL and Credentials.
	Clients     Clients
	Region      string
	EndpointURL string
	Credentials sdkaws.CredentialsProvider

	// Ports of tide on the instances: 0 means DefaultHTTPPort and
	// DefaultChordPort.
	HTTPPort  int
	ChordPort int

	// LifecycleHook is the name of the group's termination lifecycle hook
	// (autoscaling:EC2_INSTANCE_TERMINATING), as EnsureGroup creates it.
	// Empty means the group has none. With a hook, an instance that is
	// terminated waits in Terminating:Wait until the Provisioner completes
	// the lifecycle action.
	LifecycleHook string

	// Drain hands an instance's data to the rest of the ring. nil drains
	// with provision.DrainNode against the instance's HTTP address
	// (privateIP:HTTPPort) through HTTPClient: a node that refuses the
	// connection has left already and counts as drained; a timeout or an
	// error answer is an error. HTTPClient defaults to a client with a
	// 30-minute timeout (a drain moves all of a node's data).
	Drain      func(ctx context.Context, in provision.Instance) error
	HTTPClient *http.Client

	// PollInterval is how often Launch and Terminate look at the group
	// while they wait (default 2s). LaunchTimeout bounds Launch's wait for
	// the new instance and its private IP (default 5m); HookTimeout bounds
	// Terminate's wait for the instance to reach Terminating:Wait (default
	// 2m). HeartbeatInterval is how often Drain records a lifecycle action
	// heartbeat for an instance held in Terminating:Wait (default 1m).
	PollInterval      time.Duration
	LaunchTimeout     time.Duration
	HookTimeout       time.Duration
	HeartbeatInterval time.Duration

	// Log receives progress messages; nil uses slog.Default().
	Log *slog.Logger
}

// Provisioner runs tide nodes as the instances of one Auto Scaling group.
// It implements provision.Provisioner. Its methods are not meant to be
// called concurrently for the same group: Launch reads the desired capacity
// and sets it one higher.
type Provisioner struct {
	cfg Config
	as  AutoScalingAPI
	ec2 EC2API
	log *slog.Logger
}

var _ provision.Provisioner = (*Provisioner)(nil)

// New makes a Provisioner for cfg.Group. It does not call AWS.
func New(ctx context.Context, cfg Config) (*Provisioner, error) {
	if strings.TrimSpace(cfg.Group) == "" {
		return nil, errors.New("aws: Config.Group (the Auto Scaling group name) is required")
	}
	for _, p := range []struct {
		name string
		v    *int
		def  int
	}{{"HTTPPort", &cfg.HTTPPort, DefaultHTTPPort}, {"ChordPort", &cfg.ChordPort, DefaultChordPort}} {
		if *p.v == 0 {
			*p.v = p.def
		}
		if *p.v < 1 || *p.v > 65535 {
			return nil, fmt.Errorf("aws: Config.%s %d: want a port in 1..65535", p.name, *p.v)
		}
	}
	defDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	defDur(&cfg.PollInterval, 2*time.Second)
	defDur(&cfg.LaunchTimeout, 5*time.Minute)
	defDur(&cfg.HookTimeout, 2*time.Minute)
	defDur(&cfg.HeartbeatInterval, time.Minute)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Minute}
	}
	p := &Provisioner{cfg: cfg, log: cfg.Log}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.log = p.log.With("provisioner", "aws", "group", cfg.Group)
	if cfg.Clients.AutoScaling == nil || cfg.Clients.EC2 == nil {
		c, err := NewClients(ctx, ClientOptions{Region: cfg.Region, EndpointURL: cfg.EndpointURL, Credentials: cfg.Credentials})
		if err != nil {
			return nil, err
		}
		cfg.Clients = c
	}
	p.as, p.ec2 = cfg.Clients.AutoScaling, cfg.Clients.EC2
	return p, nil
}

// Name reports "aws".
func (p *Provisioner) Name() string { return "aws" }

// Launch raises the group's desired capacity by one and returns the instance
// the group starts for it, once it has a private IP. The node on it starts
// from the launch template's user data; Spec is not passed to it (a group's
// instances all run the same user data), so s.Join, s.Token, s.Capacity and
// s.Replicas must be set there. Launch fails with ErrAtMaxSize when the
// desired capacity already equals the group's MaxSize.
func (p *Provisioner) Launch(ctx context.Context, s provision.Spec) (provision.Instance, error) {
	g, err := p.group(ctx)
	if err != nil {
		return provision.Instance{}, err
	}
	desired, maxSize := sdkaws.ToInt32(g.DesiredCapacity), sdkaws.ToInt32(g.MaxSize)
	if desired >= maxSize {
		return provision.Instance{}, fmt.Errorf("%w: group %s has desired capacity %d and MaxSize %d; raise MaxSize to launch more", ErrAtMaxSize, p.cfg.Group, desired, maxSize)
	}
	before := make(map[string]bool, len(g.Instances))
	for _, in := range g.Instances {
		before[sdkaws.ToString(in.InstanceId)] = true
	}
	_, err = p.as.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{
		AutoScalingGroupName: sdkaws.String(p.cfg.Group),
		DesiredCapacity:      sdkaws.Int32(desired + 1),
		HonorCooldown:        sdkaws.Bool(false),
	})
	if err != nil {
		return provision.Instance{}, fmt.Errorf("aws: set desired capacity of %s to %d: %w", p.cfg.Group, desired+1, err)
	}
	p.log.Info("desired capacity raised", "desired", desired+1, "name", s.Name)
	if s.Join != "" || s.Token != "" || s.Capacity != 0 || s.Replicas != 0 || len(s.Extra) > 0 {
		p.log.Debug("the launch template's user data starts the node; Spec's node settings are not passed on",
			"join", s.Join, "token", s.Token, "capacity", s.Capacity, "replicas", s.Replicas, "extra", s.Extra)
	}

	ctx, cancel := context.WithTimeout(ctx, p.cfg.LaunchTimeout)
	defer cancel()
	var lastErr error
	for {
		ins, err := p.list(ctx)
		if err == nil {
			var found *provision.Instance
			for i := range ins {
				in := &ins[i]
				if before[in.ID] || in.HTTPAddr == "" {
					continue
				}
				if found == nil || in.Started.After(found.Started) || (in.Started.Equal(found.Started) && in.ID > found.ID) {
					found = in
				}
			}
			if found != nil {
				p.log.Info("instance launched", "instance", found.ID, "http", found.HTTPAddr)
				return *found, nil
			}
		} else {
			lastErr = err
		}
		if err := p.sleep(ctx); err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (last error: %v)", err, lastErr)
			}
			return provision.Instance{}, fmt.Errorf("aws: desired capacity of %s is %d but no new instance with a private IP appeared: %w", p.cfg.Group, desired+1, err)
		}
	}
}

// Drain hands the instance's data to the rest of the ring with Config.Drain.
// An instance that is no longer in the group, or whose EC2 instance is gone,
// has nothing left to drain: Drain returns nil without calling Config.Drain.
// When the instance waits in Terminating:Wait (the group chose to terminate
// it, e.g. on scale-in, and the termination lifecycle hook holds it), Drain
// records lifecycle action heartbeats while it drains and then completes the
// lifecycle action with CONTINUE, letting the group terminate it.
func (p *Provisioner) Drain(ctx context.Context, in provision.Instance) error {
	if in.ID == "" {
		return errors.New("aws: Drain: instance has no ID")
	}
	state, err := p.lifecycleState(ctx, in.ID)
	if err != nil {
		return err
	}
	if state == "" || isGone(state) {
		p.log.Info("drain: instance already left the group", "instance", in.ID, "state", state)
		return nil
	}
	if in.HTTPAddr == "" || in.ChordAddr == "" {
		byID, err := p.describe(ctx, []string{in.ID})
		if err != nil {
			return err
		}
		e, ok := byID[in.ID]
		if !ok || ec2Gone(e) {
			return nil
		}
		ip := sdkaws.ToString(e.PrivateIpAddress)
		if ip == "" {
			return fmt.Errorf("aws: Drain %s: the instance has no private IP yet", in.ID)
		}
		in.HTTPAddr, in.ChordAddr = p.addr(ip, p.cfg.HTTPPort), p.addr(ip, p.cfg.ChordPort)
	}
	held := state == string(astypes.LifecycleStateTerminatingWait) && p.cfg.LifecycleHook != ""
	if held {
		stop := p.heartbeat(ctx, in.ID)
		err = p.drain(ctx, in)
		stop()
	} else {
		err = p.drain(ctx, in)
	}
	if err != nil {
		return fmt.Errorf("aws: drain %s (%s): %w", in.ID, in.HTTPAddr, err)
	}
	p.log.Info("instance drained", "instance", in.ID)
	if held {
		return p.complete(ctx, in.ID)
	}
	return nil
}

func (p *Provisioner) drain(ctx context.Context, in provision.Instance) error {
	if p.cfg.Drain != nil {
		return p.cfg.Drain(ctx, in)
	}
	_, err := provision.DrainNode(ctx, p.cfg.HTTPClient, in.HTTPAddr)
	return err
}

// heartbeat records lifecycle action heartbeats for id every
// HeartbeatInterval until the returned func is called, so that the hook's
// heartbeat timeout does not end a long drain.
func (p *Provisioner) heartbeat(ctx context.Context, id string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(p.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, err := p.as.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
				AutoScalingGroupName: sdkaws.String(p.cfg.Group),
				LifecycleHookName:    sdkaws.String(p.cfg.LifecycleHook),
				InstanceId:           sdkaws.String(id),
			})
			if err != nil && ctx.Err() == nil {
				p.log.Warn("lifecycle action heartbeat failed", "instance", id, "err", err)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// Terminate removes the instance from the group with
// TerminateInstanceInAutoScalingGroup, lowering the desired capacity by one
// so that the group does not replace it. The instance must have been drained.
// With a termination lifecycle hook, the group then holds the instance in
// Terminating:Wait; Terminate waits for that (up to HookTimeout) and
// completes the lifecycle action with CONTINUE. Terminating an instance that
// is already terminating or gone succeeds. Terminate fails with ErrAtMinSize
// when the desired capacity already equals the group's MinSize, and with
// provision.ErrNotFound for an instance of another group.
func (p *Provisioner) Terminate(ctx context.Context, in provision.Instance) error {
	if in.ID == "" {
		return errors.New("aws: Terminate: instance has no ID")
	}
	state, err := p.lifecycleState(ctx, in.ID)
	if err != nil {
		return err
	}
	if state == "" || isGone(state) {
		return nil
	}
	if !isTerminating(state) {
		g, err := p.group(ctx)
		if err != nil {
			return err
		}
		desired, minSize := sdkaws.ToInt32(g.DesiredCapacity), sdkaws.ToInt32(g.MinSize)
		if desired <= minSize {
			return fmt.Errorf("%w: group %s has desired capacity %d and MinSize %d; lower MinSize to terminate %s", ErrAtMinSize, p.cfg.Group, desired, minSize, in.ID)
		}
		_, err = p.as.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
			InstanceId:                     sdkaws.String(in.ID),
			ShouldDecrementDesiredCapacity: sdkaws.Bool(true),
		})
		if err != nil {
			// It may have gone meanwhile (terminated by the group, or by
			// an earlier call whose answer was lost).
			if st, e := p.lifecycleState(ctx, in.ID); e == nil && (st == "" || isGone(st) || isTerminating(st)) {
				p.log.Info("terminate: instance already leaving", "instance", in.ID, "state", st, "err", err)
			} else {
				return fmt.Errorf("aws: terminate %s in %s: %w", in.ID, p.cfg.Group, err)
			}
		} else {
			p.log.Info("instance terminating", "instance", in.ID, "desired", desired-1)
		}
	}
	if p.cfg.LifecycleHook == "" {
		return nil
	}
	// With the hook, the group moves the instance to Terminating:Wait and
	// holds it there until the lifecycle action completes.
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HookTimeout)
	defer cancel()
	for {
		st, err := p.lifecycleState(ctx, in.ID)
		switch {
		case err != nil:
		case st == "" || isGone(st):
			return nil
		case st == string(astypes.LifecycleStateTerminatingWait):
			return p.complete(ctx, in.ID)
		}
		if e := p.sleep(ctx); e != nil {
			if err != nil {
				e = fmt.Errorf("%w (last error: %v)", e, err)
			}
			return fmt.Errorf("aws: terminate %s: waiting for Terminating:Wait (state %q): %w", in.ID, st, e)
		}
	}
}

// complete completes the termination lifecycle action of id with CONTINUE.
// An action that is no longer pending (completed by an earlier call, or
// timed out) counts as completed.
func (p *Provisioner) complete(ctx context.Context, id string) error {
	_, err := p.as.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  sdkaws.String(p.cfg.Group),
		LifecycleHookName:     sdkaws.String(p.cfg.LifecycleHook),
		InstanceId:            sdkaws.String(id),
		LifecycleActionResult: sdkaws.String("CONTINUE"),
	})
	if err != nil {
		if st, e := p.lifecycleState(ctx, id); e == nil && st != string(astypes.LifecycleStateTerminatingWait) {
			p.log.Info("lifecycle action no longer pending", "instance", id, "state", st, "err", err)
			return nil
		}
		return fmt.Errorf("aws: complete lifecycle action %s of %s: %w", p.cfg.LifecycleHook, id, err)
	}
	p.log.Info("lifecycle action completed", "instance", id, "hook", p.cfg.LifecycleHook)
	return nil
}

// List returns the group's instances with their private addresses.
// Lifecycle states map to provision states: Pending* and Warmed:* to
// pending; InService, Standby and the like to running; Terminating:Wait to
// draining (the group is holding it for a drain); other Terminating* states,
// Detaching and Detached to terminated. An instance whose EC2 instance is
// shutting down or terminated is terminated whatever the group says.
// Instances without a private IP yet have empty addresses.
func (p *Provisioner) List(ctx context.Context) ([]provision.Instance, error) {
	return p.list(ctx)
}

func (p *Provisioner) list(ctx context.Context) ([]provision.Instance, error) {
	g, err := p.group(ctx)
	if err != nil {
		return nil, err
	}
	return p.instances(ctx, g)
}

func (p *Provisioner) instances(ctx context.Context, g *astypes.AutoScalingGroup) ([]provision.Instance, error) {
	ids := make([]string, 0, len(g.Instances))
	for _, in := range g.Instances {
		ids = append(ids, sdkaws.ToString(in.InstanceId))
	}
	byID, err := p.describe(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]provision.Instance, 0, len(g.Instances))
	for _, gi := range g.Instances {
		in := provision.Instance{ID: sdkaws.ToString(gi.InstanceId), State: mapState(string(gi.LifecycleState))}
		if e, ok := byID[in.ID]; ok {
			if ip := sdkaws.ToString(e.PrivateIpAddress); ip != "" {
				in.HTTPAddr, in.ChordAddr = p.addr(ip, p.cfg.HTTPPort), p.addr(ip, p.cfg.ChordPort)
			}
			in.Started = sdkaws.ToTime(e.LaunchTime)
			if ec2Gone(e) {
				in.State = provision.StateTerminated
			}
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b provision.Instance) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// PeerOptions narrow the peers FindPeers returns.
type PeerOptions struct {
	// ExcludeID leaves out the instance with this ID, and ExcludeIP the
	// one with this private IP: a booting instance leaves itself out.
	ExcludeID string
	ExcludeIP string
	// Healthy keeps only the instances whose node answers GET /healthz on
	// the HTTP port with 200 within HealthTimeout (default 3s).
	Healthy       bool
	HealthTimeout time.Duration
}

// Peers returns the chord addresses (privateIP:ChordPort) of the InService
// instances of group (the Provisioner's own group when empty), oldest
// first: the addresses a new node may join through.
func (p *Provisioner) Peers(ctx context.Context, group string) ([]string, error) {
	return p.FindPeers(ctx, group, PeerOptions{})
}

// FindPeers is Peers narrowed by o. The order is by launch time, then
// instance ID, so that every caller that takes the first peer takes the
// same one.
func (p *Provisioner) FindPeers(ctx context.Context, group string, o PeerOptions) ([]string, error) {
	if group == "" {
		group = p.cfg.Group
	}
	g, err := p.describeGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	ins, err := p.instances(ctx, g)
	if err != nil {
		return nil, err
	}
	inService := map[string]bool{}
	for _, gi := range g.Instances {
		if gi.LifecycleState == astypes.LifecycleStateInService {
			inService[sdkaws.ToString(gi.InstanceId)] = true
		}
	}
	var peers []provision.Instance
	for _, in := range ins {
		if !inService[in.ID] || in.ChordAddr == "" || in.State != provision.StateRunning {
			continue
		}
		if o.ExcludeID != "" && in.ID == o.ExcludeID {
			continue
		}
		if host, _, _ := net.SplitHostPort(in.ChordAddr); o.ExcludeIP != "" && host == o.ExcludeIP {
			continue
		}
		peers = append(peers, in)
	}
	if o.Healthy {
		if o.HealthTimeout <= 0 {
			o.HealthTimeout = 3 * time.Second
		}
		peers = healthy(ctx, peers, o.HealthTimeout)
	}
	out := make([]string, len(peers))
	for i, in := range peers {
		out[i] = in.ChordAddr
	}
	return out, nil
}

// healthy keeps, in order, the instances whose node answers GET /healthz
// with 200.
func healthy(ctx context.Context, ins []provision.Instance, timeout time.Duration) []provision.Instance {
	ok := make([]bool, len(ins))
	client := &http.Client{Timeout: timeout}
	var wg sync.WaitGroup
	for i, in := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+in.HTTPAddr+"/healthz", nil)
			if err != nil {
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				return
			}
			resp.Body.Close()
			ok[i] = resp.StatusCode == http.StatusOK
		}()
	}
	wg.Wait()
	var out []provision.Instance
	for i, in := range ins {
		if ok[i] {
			out = append(out, in)
		}
	}
	return out
}

func (p *Provisioner) addr(ip string, port int) string {
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

// CheckTLS looks at the user data of the group's launch template (the
// version the group launches) for the --tls-ca flag or TIDE_TLS_CA, as
// UserData with UserDataOptions.TLS writes them, and fails with an error
// wrapping ErrNoTLS when it has neither. The Provisioner starts no node
// itself: the launch template's user data gives nodes their TLS files,
// so a controller with --tls-* checks it rather than inject them. It is a
// heuristic (user data that fetches its script elsewhere has neither), so
// the caller may only warn; a group without a launch template, or whose
// user data is not plain or gzip text, is an error without ErrNoTLS.
func (p *Provisioner) CheckTLS(ctx context.Context) error {
	g, err := p.group(ctx)
	if err != nil {
		return err
	}
	lt := g.LaunchTemplate
	if lt == nil && g.MixedInstancesPolicy != nil && g.MixedInstancesPolicy.LaunchTemplate != nil {
		lt = g.MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification
	}
	if lt == nil {
		return fmt.Errorf("aws: group %s has no launch template whose user data could be checked for TLS", p.cfg.Group)
	}
	in := &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateId: lt.LaunchTemplateId, Versions: []string{"$Default"}}
	if in.LaunchTemplateId == nil {
		in.LaunchTemplateName = lt.LaunchTemplateName
	}
	what := sdkaws.ToString(lt.LaunchTemplateName)
	if what == "" {
		what = sdkaws.ToString(lt.LaunchTemplateId)
	}
	if v := sdkaws.ToString(lt.Version); v != "" {
		in.Versions = []string{v}
	}
	out, err := p.ec2.DescribeLaunchTemplateVersions(ctx, in)
	if err != nil {
		return fmt.Errorf("aws: describe launch template %s version %s: %w", what, in.Versions[0], err)
	}
	if len(out.LaunchTemplateVersions) == 0 || out.LaunchTemplateVersions[0].LaunchTemplateData == nil {
		return fmt.Errorf("aws: launch template %s has no version %s", what, in.Versions[0])
	}
	ud, err := base64.StdEncoding.DecodeString(sdkaws.ToString(out.LaunchTemplateVersions[0].LaunchTemplateData.UserData))
	if err != nil {
		return fmt.Errorf("aws: launch template %s: user data is not base64: %w", what, err)
	}
	if len(ud) > 2 && ud[0] == 0x1f && ud[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(ud))
		if err == nil {
			ud, err = io.ReadAll(io.LimitReader(zr, 1<<20))
		}
		if err != nil {
			return fmt.Errorf("aws: launch template %s: gzip user data: %w", what, err)
		}
	}
	if !bytes.Contains(ud, []byte("--tls-ca")) && !bytes.Contains(ud, []byte("TIDE_TLS_CA")) {
		return fmt.Errorf("%w: group %s launches template %s version %s, whose user data has neither --tls-ca nor TIDE_TLS_CA; render it with tideaws.UserDataOptions.TLS", ErrNoTLS, p.cfg.Group, what, in.Versions[0])
	}
	return nil
}

func (p *Provisioner) group(ctx context.Context) (*astypes.AutoScalingGroup, error) {
	return p.describeGroup(ctx, p.cfg.Group)
}

func (p *Provisioner) describeGroup(ctx context.Context, name string) (*astypes.AutoScalingGroup, error) {
	out, err := p.as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
		AutoScalingGroupNames: []string{name},
	})
	if err != nil {
		return nil, fmt.Errorf("aws: describe auto scaling group %s: %w", name, err)
	}
	for i := range out.AutoScalingGroups {
		if sdkaws.ToString(out.AutoScalingGroups[i].AutoScalingGroupName) == name {
			return &out.AutoScalingGroups[i], nil
		}
	}
	return nil, fmt.Errorf("aws: no auto scaling group named %q", name)
}

// lifecycleState returns the instance's lifecycle state in the group, or
// "" when the group no longer has it. An instance of another group is
// provision.ErrNotFound.
func (p *Provisioner) lifecycleState(ctx context.Context, id string) (string, error) {
	out, err := p.as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{
		InstanceIds: []string{id},
	})
	if err != nil {
		return "", fmt.Errorf("aws: describe auto scaling instance %s: %w", id, err)
	}
	for _, d := range out.AutoScalingInstances {
		if sdkaws.ToString(d.InstanceId) != id {
			continue
		}
		if g := sdkaws.ToString(d.AutoScalingGroupName); g != p.cfg.Group {
			return "", fmt.Errorf("%w: %s belongs to auto scaling group %s, not %s", provision.ErrNotFound, id, g, p.cfg.Group)
		}
		return sdkaws.ToString(d.LifecycleState), nil
	}
	return "", nil
}

// describe returns the EC2 instances with the given IDs by ID. IDs EC2 does
// not know (any more) are missing from the map.
func (p *Provisioner) describe(ctx context.Context, ids []string) (map[string]ec2types.Instance, error) {
	out := map[string]ec2types.Instance{}
	for len(ids) > 0 {
		n := min(len(ids), 100)
		batch := ids[:n]
		ids = ids[n:]
		var token *string
		for {
			res, err := p.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: batch, NextToken: token})
			if err != nil {
				if apiCode(err) == "InvalidInstanceID.NotFound" && len(batch) > 1 {
					// One unknown ID fails the whole call: ask one by one.
					for _, id := range batch {
						one, err := p.describe(ctx, []string{id})
						if err != nil {
							return nil, err
						}
						for k, v := range one {
							out[k] = v
						}
					}
					break
				}
				if apiCode(err) == "InvalidInstanceID.NotFound" {
					break
				}
				return nil, fmt.Errorf("aws: describe instances: %w", err)
			}
			for _, r := range res.Reservations {
				for _, in := range r.Instances {
					out[sdkaws.ToString(in.InstanceId)] = in
				}
			}
			if res.NextToken == nil || *res.NextToken == "" {
				break
			}
			token = res.NextToken
		}
	}
	return out, nil
}

func (p *Provisioner) sleep(ctx context.Context) error {
	t := time.NewTimer(p.cfg.PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// mapState maps an Auto Scaling lifecycle state to a provision state.
func mapState(s string) string {
	switch {
	case s == string(astypes.LifecycleStateTerminatingWait):
		return provision.StateDraining
	case isGone(s) || isTerminating(s):
		return provision.StateTerminated
	case strings.HasPrefix(s, "Pending"), strings.HasPrefix(s, "Warmed"):
		return provision.StatePending
	default: // InService, Standby, EnteringStandby, ReplacingRootVolume*, ...
		return provision.StateRunning
	}
}

func isTerminating(s string) bool { return strings.HasPrefix(s, "Terminating") }

func isGone(s string) bool {
	switch astypes.LifecycleState(s) {
	case astypes.LifecycleStateTerminated, astypes.LifecycleStateDetaching, astypes.LifecycleStateDetached,
		astypes.LifecycleStateTerminatingProceed, astypes.LifecycleStateTerminatingRetained:
		return true
	}
	return false
}

func ec2Gone(in ec2types.Instance) bool {
	if in.State == nil {
		return false
	}
	switch in.State.Name {
	case ec2types.InstanceStateNameShuttingDown, ec2types.InstanceStateNameTerminated:
		return true
	}
	return false
}

// apiCode is the AWS error code of err, or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

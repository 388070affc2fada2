package aws

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// DefaultLifecycleHook is the termination lifecycle hook EnsureGroup puts on
// a group unless told another name.
const DefaultLifecycleHook = "tide-drain"

var errAlreadyExists = errors.New("auto scaling group exists")

// GroupOptions describe an Auto Scaling group of tide nodes for EnsureGroup.
type GroupOptions struct {
	// Group is the Auto Scaling group's name (required).
	Group string
	// LaunchTemplate is the launch template's name; empty means
	// Group + "-tide".
	LaunchTemplate string
	// ImageID is the AMI the instances boot (required): a Linux with bash,
	// curl and systemd (Amazon Linux 2023, Ubuntu, Debian).
	ImageID string
	// InstanceType, e.g. "t3.small" (the default).
	InstanceType string
	// InstanceProfile is the name or ARN of the IAM instance profile. The
	// user data's `tide aws-peers` needs autoscaling:DescribeAutoScalingGroups
	// and ec2:DescribeInstances, so a real group needs one.
	InstanceProfile string
	// SecurityGroupIDs must let the instances reach each other, and the
	// controller reach them, on the chord and HTTP ports (5057, 5058).
	SecurityGroupIDs []string
	// KeyName is an optional EC2 key pair for SSH.
	KeyName string
	// Subnets (the group's VPCZoneIdentifier) or AvailabilityZones; at
	// least one of them. Subnets win when both are given.
	Subnets           []string
	AvailabilityZones []string
	// Sizes of the group: 0 <= MinSize <= DesiredCapacity <= MaxSize, and
	// MaxSize >= 1.
	MinSize, MaxSize, DesiredCapacity int32
	// LifecycleHook is the termination lifecycle hook's name; empty means
	// DefaultLifecycleHook. Give the same name to Config.LifecycleHook.
	LifecycleHook string
	// HookTimeout is the hook's heartbeat timeout: how long the group holds
	// a terminating instance for its drain without a heartbeat before it
	// terminates it anyway (default 10m; AWS allows 30s..2h).
	HookTimeout time.Duration
	// UserData is the instances' boot script, normally
	// UserData(UserDataOptions{...}) for the same group.
	UserData string
	// Tags are put on the group and propagated to its instances.
	Tags map[string]string
}

// EnsureGroup sets up an Auto Scaling group of tide nodes, which is the way
// to create a group for the Provisioner:
//
//   - the launch template o.LaunchTemplate with o.UserData (IMDSv2 required),
//     or a new version of it if it exists;
//   - the group with o's sizes, launching the template's $Latest version;
//     a group that exists gets the template and o's MinSize and MaxSize but
//     keeps its desired capacity (the controller's to set), which the group
//     raises to MinSize or lowers to MaxSize as needed;
//   - the termination lifecycle hook (autoscaling:EC2_INSTANCE_TERMINATING,
//     default result CONTINUE), so that an instance the group terminates on
//     its own waits in Terminating:Wait until Provisioner.Drain has moved its
//     data away.
//
// It returns the launch template's name.
func EnsureGroup(ctx context.Context, c Clients, o GroupOptions) (string, error) {
	if c.AutoScaling == nil || c.EC2 == nil {
		return "", errors.New("aws: EnsureGroup needs both clients (see NewClients)")
	}
	if strings.TrimSpace(o.Group) == "" {
		return "", errors.New("aws: GroupOptions.Group is required")
	}
	if o.ImageID == "" {
		return "", errors.New("aws: GroupOptions.ImageID (the AMI) is required")
	}
	if o.MaxSize < 1 || o.MinSize < 0 || o.MinSize > o.DesiredCapacity || o.DesiredCapacity > o.MaxSize {
		return "", fmt.Errorf("aws: group sizes min %d, desired %d, max %d: want 0 <= min <= desired <= max and max >= 1", o.MinSize, o.DesiredCapacity, o.MaxSize)
	}
	if len(o.Subnets) == 0 && len(o.AvailabilityZones) == 0 {
		return "", errors.New("aws: GroupOptions needs Subnets or AvailabilityZones")
	}
	if o.LaunchTemplate == "" {
		o.LaunchTemplate = o.Group + "-tide"
	}
	if o.InstanceType == "" {
		o.InstanceType = "t3.small"
	}
	if o.LifecycleHook == "" {
		o.LifecycleHook = DefaultLifecycleHook
	}
	if o.HookTimeout <= 0 {
		o.HookTimeout = 10 * time.Minute
	}
	hookSeconds := int32(o.HookTimeout / time.Second)
	if hookSeconds < 30 || hookSeconds > 7200 {
		return "", fmt.Errorf("aws: GroupOptions.HookTimeout %s: want 30s..2h", o.HookTimeout)
	}

	data := &ec2types.RequestLaunchTemplateData{
		ImageId:      sdkaws.String(o.ImageID),
		InstanceType: ec2types.InstanceType(o.InstanceType),
		MetadataOptions: &ec2types.LaunchTemplateInstanceMetadataOptionsRequest{
			HttpTokens:   ec2types.LaunchTemplateHttpTokensStateRequired,
			HttpEndpoint: ec2types.LaunchTemplateInstanceMetadataEndpointStateEnabled,
		},
	}
	if o.UserData != "" {
		data.UserData = sdkaws.String(base64.StdEncoding.EncodeToString([]byte(o.UserData)))
	}
	if o.InstanceProfile != "" {
		p := &ec2types.LaunchTemplateIamInstanceProfileSpecificationRequest{}
		if strings.HasPrefix(o.InstanceProfile, "arn:") {
			p.Arn = sdkaws.String(o.InstanceProfile)
		} else {
			p.Name = sdkaws.String(o.InstanceProfile)
		}
		data.IamInstanceProfile = p
	}
	if len(o.SecurityGroupIDs) > 0 {
		data.SecurityGroupIds = o.SecurityGroupIDs
	}
	if o.KeyName != "" {
		data.KeyName = sdkaws.String(o.KeyName)
	}
	_, err := c.EC2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: sdkaws.String(o.LaunchTemplate),
		LaunchTemplateData: data,
		VersionDescription: sdkaws.String("tide node"),
	})
	if apiCode(err) == "InvalidLaunchTemplateName.AlreadyExistsException" {
		_, err = c.EC2.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{
			LaunchTemplateName: sdkaws.String(o.LaunchTemplate),
			LaunchTemplateData: data,
			VersionDescription: sdkaws.String("tide node"),
		})
	}
	if err != nil {
		return "", fmt.Errorf("aws: launch template %s: %w", o.LaunchTemplate, err)
	}

	lt := &astypes.LaunchTemplateSpecification{
		LaunchTemplateName: sdkaws.String(o.LaunchTemplate),
		Version:            sdkaws.String("$Latest"),
	}
	var vpcZones *string
	var zones []string
	if len(o.Subnets) > 0 {
		vpcZones = sdkaws.String(strings.Join(o.Subnets, ","))
	} else {
		zones = o.AvailabilityZones
	}
	var tags []astypes.Tag
	keys := make([]string, 0, len(o.Tags))
	for k := range o.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		tags = append(tags, astypes.Tag{
			Key: sdkaws.String(k), Value: sdkaws.String(o.Tags[k]),
			ResourceId: sdkaws.String(o.Group), ResourceType: sdkaws.String("auto-scaling-group"),
			PropagateAtLaunch: sdkaws.Bool(true),
		})
	}
	hook := astypes.LifecycleHookSpecification{
		LifecycleHookName:   sdkaws.String(o.LifecycleHook),
		LifecycleTransition: sdkaws.String("autoscaling:EC2_INSTANCE_TERMINATING"),
		DefaultResult:       sdkaws.String("CONTINUE"),
		HeartbeatTimeout:    sdkaws.Int32(hookSeconds),
	}
	existing, err := c.AutoScaling.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
		AutoScalingGroupNames: []string{o.Group},
	})
	if err != nil {
		return "", fmt.Errorf("aws: describe auto scaling group %s: %w", o.Group, err)
	}
	exists := false
	for _, g := range existing.AutoScalingGroups {
		exists = exists || sdkaws.ToString(g.AutoScalingGroupName) == o.Group
	}
	if exists {
		err = errAlreadyExists
	} else {
		_, err = c.AutoScaling.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
			AutoScalingGroupName:           sdkaws.String(o.Group),
			LaunchTemplate:                 lt,
			MinSize:                        sdkaws.Int32(o.MinSize),
			MaxSize:                        sdkaws.Int32(o.MaxSize),
			DesiredCapacity:                sdkaws.Int32(o.DesiredCapacity),
			VPCZoneIdentifier:              vpcZones,
			AvailabilityZones:              zones,
			LifecycleHookSpecificationList: []astypes.LifecycleHookSpecification{hook},
			Tags:                           tags,
		})
	}
	if errors.Is(err, errAlreadyExists) || apiCode(err) == "AlreadyExists" {
		_, err = c.AutoScaling.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{
			AutoScalingGroupName: sdkaws.String(o.Group),
			LaunchTemplate:       lt,
			MinSize:              sdkaws.Int32(o.MinSize),
			MaxSize:              sdkaws.Int32(o.MaxSize),
			VPCZoneIdentifier:    vpcZones,
			AvailabilityZones:    zones,
		})
	}
	if err != nil {
		return "", fmt.Errorf("aws: auto scaling group %s: %w", o.Group, err)
	}
	// PutLifecycleHook creates or updates the hook: it puts the hook on a
	// group that existed before, and on endpoints that ignore the hooks
	// given at creation.
	_, err = c.AutoScaling.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{
		AutoScalingGroupName: sdkaws.String(o.Group),
		LifecycleHookName:    hook.LifecycleHookName,
		LifecycleTransition:  hook.LifecycleTransition,
		DefaultResult:        hook.DefaultResult,
		HeartbeatTimeout:     hook.HeartbeatTimeout,
	})
	if err != nil {
		return "", fmt.Errorf("aws: lifecycle hook %s on %s: %w", o.LifecycleHook, o.Group, err)
	}
	return o.LaunchTemplate, nil
}

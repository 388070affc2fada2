package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/spf13/cobra"

	tideaws "tide/autoscale/provision/aws"
)

// NewAWSPeersCmd is `tide aws-peers`: the chord addresses of the tide nodes
// of an EC2 Auto Scaling group, which the instances' start script (see
// tideaws.UserData) joins through.
func NewAWSPeersCmd() *cobra.Command {
	var group, region, endpoint, selfIP string
	var excludeSelf, healthy bool
	var chordPort, httpPort int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "aws-peers",
		Short: "Print the chord addresses of the in-service instances of an EC2 Auto Scaling group",
		Long: `Print the chord address (private IP and --chord-port) of every InService
instance of the Auto Scaling group --group, one per line, oldest instance first
(by launch time, then instance ID), so that "head -1" picks the same peer on
every instance.

--exclude-self leaves out this instance: the one whose private IP is --self-ip,
or, without --self-ip, the one the EC2 instance metadata service names.
--healthy keeps only instances whose node answers GET /healthz on --http-port.

Credentials come from the AWS SDK's default chain (on an instance: its
instance profile, which needs autoscaling:DescribeAutoScalingGroups and
ec2:DescribeInstances). Without --region the region comes from AWS_REGION or
the instance metadata service.`,
		Example: `  tide aws-peers --group tide-nodes --region eu-west-1
  tide aws-peers --group tide-nodes --region eu-west-1 --exclude-self --healthy | head -1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if group == "" {
				return errors.New("--group is required")
			}
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: want a positive duration", timeout)
			}
			if selfIP != "" && net.ParseIP(selfIP) == nil {
				return fmt.Errorf("--self-ip %q: not an IP address", selfIP)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var opts tideaws.PeerOptions
			opts.Healthy = healthy
			if excludeSelf {
				if selfIP != "" {
					opts.ExcludeIP = selfIP
				} else {
					out, err := imds.New(imds.Options{}).GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"})
					if err != nil {
						return fmt.Errorf("--exclude-self: ask the instance metadata service for this instance's ID (off EC2, give --self-ip): %w", err)
					}
					defer out.Content.Close()
					b, err := io.ReadAll(io.LimitReader(out.Content, 4096))
					if err != nil {
						return fmt.Errorf("--exclude-self: read the instance ID: %w", err)
					}
					if opts.ExcludeID = strings.TrimSpace(string(b)); opts.ExcludeID == "" {
						return errors.New("--exclude-self: the instance metadata service gave an empty instance ID")
					}
				}
			}
			clients, err := tideaws.NewClients(ctx, tideaws.ClientOptions{Region: region, IMDSRegion: true, EndpointURL: endpoint})
			if err != nil {
				return err
			}
			p, err := tideaws.New(ctx, tideaws.Config{Group: group, Clients: clients, ChordPort: chordPort, HTTPPort: httpPort})
			if err != nil {
				return err
			}
			peers, err := p.FindPeers(ctx, group, opts)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, a := range peers {
				fmt.Fprintln(w, a)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&group, "group", "", "Auto Scaling group name (required)")
	f.StringVar(&region, "region", "", "AWS region (default: AWS_REGION, or the instance metadata service)")
	f.StringVar(&endpoint, "endpoint-url", "", "AWS endpoint URL override, e.g. a moto_server")
	f.BoolVar(&excludeSelf, "exclude-self", false, "leave out this instance")
	f.StringVar(&selfIP, "self-ip", "", "this instance's private IP, for --exclude-self (default: ask the instance metadata service for the instance ID)")
	f.BoolVar(&healthy, "healthy", false, "only instances whose node answers /healthz")
	f.IntVar(&chordPort, "chord-port", tideaws.DefaultChordPort, "chord port of the nodes")
	f.IntVar(&httpPort, "http-port", tideaws.DefaultHTTPPort, "HTTP port of the nodes (for --healthy)")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

package aws_test

import (
	"context"
	"log"

	"tide/autoscale/provision"
	tideaws "tide/autoscale/provision/aws"
)

// Setting up a group of tide nodes and scaling it by one.
func ExampleEnsureGroup() {
	ctx := context.Background()
	clients, err := tideaws.NewClients(ctx, tideaws.ClientOptions{Region: "eu-west-1"})
	if err != nil {
		log.Fatal(err)
	}
	// With TLS: UserDataOptions.TLS holds the CA, certificate and key
	// (one certificate naming the subnets' addresses).
	ud, err := tideaws.UserData(tideaws.UserDataOptions{
		Group: "tide-nodes", Region: "eu-west-1",
		BinaryURL: "https://example.com/tide-linux-amd64",
		NodeFlags: []string{"--capacity", "8GiB"},
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = tideaws.EnsureGroup(ctx, clients, tideaws.GroupOptions{
		Group:            "tide-nodes",
		ImageID:          "ami-0123456789abcdef0",
		InstanceProfile:  "tide-node", // autoscaling:DescribeAutoScalingGroups, ec2:DescribeInstances
		SecurityGroupIDs: []string{"sg-0123456789abcdef0"},
		Subnets:          []string{"subnet-0123456789abcdef0"},
		MinSize:          1, DesiredCapacity: 3, MaxSize: 10,
		UserData: ud,
	})
	if err != nil {
		log.Fatal(err)
	}
	p, err := tideaws.New(ctx, tideaws.Config{
		Group: "tide-nodes", Clients: clients, LifecycleHook: tideaws.DefaultLifecycleHook,
	})
	if err != nil {
		log.Fatal(err)
	}
	in, err := p.Launch(ctx, provision.Spec{})
	if err != nil {
		log.Fatal(err)
	}
	if err := provision.WaitHealthy(ctx, nil, in.HTTPAddr); err != nil {
		log.Fatal(err)
	}
}

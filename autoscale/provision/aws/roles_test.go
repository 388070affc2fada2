package aws

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"tide/cluster"
	"tide/paxos/node"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func rolesCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// motoSubnet creates a VPC and a subnet with the given CIDR in moto and
// returns the subnet's ID.
func motoSubnet(t *testing.T, ec *ec2.Client, cidr string) string {
	t.Helper()
	ctx := context.Background()
	vpc, err := ec.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: sdkaws.String(cidr)})
	if err != nil {
		t.Fatalf("create vpc %s: %v", cidr, err)
	}
	sn, err := ec.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, CidrBlock: sdkaws.String(cidr)})
	if err != nil {
		t.Fatalf("create subnet %s: %v", cidr, err)
	}
	return sdkaws.ToString(sn.Subnet.SubnetId)
}

// motoRoles is Roles on a fresh subnet of the tests' moto_server.
func motoRoles(t *testing.T, cidr, cluster string) (*Roles, *ec2.Client) {
	t.Helper()
	url := startMoto(t)
	_, ec := motoClients(t, url)
	r, err := NewRoles(context.Background(), RolesConfig{EC2: ec, Subnet: motoSubnet(t, ec, cidr), Image: motoImage(t, ec),
		InstanceTypes: map[string]string{"proxy": "c5.large"}, Cluster: cluster, PollInterval: 10 * time.Millisecond, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return r, ec
}

// enis returns the network interfaces tagged with cluster, by private IP.
func enis(t *testing.T, ec *ec2.Client, cluster string) map[string]ec2types.NetworkInterface {
	t.Helper()
	out, err := ec.DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: sdkaws.String("tag:" + LogClusterTag), Values: []string{cluster}}}})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]ec2types.NetworkInterface{}
	for _, ni := range out.NetworkInterfaces {
		m[sdkaws.ToString(ni.PrivateIpAddress)] = ni
	}
	return m
}

func tagsOf(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[sdkaws.ToString(t.Key)] = sdkaws.ToString(t.Value)
	}
	return m
}

func userDataOf(t *testing.T, ec *ec2.Client, id string) string {
	t.Helper()
	out, err := ec.DescribeInstanceAttribute(context.Background(), &ec2.DescribeInstanceAttributeInput{
		InstanceId: sdkaws.String(id), Attribute: ec2types.InstanceAttributeNameUserData})
	if err != nil {
		t.Fatal(err)
	}
	if out.UserData == nil {
		t.Fatalf("instance %s has no user data", id)
	}
	b, err := base64.StdEncoding.DecodeString(sdkaws.ToString(out.UserData.Value))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRolesOnMoto: Reserve creates interfaces with IPs of the subnet, Run
// launches an instance on one with the role's user data and tags,
// Remove terminates it and deletes the interface, Release deletes an
// unused interface, Cleanup everything of the cluster.
func TestRolesOnMoto(t *testing.T) {
	ctx := rolesCtx(t)
	r, ec := motoRoles(t, "10.77.0.0/24", "objects")
	ips, err := r.Reserve(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	got := enis(t, ec, "objects")
	subnet := netip.MustParsePrefix("10.77.0.0/24")
	for _, ip := range ips {
		ni, ok := got[ip]
		if !ok {
			t.Fatalf("Reserve returned %s; tagged interfaces %v", ip, got)
		}
		if a, err := netip.ParseAddr(ip); err != nil || !subnet.Contains(a) || sdkaws.ToString(ni.SubnetId) != r.cfg.Subnet {
			t.Errorf("interface %s: IP %s in subnet %s, want one of %s in %s", sdkaws.ToString(ni.NetworkInterfaceId), ip, sdkaws.ToString(ni.SubnetId), subnet, r.cfg.Subnet)
		}
	}
	if len(got) != 3 || len(ips) != 3 {
		t.Fatalf("Reserve(3) = %v; interfaces %d", ips, len(got))
	}

	args := []string{"log", "serve", "--role", ips[0] + ":5057", "--deployment-json", `{"log":{"epoch":1}, "x":"it's"}`, "--data-dir", "/data"}
	id, err := r.Run(ctx, "proxy-10_77_0_4_5057", "proxy", ips[0], 500_000_000, args)
	if err != nil {
		t.Fatal(err)
	}
	in := ec2View(t, ec, id)[id]
	if sdkaws.ToString(in.PrivateIpAddress) != ips[0] {
		t.Errorf("instance %s has IP %s, want the reserved %s", id, sdkaws.ToString(in.PrivateIpAddress), ips[0])
	}
	onENI := false
	for _, ni := range in.NetworkInterfaces {
		onENI = onENI || sdkaws.ToString(ni.NetworkInterfaceId) == sdkaws.ToString(got[ips[0]].NetworkInterfaceId)
	}
	if !onENI {
		t.Errorf("instance %s does not have interface %s", id, sdkaws.ToString(got[ips[0]].NetworkInterfaceId))
	}
	if in.InstanceType != "c5.large" {
		t.Errorf("proxy instance type %s, want the kind's c5.large", in.InstanceType)
	}
	tags := tagsOf(in.Tags)
	if tags[LogClusterTag] != "objects" || tags[LogKindTag] != "proxy" || tags[LogAddrTag] != ips[0] || tags["Name"] != "proxy-10_77_0_4_5057" {
		t.Errorf("instance tags %v", tags)
	}
	ud := userDataOf(t, ec, id)
	want, err := RoleUserData(RoleUserDataOptions{Args: args})
	if err != nil {
		t.Fatal(err)
	}
	if ud != want {
		t.Errorf("user data is not the role's:\n%s", ud)
	}

	id2, err := r.Run(ctx, "replica-x", "replica", ips[1], 0, args)
	if err != nil {
		t.Fatal(err)
	}
	if typ := ec2View(t, ec, id2)[id2].InstanceType; typ != "t3.small" {
		t.Errorf("replica instance type %s, want the default t3.small", typ)
	}

	r.Release(ips[0], ips[2]) // ips[0] is taken: only ips[2] goes
	got = enis(t, ec, "objects")
	if _, ok := got[ips[2]]; ok {
		t.Errorf("released interface of %s still there", ips[2])
	}
	if _, ok := got[ips[0]]; !ok {
		t.Errorf("Release deleted the interface of running instance %s", id)
	}

	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if st := ec2View(t, ec, id)[id].State; st == nil || st.Name != ec2types.InstanceStateNameTerminated {
		t.Errorf("instance %s state %+v after Remove", id, st)
	}
	if _, ok := enis(t, ec, "objects")[ips[0]]; ok {
		t.Errorf("interface of %s left after Remove", ips[0])
	}
	if err := r.Remove(ctx, id); err != nil {
		t.Errorf("Remove of a removed instance: %v", err)
	}

	// Cleanup, from a Roles that never saw the rest (a later process).
	if _, err := r.Reserve(ctx, 1); err != nil {
		t.Fatal(err)
	}
	r2, err := NewRoles(ctx, RolesConfig{EC2: ec, Subnet: r.cfg.Subnet, Image: r.cfg.Image, Cluster: "objects", PollInterval: 10 * time.Millisecond, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if st := ec2View(t, ec, id2)[id2].State; st == nil || st.Name != ec2types.InstanceStateNameTerminated {
		t.Errorf("instance %s state %+v after Cleanup", id2, st)
	}
	if left := enis(t, ec, "objects"); len(left) != 0 {
		t.Errorf("interfaces left after Cleanup: %v", left)
	}
}

// failingRun is moto with RunInstances failing.
type failingRun struct{ *ec2.Client }

func (failingRun) RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	return nil, errors.New("InsufficientInstanceCapacity: none left")
}

// TestRolesFailedLaunchReleases: a role whose instance cannot be launched
// fails to start with the cause, and its interface is deleted.
func TestRolesFailedLaunchReleases(t *testing.T) {
	ctx := rolesCtx(t)
	r, ec := motoRoles(t, "10.78.0.0/24", "failing")
	r.ec2 = failingRun{ec}
	host := &cluster.ProvisionedRoles{C: r, Healthy: func(context.Context, string) error { return errors.New("not reached") }}
	roles, https, err := host.Addrs(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(enis(t, ec, "failing")) != 1 {
		t.Fatal("Addrs made no interface")
	}
	_, err = host.Start(ctx, cluster.RoleSpec{Kind: "proxy", Addr: roles[0], HTTP: https[0], Join: "10.0.0.1:5058"})
	if err == nil || !strings.Contains(err.Error(), "InsufficientInstanceCapacity") {
		t.Fatalf("Start with RunInstances failing: %v", err)
	}
	if left := enis(t, ec, "failing"); len(left) != 0 {
		t.Errorf("the failed launch left its interface: %v", left)
	}

	if _, err := r.Run(ctx, "x", "proxy", "10.78.0.200", 0, nil); err == nil || !strings.Contains(err.Error(), "Reserve") {
		t.Errorf("Run on an address never reserved: %v", err)
	}
	for _, cfg := range []RolesConfig{{EC2: ec, Image: "ami-1"}, {EC2: ec, Subnet: "s"}, {EC2: ec, Subnet: "s", Image: "i", BinaryPath: "rel/tide"}} {
		if _, err := NewRoles(ctx, cfg); err == nil {
			t.Errorf("NewRoles(%+v) accepted", cfg)
		}
	}
}

// repeatIP is the EC2 API with CreateNetworkInterface answering the first
// interface's address again for the next `times` interfaces, as an
// emulator that picks addresses at random sometimes does.
type repeatIP struct {
	RolesEC2API
	first string
	times int
}

func (r *repeatIP) CreateNetworkInterface(ctx context.Context, in *ec2.CreateNetworkInterfaceInput, opts ...func(*ec2.Options)) (*ec2.CreateNetworkInterfaceOutput, error) {
	out, err := r.RolesEC2API.CreateNetworkInterface(ctx, in, opts...)
	if err != nil {
		return out, err
	}
	if r.first == "" {
		r.first = sdkaws.ToString(out.NetworkInterface.PrivateIpAddress)
	} else if r.times > 0 {
		r.times--
		out.NetworkInterface.PrivateIpAddress = sdkaws.String(r.first)
	}
	return out, nil
}

// TestReserveDistinctAddresses: an interface that comes back with an
// address already reserved is deleted and Reserve asks again, so its
// addresses are distinct and every one is a tagged interface's; a subnet
// that keeps repeating one makes Reserve fail and delete what it made.
func TestReserveDistinctAddresses(t *testing.T) {
	ctx := rolesCtx(t)
	r, ec := motoRoles(t, "10.76.0.0/24", "repeats")
	r.ec2 = &repeatIP{RolesEC2API: ec, times: 2}
	ips, err := r.Reserve(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	got := enis(t, ec, "repeats")
	if len(ips) != 3 || len(got) != 3 {
		t.Fatalf("Reserve(3) = %v; tagged interfaces %d, want 3 (the repeats deleted)", ips, len(got))
	}
	for _, ip := range ips {
		if _, ok := got[ip]; !ok {
			t.Errorf("Reserve returned %s, no tagged interface has it: %v", ip, got)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ips)))) != 3 {
		t.Errorf("Reserve(3) = %v: an address twice", ips)
	}
	r.Release(ips...)

	r.ec2 = &repeatIP{RolesEC2API: ec, times: 1000}
	if ips, err := r.Reserve(ctx, 2); err == nil || !strings.Contains(err.Error(), "already reserved") {
		t.Fatalf("Reserve on a subnet repeating one address = %v, %v", ips, err)
	}
	if left := enis(t, ec, "repeats"); len(left) != 0 {
		t.Errorf("the failed Reserve left interfaces: %v", left)
	}
}

// TestRoleUserDataRuns runs the user data with its system paths moved
// into a temporary directory and curl and systemctl faked: it installs
// the binary, creates the data directory, and the start script runs tide
// with exactly the role's arguments, however they are quoted.
func TestRoleUserDataRuns(t *testing.T) {
	f := newFakeEnv(t)
	dataDir := filepath.Join(f.dir, "data dir")
	args := []string{"log", "serve", "--role", "10.0.0.5:5057", "--deployment-json", `{"a": "it's $HOME \"x\"", "b": [1]}`, "--data-dir", dataDir, "--listen", "0.0.0.0:5057"}
	ud, err := RoleUserData(RoleUserDataOptions{BinaryURL: "https://example.com/tide", BinaryPath: f.bin, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	bashSyntax(t, "role user data", ud)
	ud = strings.ReplaceAll(ud, "/etc/systemd/system/", f.dir+"/")
	if out, err := run(t, f.env, f.dir, ud); err != nil {
		t.Fatalf("user data: %v\n%s", err, out)
	}
	if st, err := os.Stat(dataDir); err != nil || !st.IsDir() {
		t.Errorf("data dir %s not created: %v", dataDir, err)
	}
	unit, err := os.ReadFile(filepath.Join(f.dir, "tide-log.service"))
	start := filepath.Join(filepath.Dir(f.bin), "tide-log-start")
	if err != nil || !strings.Contains(string(unit), "ExecStart="+start+"\n") {
		t.Fatalf("unit %q (%v), want ExecStart=%s", unit, err, start)
	}
	sys, _ := os.ReadFile(filepath.Join(f.dir, "systemctl.log"))
	if !strings.Contains(string(sys), "enable --now tide-log.service") {
		t.Errorf("systemctl calls %q", sys)
	}
	if out, err := run(t, f.env, f.dir, "exec "+start+"\n"); err != nil {
		t.Fatalf("start script: %v\n%s", err, out)
	}
	calls := f.calls(t)
	if len(calls) != 1 || !slices.Equal(calls[0], args) {
		t.Errorf("tide ran with %q, want %q", calls, args)
	}

	if _, err := RoleUserData(RoleUserDataOptions{Args: []string{"--deployment-json", strings.Repeat("x", maxUserData)}}); err == nil {
		t.Error("user data over 16 KiB accepted")
	}
}

// TestLogControlOnEC2 scales the batchers of a real log (running in this
// process) out to 2 and back to 1 through cluster.ProvisionedRoles over
// Roles and moto, as tide log up --provisioner aws does.
//
// Exercised: the new instance's interface, whose IP the log's
// configuration takes as the batcher's address; the instance launched on
// it with user data that runs tide log serve joining through a live
// member; the reconfigurations that add and remove it; the instance's
// termination and the interface's deletion once it is out. Not exercised:
// an instance actually booting (moto runs nothing, so the health check is
// replaced here and the new batcher never serves). The subnet is on
// 127.88.1.0/24, loopback addresses where nothing listens, so the log's
// messages to the batcher that never runs are refused at once.
func TestLogControlOnEC2(t *testing.T) {
	ctx := rolesCtx(t)
	r, ec := motoRoles(t, "127.88.1.0/24", "logctl")
	shape := node.DefaultShape
	shape.TickMillis = 10
	d, stop, err := node.RunInProcess(ctx, shape, t.TempDir(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var checked []string
	host := &cluster.ProvisionedRoles{C: r, Bind: "0.0.0.0", Healthy: func(_ context.Context, addr string) error {
		checked = append(checked, addr)
		return nil
	}}
	ctl := cluster.NewLogControl(host, d, "")
	var out strings.Builder
	if err := ctl.Scale(ctx, "batchers", 2, &out); err != nil {
		t.Fatalf("scale batchers to 2: %v\n%s", err, out.String())
	}
	cur, err := ctl.Current()
	if err != nil {
		t.Fatal(err)
	}
	if len(cur.Log.Batchers) != 2 {
		t.Fatalf("batchers after scaling out: %v", cur.Log.Batchers)
	}
	added := cur.Log.Batchers[1]
	ip, port, _ := net.SplitHostPort(added)
	ni, ok := enis(t, ec, "logctl")[ip]
	if !ok || port != "5057" || !slices.Equal(checked, []string{ip + ":5058"}) {
		t.Fatalf("added batcher %s: no interface with its IP, or health checked %v", added, checked)
	}
	if ni.Attachment == nil {
		t.Fatalf("interface %s is attached to no instance", sdkaws.ToString(ni.NetworkInterfaceId))
	}
	id := sdkaws.ToString(ni.Attachment.InstanceId)
	ud := userDataOf(t, ec, id)
	var join string
	for _, h := range d.HTTPMap() {
		if strings.Contains(ud, "'--join' '"+h+"'") {
			join = h
		}
	}
	for _, want := range []string{"'log' 'serve' '--role' '" + added + "'", "'--kind' 'batcher'", "'--listen' '0.0.0.0:5057'", "'--http-addr' '0.0.0.0:5058'"} {
		if !strings.Contains(ud, want) {
			t.Errorf("user data lacks %s:\n%s", want, ud)
		}
	}
	if join == "" {
		t.Errorf("user data joins through no member of the log:\n%s", ud)
	}

	if err := ctl.Scale(ctx, "batchers", 1, &out); err != nil {
		t.Fatalf("scale batchers to 1: %v\n%s", err, out.String())
	}
	cur, err = ctl.Current()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(cur.Log.Batchers, added) || len(cur.Log.Batchers) != 1 {
		t.Errorf("batchers after scaling in: %v", cur.Log.Batchers)
	}
	if st := ec2View(t, ec, id)[id].State; st == nil || st.Name != ec2types.InstanceStateNameTerminated {
		t.Errorf("instance %s state %+v after scaling in", id, st)
	}
	if left := enis(t, ec, "logctl"); len(left) != 0 {
		t.Errorf("interfaces left after scaling in: %v", left)
	}
}

// TestUnhealthyRoleRemoved: a role whose instance never answers fails to
// start with the cause; the instance is terminated and its interface
// deleted.
func TestUnhealthyRoleRemoved(t *testing.T) {
	ctx := rolesCtx(t)
	r, ec := motoRoles(t, "10.79.0.0/24", "unhealthy")
	host := &cluster.ProvisionedRoles{C: r, Bind: "0.0.0.0", Healthy: func(context.Context, string) error { return errors.New("no answer from 10.79.0.4:5058") }}
	roles, https, err := host.Addrs(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	ni, ok := enis(t, ec, "unhealthy")[strings.TrimSuffix(roles[0], ":5057")]
	if !ok {
		t.Fatal("Addrs made no interface")
	}
	_, err = host.Start(ctx, cluster.RoleSpec{Kind: "proxy", Addr: roles[0], HTTP: https[0], Join: "10.0.0.1:5058"})
	if err == nil || !strings.Contains(err.Error(), "no answer") || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("Start of a role that never answers: %v", err)
	}
	if left := enis(t, ec, "unhealthy"); len(left) != 0 {
		t.Errorf("the role that never answered left its interface %v", left)
	}
	out, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: sdkaws.String("tag:" + LogClusterTag), Values: []string{"unhealthy"}}}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, res := range out.Reservations {
		for _, in := range res.Instances {
			n++
			if in.State == nil || in.State.Name != ec2types.InstanceStateNameTerminated {
				t.Errorf("instance %s of the role that never answered is %+v", sdkaws.ToString(in.InstanceId), in.State)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d instances launched, want 1; interface was %s", n, sdkaws.ToString(ni.NetworkInterfaceId))
	}
}

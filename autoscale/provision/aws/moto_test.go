package aws

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// syncBuffer is a bytes.Buffer safe for a child process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The moto_server the tests share (each test uses its own groups), started
// by the first test that needs it and stopped by TestMain.
var moto struct {
	once sync.Once
	url  string
	err  string // why it is not there
	skip bool
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if moto.cmd != nil {
		syscall.Kill(-moto.cmd.Process.Pid, syscall.SIGKILL)
		<-moto.done
	}
	os.Exit(code)
}

// startMoto returns the URL of the tests' moto_server, starting it on a
// free port the first time. It is stopped when the tests end; should the
// test binary die first, the kernel kills it (Pdeathsig).
func startMoto(t *testing.T) string {
	t.Helper()
	moto.once.Do(launchMoto)
	if moto.skip {
		t.Skip(moto.err)
	}
	if moto.err != "" {
		t.Fatal(moto.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("moto_server output:\n%s", tail(moto.out.String(), 4000))
		}
	})
	return moto.url
}

func launchMoto() {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		moto.skip = true
		moto.err = "moto_server is not installed (pip install 'moto[server]'); the EC2 Auto Scaling tests run against it"
		return
	}
	// Port 0: moto_server binds a free port and says which.
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", "0")
	cmd.Stdout, cmd.Stderr = &moto.out, &moto.out
	// Its own process group, killed as a whole; and killed with the test
	// binary should that die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		moto.err = fmt.Sprintf("start moto_server: %v", err)
		return
	}
	moto.cmd = cmd
	moto.done = make(chan struct{})
	go func() { cmd.Wait(); close(moto.done) }()
	running := regexp.MustCompile(`Running on (http://127\.0\.0\.1:[0-9]+)`)
	deadline := time.Now().Add(90 * time.Second)
	for {
		if m := running.FindStringSubmatch(moto.out.String()); m != nil {
			resp, err := http.Get(m[1] + "/moto-api/")
			if err == nil {
				resp.Body.Close()
				moto.url = m[1]
				return
			}
		}
		select {
		case <-moto.done:
			moto.err = fmt.Sprintf("moto_server exited: %s", moto.out.String())
			return
		default:
		}
		if time.Now().After(deadline) {
			moto.err = fmt.Sprintf("moto_server did not say where it listens, or answer there, within 90s:\n%s", moto.out.String())
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// motoClients are SDK clients for the moto server at url, with static
// credentials and region us-east-1.
func motoClients(t *testing.T, url string) (*autoscaling.Client, *ec2.Client) {
	t.Helper()
	c, err := NewClients(context.Background(), ClientOptions{
		Region:      "us-east-1",
		EndpointURL: url,
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c.AutoScaling.(*autoscaling.Client), c.EC2.(*ec2.Client)
}

// motoImage is an AMI moto knows.
func motoImage(t *testing.T, ec *ec2.Client) string {
	t.Helper()
	out, err := ec.DescribeImages(context.Background(), &ec2.DescribeImagesInput{Owners: []string{"amazon"}})
	if err != nil {
		t.Fatalf("describe images: %v", err)
	}
	if len(out.Images) == 0 {
		t.Fatal("moto has no amazon images")
	}
	return sdkaws.ToString(out.Images[0].ImageId)
}

// groupView is the group as the test sees it directly through the API.
type groupView struct {
	Desired, Min, Max int32
	States            map[string]string // instance ID -> lifecycle state
}

func viewGroup(t *testing.T, as *autoscaling.Client, name string) groupView {
	t.Helper()
	out, err := as.DescribeAutoScalingGroups(context.Background(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AutoScalingGroups) != 1 {
		t.Fatalf("describe group %s: %d groups", name, len(out.AutoScalingGroups))
	}
	g := out.AutoScalingGroups[0]
	v := groupView{Desired: *g.DesiredCapacity, Min: *g.MinSize, Max: *g.MaxSize, States: map[string]string{}}
	for _, in := range g.Instances {
		v.States[*in.InstanceId] = string(in.LifecycleState)
	}
	return v
}

func (v groupView) inService() []string {
	var ids []string
	for id, s := range v.States {
		if s == "InService" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// ec2View returns the EC2 instances with these IDs by ID.
func ec2View(t *testing.T, ec *ec2.Client, ids ...string) map[string]ec2types.Instance {
	t.Helper()
	out, err := ec.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]ec2types.Instance{}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			m[*in.InstanceId] = in
		}
	}
	return m
}

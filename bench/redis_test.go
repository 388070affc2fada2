package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestStartRedis: startRedis returns once its own redis-server accepts
// connections on the port it returns, and a second one gets another port.
func TestStartRedis(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed (make deps installs it)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	ping := func(port int) string {
		c, err := net.DialTimeout("tcp", fmt.Sprint("127.0.0.1:", port), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, "*1\r\n$4\r\nPING\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line)
	}
	p1, c1, err := startRedis(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c1.Process.Kill(); c1.Wait() }()
	p2, c2, err := startRedis(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c2.Process.Kill(); c2.Wait() }()
	if p1 == p2 {
		t.Fatalf("two redis-servers on port %d", p1)
	}
	for _, p := range []int{p1, p2} {
		if got := ping(p); got != "+PONG" {
			t.Errorf("PING on port %d: %q", p, got)
		}
	}
}

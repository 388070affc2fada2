package bench

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestProcCPU(t *testing.T) {
	self := []int{os.Getpid()}
	before, err := ProcCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the kernel's count moves by 50 ms (it counts in
	// ticks), or give up after a generous deadline.
	x := 0
	for deadline := time.Now().Add(30 * time.Second); ; {
		for i := range 1 << 20 {
			x += i * i
		}
		now, err := ProcCPU(self)
		if err != nil {
			t.Fatal(err)
		}
		if now-before >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed at %v, from %v, while spinning (%d)", now, before, x)
		}
	}
	if _, err := ProcCPU([]int{1 << 30}); err == nil {
		t.Error("no error for a process that does not exist")
	}
}

func TestServeNullRESP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ServeNullRESP(ctx, ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A pipeline sent a byte at a time: each command is answered once it
	// is whole, and in order.
	pipeline := "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\r\nl\r\n" + // a value holding CRLF
		"*2\r\n$3\r\nget\r\n$1\r\nk\r\n" +
		"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n"
	for i := range len(pipeline) {
		if _, err := c.Write([]byte{pipeline[i]}); err != nil {
			t.Fatal(err)
		}
	}
	want := "+OK\r\n$-1\r\n*0\r\n"
	got := make([]byte, len(want))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(bufio.NewReader(c), got); err != nil || string(got) != want {
		t.Fatalf("replies %q, %v; want %q", got, err, want)
	}
	// Malformed input closes the connection instead of hanging or
	// answering garbage.
	for _, bad := range []string{"*x\r\n", "*1\r\n$-5\r\n", "*1\r\n:3\r\n", "PING\r\n"} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(bad))
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || len(b) != 0 {
			t.Errorf("%q: read %q, %v; want the connection closed", strings.TrimSpace(bad), b, err)
		}
	}
}

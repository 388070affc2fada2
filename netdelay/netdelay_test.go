package netdelay

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// echo serves a line echo on a fresh port.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// Bytes arrive intact and in order, each no earlier than the delay (the
// test asserts a lower bound the proxy guarantees, never an upper one).
func TestProxyDelaysInOrder(t *testing.T) {
	p := &Proxy{Target: echo(t), Delay: 40 * time.Millisecond, ReverseDelay: 10 * time.Millisecond}
	addr, err := p.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for i := range 4 {
		line := bytes.Repeat([]byte{byte('a' + i)}, 1+i*20000)
		line = append(line, '\n')
		start := time.Now()
		if _, err := c.Write(line); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < 50*time.Millisecond {
			t.Fatalf("round trip %d took %v, less than the 50ms of delay", i, el)
		}
		if !bytes.Equal(got, line) {
			t.Fatalf("line %d: got %d bytes, want %d", i, len(got), len(line))
		}
	}
	// A burst: everything comes back, in order.
	var burst []byte
	for i := range 2000 {
		burst = append(burst, []byte{byte(i), byte(i >> 8), '\n'}...)
	}
	go c.Write(burst)
	got := make([]byte, len(burst))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, burst) {
		t.Fatal("burst came back altered or out of order")
	}
}

// Closing the client's write side reaches the target after the delay, and
// the target's close comes back: connections end cleanly.
func TestProxyHalfClose(t *testing.T) {
	p := &Proxy{Target: echo(t), Delay: 5 * time.Millisecond}
	addr, err := p.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("bye"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "bye" {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestProxyUnreachableTargetClosesClient(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	p := &Proxy{Target: dead}
	addr, err := p.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read from a proxy to a dead target: %v, want EOF", err)
	}
}

func TestProxyRejectsBadConfig(t *testing.T) {
	if _, err := (&Proxy{}).Listen("127.0.0.1:0"); err == nil {
		t.Fatal("no target accepted")
	}
	if _, err := (&Proxy{Target: "x:1", Delay: -1}).Listen("127.0.0.1:0"); err == nil {
		t.Fatal("negative delay accepted")
	}
}

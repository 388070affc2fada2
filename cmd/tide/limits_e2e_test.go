package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tide/cluster"
)

// TestHTTPSlowClients runs a node with a small connection cap and a short
// header timeout: a slow-loris client trickling header bytes is cut off by
// the timeout while other clients are served meanwhile; a flood of idle
// connections filling the cap makes the next connection get a 503 that
// says why, and the flood does not keep a well-behaved client out for long:
// idle connections are cut too, and it gets in.
func TestHTTPSlowClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	const maxConns = 16
	local := &cluster.Local{Binary: tideBin, Dir: filepath.Join(dir, "nodes")}
	defer local.StopAll(5 * time.Second)
	p, err := local.Launch(ctx, cluster.NodeSpec{Name: "n1", ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Replicas: 1,
		Extra: []string{"--max-conns", fmt.Sprint(maxConns), "--http-header-timeout", "2s"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := p.Spec.HTTPAddr
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	healthy := func() error {
		resp, err := hc.Get("http://" + addr + "/healthz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
	if err := healthy(); err != nil {
		t.Fatal(err)
	}

	// Slow loris: a request line, then one header byte every 100 ms.
	loris, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer loris.Close()
	if _, err := loris.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	var cut atomic.Bool
	go func() {
		for i := 0; !cut.Load(); i++ {
			if _, err := loris.Write([]byte{"X-Slow: abcdefgh"[i%16]}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	lorisDone := make(chan error, 1)
	go func() {
		// The server cuts the connection: EOF or a reset, and no
		// response to a request it never finished reading.
		b, err := io.ReadAll(loris)
		if err == nil && len(b) > 0 {
			err = fmt.Errorf("answered %q", b)
		}
		cut.Store(true)
		lorisDone <- err
	}()
	served := 0
	waitFor(t, "the slow-loris connection to be cut off", time.Minute, func() error {
		select {
		case err := <-lorisDone:
			if err != nil && strings.HasPrefix(err.Error(), "answered") {
				t.Fatalf("slow loris: %v", err)
			}
			return nil
		default:
		}
		if err := healthy(); err != nil {
			t.Fatalf("a client while the slow loris trickles: %v", err)
		}
		served++
		return fmt.Errorf("still open; %d other requests served meanwhile", served)
	})
	if served == 0 {
		t.Logf("the slow loris was cut before another request was made")
	}

	// Flood: maxConns idle connections, which send nothing.
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range maxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}
	// One more is refused, in words, while the flood holds the cap.
	refused := false
	for !refused {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			t.Fatalf("a connection over the cap: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		switch {
		case resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "too many connections"):
			refused = true
		case resp.StatusCode == http.StatusOK:
			// Accepted before the flood's last connections were: the
			// flood has cut an earlier one by now, or will. Flood again.
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			flood = append(flood, c)
		default:
			t.Fatalf("a connection over the cap: %s %q", resp.Status, body)
		}
	}
	// The flood's connections are cut by the header timeout, and a
	// well-behaved client, retrying on 503, gets served.
	waitFor(t, "a well-behaved client to be served despite the flood", time.Minute, healthy)
	for i, c := range flood {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		n, err := c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); err == nil || ok && ne.Timeout() {
			t.Fatalf("flood connection %d: read %d bytes, %v; want it closed by the node", i, n, err)
		}
	}
}

package transport

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

func TestFramesArriveInOrder(t *testing.T) {
	a, b := New(), New()
	defer a.Close()
	defer b.Close()
	var mu sync.Mutex
	var got []string
	addr, err := b.Listen("127.0.0.1:0", func(f []byte) {
		mu.Lock()
		got = append(got, string(f))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	for i := range n {
		a.Send(addr, []byte(fmt.Sprint(i)))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d frames", k, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, s := range got {
		if s != fmt.Sprint(i) {
			t.Fatalf("frame %d is %q", i, s)
		}
	}
}

func TestOversizedFrameClosesConnection(t *testing.T) {
	b := New()
	defer b.Close()
	called := false
	addr, _ := b.Listen("127.0.0.1:0", func([]byte) { called = true })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrame+1)
	c.Write(hdr[:])
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err == nil {
		t.Fatal("connection stayed open after an oversized frame")
	}
	if called {
		t.Fatal("handler called for an oversized frame")
	}
}

func TestUnreachablePeerDoesNotBlock(t *testing.T) {
	a := New()
	a.QueueLen = 8
	defer a.Close()
	done := make(chan struct{})
	go func() {
		for range 1000 {
			a.Send("127.0.0.1:1", []byte("x"))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Send blocked on an unreachable peer")
	}
}

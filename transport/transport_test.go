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

// TestBatchesKeepFramesWhole sends frames of many sizes, some larger
// than a batch's byte bound and than the read buffer, in batches of
// varied length. Every frame must arrive once, whole and in order; a
// batch must hold more than one frame when a peer sent several in one
// write; and the frames handed over must stay intact after the handler
// returns (OwnFrames).
func TestBatchesKeepFramesWhole(t *testing.T) {
	a, b := New(), &Transport{OwnFrames: true}
	defer a.Close()
	defer b.Close()
	var mu sync.Mutex
	var got [][]byte
	multi := 0
	addr, err := b.ListenBatch("127.0.0.1:0", func(frames [][]byte) {
		mu.Lock()
		defer mu.Unlock()
		if len(frames) > 1 {
			multi++
		}
		got = append(got, frames...)
	})
	if err != nil {
		t.Fatal(err)
	}
	frame := func(i int) []byte {
		n := 8 + (i*7919)%3000
		if i%97 == 0 {
			n = 300 << 10 // past the read buffer
		}
		f := make([]byte, n)
		binary.BigEndian.PutUint64(f, uint64(i))
		for j := 8; j < n; j++ {
			f[j] = byte(i + j)
		}
		return f
	}
	const n = 5000
	for i := 0; i < n; {
		k := min(1+i%40, n-i)
		var fs [][]byte
		for j := range k {
			fs = append(fs, frame(i+j))
		}
		a.SendBatch(addr, fs)
		i += k
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d frames", k, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Fatalf("received %d frames, sent %d", len(got), n)
	}
	for i, f := range got {
		want := frame(i)
		if string(f) != string(want) {
			t.Fatalf("frame %d: %d bytes, starting %x; want %d bytes", i, len(f), f[:min(8, len(f))], len(want))
		}
	}
	if multi == 0 {
		t.Fatalf("no batch held more than one frame")
	}
}

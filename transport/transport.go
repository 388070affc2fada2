// Package transport carries node-to-node messages over TCP: one persistent
// connection per destination, length-prefixed frames, and write coalescing
// (frames queued while a write is in progress go out in one system call).
//
// Delivery is best effort, as the protocols above expect: a frame to an
// unreachable peer, or one that finds its peer's queue full, is dropped and
// the protocol's own retransmission covers it.
package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"tide/tlsconf"
)

// MaxFrame bounds one frame.
const MaxFrame = 64 << 20

// Handler receives each inbound frame. It must not keep the slice. It runs
// on the goroutine reading the frame's connection (frame is reused for the
// next one unless Transport.OwnFrames is set): while it blocks, that
// connection (one lane of one peer) is not read, and TCP flow control
// slows its sender down.
type Handler func(frame []byte)

// BatchHandler receives the frames of a connection that arrived together:
// those read in one go, up to maxBatchFrames. The slice is reused after
// the call returns; the frames are the handler's to keep only with
// OwnFrames.
type BatchHandler func(frames [][]byte)

// maxBatchFrames bounds the frames of a batch. Its bytes are bounded by
// the read buffer's 256 KiB, the first frame aside.
const maxBatchFrames = 1024

// Stats counts a transport's traffic.
type Stats struct {
	FramesSent, FramesReceived, FramesDropped, BytesSent atomic.Int64
}

// Transport sends frames to addresses and serves the addresses it listens
// on.
type Transport struct {
	// QueueLen is each peer's send queue, in Send or SendBatch calls. Default 65536.
	QueueLen int
	// OwnFrames hands each inbound frame to the handler in a buffer of
	// its own, which the handler may keep, instead of one buffer reused
	// for every frame of a connection. A handler that decodes in place
	// then copies nothing.
	OwnFrames bool
	// Alloc, when set with OwnFrames, gives the buffer of each inbound
	// frame of n bytes (it must return a slice of length n), so that a
	// handler can recycle the buffers of frames it is done with.
	Alloc func(n int) []byte
	// TLS, if set, makes every connection mutual TLS: the listeners
	// accept only peers with a certificate of the cluster's CA, and
	// connections to peers present this process's certificate.
	TLS   *tlsconf.Config
	Log   *slog.Logger
	Stats Stats

	dialErr atomic.Pointer[error]

	mu        sync.Mutex
	peers     map[peerKey]*peer
	listeners []net.Listener
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

// New returns a transport with default settings.
func New() *Transport { return &Transport{} }

// Listen serves addr, passing every inbound frame to h. It returns the
// bound address (useful with port 0).
func (t *Transport) Listen(addr string, h Handler) (string, error) {
	return t.ListenBatch(addr, func(frames [][]byte) {
		for _, f := range frames {
			h(f)
		}
	})
}

// ListenBatch is Listen with a handler of several frames at a time: with
// OwnFrames, every frame of a connection already read when one arrives
// is handed over with it, so that what a peer sent in one write is
// handled as one. Without OwnFrames, frames come one at a time.
func (t *Transport) ListenBatch(addr string, h BatchHandler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen %s: %w", addr, err)
	}
	if err := t.ServeBatch(ln, h); err != nil {
		return "", err
	}
	return ln.Addr().String(), nil
}

// ServeBatch is ListenBatch on a listener the caller opened (and the
// transport closes): a caller that must know its address before it can
// build the handler keeps the port bound in between, where closing it and
// listening again would let another process take it.
func (t *Transport) ServeBatch(ln net.Listener, h BatchHandler) error {
	ln = t.TLS.Listen(ln)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		ln.Close()
		return errors.New("transport closed")
	}
	t.listeners = append(t.listeners, ln)
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.mu.Lock()
			if t.closed {
				t.mu.Unlock()
				c.Close()
				return
			}
			if t.conns == nil {
				t.conns = map[net.Conn]struct{}{}
			}
			t.conns[c] = struct{}{}
			t.wg.Add(1)
			t.mu.Unlock()
			go t.serve(c, h)
		}
	}()
	return nil
}

func (t *Transport) serve(c net.Conn, h BatchHandler) {
	defer t.wg.Done()
	defer func() {
		c.Close()
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
	}()
	r := bufio.NewReaderSize(c, 256<<10)
	var hdr [4]byte
	buf := make([]byte, 0, 4096)
	var frames [][]byte
	read := func(n uint32) bool {
		if n > MaxFrame {
			t.logf("transport: frame of %d bytes from %s exceeds %d; closing", n, c.RemoteAddr(), MaxFrame)
			return false
		}
		switch {
		case t.OwnFrames && t.Alloc != nil:
			buf = t.Alloc(int(n))
		case cap(buf) < int(n) || t.OwnFrames:
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return false
		}
		t.Stats.FramesReceived.Add(1)
		frames = append(frames, buf)
		return true
	}
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		if !read(binary.BigEndian.Uint32(hdr[:])) {
			return
		}
		// The frames read along with this one join it, as long as they
		// are whole in the buffer: waiting for more would hold those.
		for t.OwnFrames && len(frames) < maxBatchFrames && r.Buffered() >= 4 {
			p, _ := r.Peek(4)
			n := binary.BigEndian.Uint32(p)
			if r.Buffered() < 4+int(n) {
				break
			}
			r.Discard(4)
			if !read(n) {
				h(frames) // those read so far
				return
			}
		}
		h(frames)
		clear(frames)
		frames = frames[:0]
	}
}

func (t *Transport) logf(format string, args ...any) {
	if t.Log != nil {
		t.Log.Warn(fmt.Sprintf(format, args...))
	}
}

// Send queues frame for addr. It never blocks; a full queue drops the frame.
func (t *Transport) Send(addr string, frame []byte) {
	p := t.peer(addr, Foreground)
	if p == nil {
		return
	}
	select {
	case p.q <- [][]byte{frame}:
	default:
		t.Stats.FramesDropped.Add(1)
	}
}

// SendBatch queues frames for addr, in order, to leave together in as few
// writes as possible. Like Send it never blocks; a full queue drops them.
func (t *Transport) SendBatch(addr string, frames [][]byte) {
	t.SendBatchOn(Foreground, addr, frames)
}

// Lane is a connection class: each lane has a connection and a queue of
// its own to every peer, so that frames on one never wait behind frames
// on another. A receiver may apply backpressure to a lane (stop reading
// it while it catches up) without holding up the others.
type Lane uint8

const (
	// Foreground carries requests and their answers.
	Foreground Lane = iota
	// Bulk carries data moving between nodes in large frames.
	Bulk
)

// SendBatchOn queues frames to addr on lane l, to leave in order in one
// write when possible.
func (t *Transport) SendBatchOn(l Lane, addr string, frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	p := t.peer(addr, l)
	if p == nil {
		return
	}
	select {
	case p.q <- frames:
	default:
		t.Stats.FramesDropped.Add(int64(len(frames)))
	}
}

type peer struct {
	addr string
	q    chan [][]byte
	done chan struct{}
}

type peerKey struct {
	addr string
	lane Lane
}

func (t *Transport) peer(addr string, l Lane) *peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	key := peerKey{addr, l}
	if p, ok := t.peers[key]; ok {
		return p
	}
	if t.peers == nil {
		t.peers = map[peerKey]*peer{}
	}
	ql := t.QueueLen
	if ql == 0 {
		ql = 65536
	}
	p := &peer{addr: addr, q: make(chan [][]byte, ql), done: make(chan struct{})}
	t.peers[key] = p
	t.wg.Add(1)
	go t.writeLoop(p)
	return p
}

// writeLoop owns one peer's connection: it dials, writes every queued frame,
// and flushes only when the queue is empty, so a burst leaves in few
// writes. After a failure it redials with backoff, dropping what was queued
// meanwhile.
func (t *Transport) writeLoop(p *peer) {
	defer t.wg.Done()
	backoff := 10 * time.Millisecond
	var hdr [4]byte
	var lastLog time.Time
	for {
		c, err := t.dial(p.addr)
		if err != nil {
			t.dialErr.Store(&err)
			if t.TLS != nil && strings.Contains(err.Error(), "tls handshake") && time.Since(lastLog) > time.Minute {
				lastLog = time.Now() // a misconfigured peer, said once a minute
				t.logf("transport: %v", err)
			}
			// Drain what is queued: it would be stale by the time we connect.
			for drained := false; !drained; {
				select {
				case fs := <-p.q:
					t.Stats.FramesDropped.Add(int64(len(fs)))
				case <-p.done:
					return
				default:
					drained = true
				}
			}
			select {
			case <-time.After(backoff):
			case <-p.done:
				return
			}
			backoff = min(2*backoff, redialMax)
			continue
		}
		t.dialErr.Store(nil)
		backoff = 10 * time.Millisecond
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		w := bufio.NewWriterSize(c, 256<<10)
		ok := true
		for ok {
			var fs [][]byte
			select {
			case fs = <-p.q:
			case <-p.done:
				w.Flush()
				c.Close()
				return
			}
			yielded := false
		write:
			for {
				for _, f := range fs {
					binary.BigEndian.PutUint32(hdr[:], uint32(len(f)))
					if _, err := w.Write(hdr[:]); err != nil {
						ok = false
						break write
					}
					if _, err := w.Write(f); err != nil {
						ok = false
						break write
					}
					t.Stats.FramesSent.Add(1)
					t.Stats.BytesSent.Add(int64(len(f)) + 4)
				}
				select {
				case fs = <-p.q:
					continue
				default:
				}
				if !yielded {
					// Let the goroutines producing frames run once
					// before the write, so that a burst leaves in one.
					yielded = true
					runtime.Gosched()
					fs = nil
					continue
				}
				break
			}
			if ok && w.Flush() != nil {
				ok = false
			}
		}
		c.Close()
	}
}

// DialError is the error of the last failed connection attempt to any
// peer, nil once one succeeds after it: what a caller whose request went
// unanswered reports (a TLS handshake refused, say).
func (t *Transport) DialError() error {
	if e := t.dialErr.Load(); e != nil {
		return *e
	}
	return nil
}

// A connection to a peer that was cut off (a partition, a peer whose
// host vanished) keeps what it sent unacknowledged, and TCP resends it
// at doubling intervals: after a partition of 8 s, the next resend may
// come 5 s after the network healed, and every frame queued behind it
// waits as long. So a connection whose data has gone unacknowledged for
// unackedLimit is dropped (TCP_USER_TIMEOUT, on Linux), its frames with
// it as with any failed connection, and redialled; dials give up after
// dialTimeout and are retried at most redialMax apart, so a connection
// is back within about a second of the network.
//
// Only the transport's connections carry it. Given to every connection a
// node dials (Chord RPC, the nodes' HTTP clients), it stalled the chaos
// suite's autoscale scale-out: the new node was not seen by the node
// whose partition had just healed for 2 minutes, in 2 runs of 3, and
// reads went stale under the long transition that followed; with the
// transport alone, the scale-out took 7 s in both runs after.
const (
	unackedLimit = time.Second
	dialTimeout  = 500 * time.Millisecond
	redialMax    = 250 * time.Millisecond
)

func (t *Transport) dial(addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	if t.TLS == nil {
		c, err = net.DialTimeout("tcp", addr, dialTimeout)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err = t.TLS.Dial(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	if err := setUserTimeout(c, unackedLimit); err != nil {
		c.Close()
		return nil, fmt.Errorf("set TCP_USER_TIMEOUT on the connection to %s: %w", addr, err)
	}
	return c, nil
}

// rawConn is the socket under c (a TCP connection, or TLS over one); nil
// for any other kind.
func rawConn(c net.Conn) (syscall.RawConn, error) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return tc.SyscallConn()
	}
	return nil, nil
}

// Close stops listening, closes every connection and waits for the
// transport's goroutines.
func (t *Transport) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	for _, ln := range t.listeners {
		ln.Close()
	}
	for c := range t.conns {
		c.Close()
	}
	for _, p := range t.peers {
		close(p.done)
	}
	t.mu.Unlock()
	t.wg.Wait()
}

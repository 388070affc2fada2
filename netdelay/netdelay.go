// Package netdelay is a TCP proxy that adds latency: every byte it
// forwards is held for a fixed delay, in order, as on a long link. It puts
// regions on one machine: a Redis replica that reaches its primary through
// it replicates with that lag. Throughput is not limited; only latency is
// added, so a stream of writes arrives as a stream, each write late by the
// delay.
package netdelay

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// Proxy forwards each connection it accepts to Target.
type Proxy struct {
	// Target is where connections go: "host:port", or "unix:/path" for a
	// Unix socket.
	Target string
	// Delay holds the bytes the target sends before the client gets them.
	Delay time.Duration
	// ReverseDelay holds the bytes the client sends before the target gets
	// them.
	ReverseDelay time.Duration
	// Log receives connection errors at debug level; nil discards them.
	Log *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
	closed bool
}

// Listen starts accepting on addr ("127.0.0.1:0" picks a port) and returns
// the address it listens on. Connections are served until Close.
func (p *Proxy) Listen(addr string) (net.Addr, error) {
	if p.Target == "" {
		return nil, errors.New("netdelay: no target")
	}
	if p.Delay < 0 || p.ReverseDelay < 0 {
		return nil, fmt.Errorf("netdelay: negative delay %v/%v", p.Delay, p.ReverseDelay)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("netdelay: listen %s: %w", addr, err)
	}
	p.mu.Lock()
	p.ln, p.conns = ln, map[net.Conn]struct{}{}
	p.mu.Unlock()
	p.wg.Add(1)
	go p.accept(ln)
	return ln.Addr(), nil
}

// Close stops accepting, cuts every connection and waits for their
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	var err error
	if p.ln != nil {
		err = p.ln.Close()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) log() *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) dial() (net.Conn, error) {
	if path, ok := strings.CutPrefix(p.Target, "unix:"); ok {
		return net.DialTimeout("unix", path, 5*time.Second)
	}
	return net.DialTimeout("tcp", p.Target, 5*time.Second)
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	target, err := p.dial()
	if err != nil {
		p.log().Debug("netdelay: dial target", "target", p.Target, "err", err)
		client.Close()
		return
	}
	if !p.track(client, target) {
		client.Close()
		target.Close()
		return
	}
	defer p.untrack(client, target)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(client, target, p.Delay) }()
	go func() { defer wg.Done(); p.pump(target, client, p.ReverseDelay) }()
	wg.Wait()
}

type chunk struct {
	b   []byte
	at  time.Time
	eof bool
}

// pump copies src to dst, each chunk released delay after it was read.
// The queue between reader and writer is bounded: a slow dst slows the
// reads from src, as TCP would.
func (p *Proxy) pump(dst, src net.Conn, delay time.Duration) {
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{b: append([]byte(nil), buf[:n]...), at: time.Now().Add(delay)}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					p.log().Debug("netdelay: read", "err", err)
				}
				q <- chunk{eof: true, at: time.Now().Add(delay)}
				return
			}
		}
	}()
	for c := range q {
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		if c.eof {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			} else {
				dst.Close()
			}
			break
		}
		if _, err := dst.Write(c.b); err != nil {
			src.Close() // unblocks the reader
			dst.Close()
			break
		}
	}
	for range q { // let the reader finish
	}
}

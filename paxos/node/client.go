package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"tide/paxos"
	"tide/transport"
)

// Client submits commands to a tide log. It holds a pool of sessions, each
// a paxos.Client with its own id and at most one command in flight (the
// replicas' exactly-once table keeps one entry per session), so up to
// Sessions commands run at once.
type Client struct {
	d    Deployment
	tr   *transport.Transport
	addr string
	free chan *session
	// byID finds a reply's session; mu guards it (a session is retired
	// and replaced when its command times out). Each session's state
	// machine has a lock of its own: the clients' goroutines, the
	// transport's and the ticker touch different sessions at once.
	byID   map[uint64]*session
	mu     sync.RWMutex
	cancel context.CancelFunc
	done   chan struct{}
}

type session struct {
	mu     sync.Mutex // guards c and seq
	c      *paxos.Client
	seq    uint64
	result chan paxos.Completion
}

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("log client closed")

// ErrRefused is returned when the replicas refused a command without
// applying it (its session had expired); retrying it is safe.
var ErrRefused = errors.New("command refused")

// NewClient connects a client with the given number of sessions. host is
// the address the log's replicas reply to (a free port is picked); empty
// picks the address this machine reaches the roles from (ReplyHost).
func NewClient(d Deployment, host string, sessions int) (*Client, error) {
	if sessions <= 0 {
		sessions = 1
	}
	cfg := d.Log
	if d.Unreplicated != "" {
		cfg = unreplicatedConfig(d.Unreplicated)
	}
	if host == "" {
		host = ReplyHost(d.Roles()[0])
	}
	tr := newTransport(d.Certs)
	tr.OwnFrames = true // deliver decodes replies in place
	if d.TLS && tr.TLS == nil {
		return nil, ErrNeedTLS
	}
	if tr.TLS != nil {
		// The roles reply on a connection of their own, to host, and
		// check the client's certificate against it as they would a role's.
		if err := tr.TLS.Leaf().VerifyHostname(host); err != nil {
			return nil, fmt.Errorf("the log replies to this client at %s, which its certificate does not name (%v): issue it with --ip %s (tide cert node NAME --ip %s)", host, err, host, host)
		}
	}
	c := &Client{d: d, tr: tr, free: make(chan *session, sessions), byID: map[uint64]*session{},
		done: make(chan struct{})}
	addr, err := c.tr.Listen(net.JoinHostPort(host, "0"), c.deliver)
	if err != nil {
		return nil, err
	}
	c.addr = addr
	base := rand.Uint64() &^ 0xffff
	for i := range sessions {
		id := base | uint64(i+1)
		s := &session{c: paxos.NewClient(cfg, addr, id), result: make(chan paxos.Completion, 1)}
		c.byID[id] = s
		c.free <- s
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.loop(ctx, d.Tick())
	return c, nil
}

// unreplicatedConfig points clients at the baseline server as their only
// leader, with no batchers.
func unreplicatedConfig(addr string) paxos.Config {
	return paxos.Config{Leaders: []string{addr}, ProxyLeaders: []string{addr}, Replicas: []string{addr},
		Groups: []paxos.Group{{Acceptors: []string{addr}}}}
}

func (c *Client) deliver(frame []byte) {
	m, err := paxos.DecodeOwned(frame)
	if err != nil {
		return
	}
	id := m.Reply.Client
	if m.Kind == paxos.KindMaxSlotReply || m.Kind == paxos.KindMatchReply {
		id = m.Command.Client
	}
	c.mu.RLock()
	s := c.byID[id]
	if s == nil {
		switch m.Kind {
		case paxos.KindNotLeader, paxos.KindConfigReply:
			// News for every session: where the leader is, or a newer
			// configuration (asked for by one session, useful to all).
			for _, s := range c.byID {
				s.mu.Lock()
				s.c.Step(m)
				c.flush(s)
				s.mu.Unlock()
			}
		}
		c.mu.RUnlock()
		return
	}
	c.mu.RUnlock()
	s.mu.Lock()
	s.c.Step(m)
	c.flush(s)
	for _, done := range s.c.Completed() {
		if done.Seq == s.seq {
			s.result <- done
		}
	}
	s.mu.Unlock()
}

func (c *Client) flush(s *session) {
	msgs := s.c.Ready().Messages
	for i := range msgs {
		b, err := paxos.Encode(&msgs[i])
		if err == nil {
			c.tr.Send(msgs[i].To, b)
		}
	}
	s.c.Recycle(msgs)
}

func (c *Client) loop(ctx context.Context, tick time.Duration) {
	defer close(c.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.RLock()
		for _, s := range c.byID {
			s.mu.Lock()
			if s.c.Pending() > 0 {
				s.c.Tick()
				c.flush(s)
			}
			s.mu.Unlock()
		}
		c.mu.RUnlock()
	}
}

// Do runs one command and returns its result. mode chooses how a read
// (a get) is served; writes always go through the log.
func (c *Client) Do(ctx context.Context, op []byte, read bool, mode paxos.ReadMode) ([]byte, error) {
	var s *session
	select {
	case s = <-c.free:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, ErrClosed
	}
	defer func() { c.free <- s }()
	s.mu.Lock()
	if read {
		s.seq = s.c.Read(op, mode)
	} else {
		s.seq = s.c.Propose(op)
	}
	c.flush(s)
	s.mu.Unlock()
	select {
	case r := <-s.result:
		if r.Err != "" {
			return nil, fmt.Errorf("%w: %s", ErrRefused, r.Err)
		}
		return r.Result, nil
	case <-ctx.Done():
		// The command may still take effect; the session is retired so a
		// late reply cannot be mistaken for the next command's.
		s.mu.Lock()
		old, cfg := s.c.ID(), s.c.Config()
		s.mu.Unlock()
		c.mu.Lock()
		delete(c.byID, old)
		// The new session starts from the newest configuration the old
		// one knew: the deployment's may name roles long gone.
		id := rand.Uint64()
		s = &session{c: paxos.NewClient(cfg, c.addr, id), result: make(chan paxos.Completion, 1)}
		c.byID[id] = s
		c.mu.Unlock()
		if err := c.tr.DialError(); err != nil {
			return nil, fmt.Errorf("%w (the last connection to the log failed: %v)", ctx.Err(), err)
		}
		return nil, ctx.Err()
	case <-c.done:
		return nil, ErrClosed
	}
}

func (c *Client) kv(ctx context.Context, op paxos.KVOp, mode paxos.ReadMode) (paxos.KVResult, error) {
	b, err := c.Do(ctx, paxos.EncodeKV(op), op.Op == "get", mode)
	if err != nil {
		return paxos.KVResult{}, err
	}
	r, err := paxos.DecodeKVResult(b)
	if err == nil && r.Err != "" {
		err = fmt.Errorf("%s %q: %s", op.Op, op.Key, r.Err)
	}
	return r, err
}

// Put sets key to value.
func (c *Client) Put(ctx context.Context, key string, value []byte) error {
	_, err := c.kv(ctx, paxos.KVOp{Op: "put", Key: key, Value: value}, 0)
	return err
}

// Get reads key through the log or by quorum read.
func (c *Client) Get(ctx context.Context, key string, mode paxos.ReadMode) ([]byte, bool, error) {
	r, err := c.kv(ctx, paxos.KVOp{Op: "get", Key: key}, mode)
	return r.Value, r.Found, err
}

// Del deletes key and reports whether it existed.
func (c *Client) Del(ctx context.Context, key string) (bool, error) {
	r, err := c.kv(ctx, paxos.KVOp{Op: "del", Key: key}, 0)
	return r.OK, err
}

// CAS sets key to value if its current value is expect (nil: absent), and
// returns whether it did and the value before.
func (c *Client) CAS(ctx context.Context, key string, expect, value []byte) (bool, []byte, error) {
	r, err := c.kv(ctx, paxos.KVOp{Op: "cas", Key: key, Expect: expect, Value: value}, 0)
	return r.OK, r.Value, err
}

// Close stops the client.
func (c *Client) Close() {
	c.cancel()
	<-c.done
	c.tr.Close()
}

// HostOf returns the host part of an address, for choosing the interface a
// client listens on.
func HostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil || strings.TrimSpace(h) == "" {
		return "127.0.0.1"
	}
	return h
}

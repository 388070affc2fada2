package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"tide/chord"
	"tide/tlsconf"
)

// RemoteError is an error the remote node returned in a response.
type RemoteError struct {
	Method string
	Msg    string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("remote %s: %s", e.Method, e.Msg) }

// Client makes msgpack-rpc calls over one persistent connection per peer,
// multiplexed by msgid. It implements chord.Transport.
type Client struct {
	// Timeout bounds a call whose context has no deadline. Default 2s.
	Timeout time.Duration
	// OnCall, if set, is told of every request sent.
	OnCall func(method string)
	// TLS, if set, makes every connection mutual TLS with this
	// process's certificate (nil: plain TCP, as the seed's clients).
	TLS *tlsconf.Config

	mu     sync.Mutex
	conns  map[string]*clientConn
	closed bool
}

// NewClient returns a client with default settings.
func NewClient() *Client { return &Client{} }

type result struct {
	err any
	val any
}

type clientConn struct {
	c       net.Conn
	wmu     sync.Mutex
	enc     *msgpack.Encoder
	mu      sync.Mutex
	nextID  uint32
	pending map[uint32]chan result
	err     error
}

// Close closes every connection.
func (cl *Client) Close() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.closed = true
	for _, cc := range cl.conns {
		cc.c.Close()
	}
	cl.conns = nil
}

func (cl *Client) conn(ctx context.Context, addr string) (*clientConn, error) {
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return nil, errors.New("chord rpc client closed")
	}
	if cc, ok := cl.conns[addr]; ok {
		cl.mu.Unlock()
		return cc, nil
	}
	cl.mu.Unlock()
	var c net.Conn
	var err error
	if cl.TLS != nil {
		c, err = cl.TLS.Dial(ctx, "tcp", addr)
	} else {
		d := net.Dialer{Timeout: time.Second}
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	cc := &clientConn{c: c, enc: msgpack.NewEncoder(c), pending: map[uint32]chan result{}}
	cl.mu.Lock()
	if cl.conns == nil {
		cl.conns = map[string]*clientConn{}
	}
	if old, ok := cl.conns[addr]; ok {
		cl.mu.Unlock()
		c.Close()
		return old, nil
	}
	cl.conns[addr] = cc
	cl.mu.Unlock()
	go cl.readLoop(addr, cc)
	return cc, nil
}

func (cl *Client) readLoop(addr string, cc *clientConn) {
	br := bufio.NewReader(cc.c)
	var err error
	for {
		var v any
		if v, err = readMessage(br); err != nil {
			break
		}
		m, perr := parseMessage(v)
		if perr != nil || m.Type != typeResponse {
			err = fmt.Errorf("%w: unexpected message from %s", ErrBadMessage, addr)
			break
		}
		cc.mu.Lock()
		ch := cc.pending[m.ID]
		delete(cc.pending, m.ID)
		cc.mu.Unlock()
		if ch != nil {
			ch <- result{m.Error, m.Result}
		}
	}
	cl.drop(addr, cc, err)
}

func (cl *Client) drop(addr string, cc *clientConn, err error) {
	cc.c.Close()
	cl.mu.Lock()
	if cl.conns[addr] == cc {
		delete(cl.conns, addr)
	}
	cl.mu.Unlock()
	cc.mu.Lock()
	cc.err = err
	for id, ch := range cc.pending {
		close(ch)
		delete(cc.pending, id)
	}
	cc.mu.Unlock()
}

// Call invokes method on the node at addr and returns its result.
func (cl *Client) Call(ctx context.Context, addr, method string, params ...any) (any, error) {
	if _, ok := ctx.Deadline(); !ok {
		t := cl.Timeout
		if t == 0 {
			t = 2 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	if cl.OnCall != nil {
		cl.OnCall(method)
	}
	cc, err := cl.conn(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, addr, err)
	}
	ch := make(chan result, 1)
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return nil, fmt.Errorf("%s %s: %w", method, addr, cc.err)
	}
	cc.nextID++
	id := cc.nextID
	cc.pending[id] = ch
	cc.mu.Unlock()
	if params == nil {
		params = []any{}
	}
	cc.wmu.Lock()
	dl, _ := ctx.Deadline()
	cc.c.SetWriteDeadline(dl)
	err = cc.enc.Encode([]any{typeRequest, id, method, params})
	cc.wmu.Unlock()
	if err != nil {
		cl.drop(addr, cc, err)
		return nil, fmt.Errorf("%s %s: %w", method, addr, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%s %s: connection lost", method, addr)
		}
		if r.err != nil {
			msg, _ := asString(r.err)
			if msg == "" {
				msg = fmt.Sprint(r.err)
			}
			return nil, &RemoteError{Method: method, Msg: msg}
		}
		return r.val, nil
	case <-ctx.Done():
		cc.mu.Lock()
		delete(cc.pending, id)
		cc.mu.Unlock()
		return nil, fmt.Errorf("%s %s: %w", method, addr, ctx.Err())
	}
}

// CallRef calls a method that returns a node.
func (cl *Client) CallRef(ctx context.Context, addr, method string, params ...any) (chord.Ref, error) {
	v, err := cl.Call(ctx, addr, method, params...)
	if err != nil {
		return chord.Ref{}, err
	}
	return DecodeRef(v)
}

// FindSuccessor implements chord.Transport.
func (cl *Client) FindSuccessor(ctx context.Context, to chord.Ref, id chord.ID) (chord.Ref, error) {
	return cl.CallRef(ctx, to.Addr(), "find_successor", uint32(id))
}

// State implements chord.Transport.
func (cl *Client) State(ctx context.Context, to, from chord.Ref) (chord.Ref, []chord.Ref, error) {
	v, err := cl.Call(ctx, to.Addr(), "get_state", EncodeRef(from))
	if err != nil {
		return chord.Ref{}, nil, err
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 2 {
		return chord.Ref{}, nil, fmt.Errorf("%w: get_state reply is not [pred, successors]", ErrBadMessage)
	}
	pred, err := DecodeRef(arr[0])
	if err != nil {
		return chord.Ref{}, nil, err
	}
	succs, err := DecodeRefs(arr[1])
	return pred, succs, err
}

// Notify implements chord.Transport.
func (cl *Client) Notify(ctx context.Context, to, self chord.Ref) error {
	_, err := cl.Call(ctx, to.Addr(), "notify", EncodeRef(self))
	return err
}

// Ping implements chord.Transport.
func (cl *Client) Ping(ctx context.Context, to chord.Ref) error {
	_, err := cl.Call(ctx, to.Addr(), "ping")
	return err
}

// Leave implements chord.Transport.
func (cl *Client) Leave(ctx context.Context, to, leaver, pred chord.Ref, succs []chord.Ref) error {
	_, err := cl.Call(ctx, to.Addr(), "leave", EncodeRef(leaver), EncodeRef(pred), encodeRefs(succs))
	return err
}

// Claim implements chord.Transport. A node too old to know claim holds
// nothing, and is taken to have granted it.
func (cl *Client) Claim(ctx context.Context, to, self chord.Ref) (chord.Ref, error) {
	v, err := cl.Call(ctx, to.Addr(), "claim", EncodeRef(self))
	var re *RemoteError
	if errors.As(err, &re) && re.Msg == fmt.Sprintf("unknown method %q", "claim") {
		return chord.Ref{}, nil
	}
	if err != nil {
		return chord.Ref{}, err
	}
	return DecodeRef(v)
}

// Successors asks a node for its successor list.
func (cl *Client) Successors(ctx context.Context, addr string) ([]chord.Ref, error) {
	v, err := cl.Call(ctx, addr, "get_successors")
	if err != nil {
		return nil, err
	}
	return DecodeRefs(v)
}

// HTTPAddr asks a node for its file service address.
func (cl *Client) HTTPAddr(ctx context.Context, addr string) (string, error) {
	v, err := cl.Call(ctx, addr, "get_http_addr")
	if err != nil {
		return "", err
	}
	s, ok := asString(v)
	if !ok || s == "" {
		return "", fmt.Errorf("%w: get_http_addr reply is not an address", ErrBadMessage)
	}
	return s, nil
}

// Addrs asks a node for its service addresses by name.
func (cl *Client) Addrs(ctx context.Context, addr string) (map[string]string, error) {
	v, err := cl.Call(ctx, addr, "get_addrs")
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: get_addrs reply is not a map", ErrBadMessage)
	}
	out := make(map[string]string, len(m))
	for k, x := range m {
		if s, ok := asString(x); ok {
			out[k] = s
		}
	}
	return out, nil
}

package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"tide/chord"
	"tide/tlsconf"
)

// Server answers the seed's Chord methods, and tide's extensions, for one
// node.
//
// Seed methods: get_info, create, join, find_successor, get_predecessor,
// get_successor, notify, stabilize, check_predecessor, kill.
// Extensions: ping, get_state (predecessor and successor list in one call),
// get_successors, leave, get_http_addr, get_addrs, claim (hold an
// identifier for a node about to join: chord.ClaimID).
type Server struct {
	Node *chord.Node
	// HTTPAddr is the node's file service address, answered by get_http_addr
	// so that clients can find the file port of any node.
	HTTPAddr string
	// Addrs are the node's other service addresses by name ("http", "peer",
	// "resp"), answered by get_addrs.
	Addrs map[string]string
	// OnKill runs when a kill request arrives, after the reply is sent.
	OnKill func()
	// OnCall, if set, is told of every request received.
	OnCall func(method string)
	// OnMember, if set, runs after a create or join request has made the
	// node a member of a ring.
	OnMember func(method string)
	// PeersOnly, set on a node with TLS, answers the methods that change
	// a node (create, join, notify, leave, claim, stabilize,
	// check_predecessor, get_state, kill) only to clients that presented a
	// certificate of the cluster's CA; lookups (get_info,
	// find_successor, get_predecessor, get_successor...) stay open to
	// the seed's plain-text clients where the listener lets them in.
	PeersOnly bool
	// AllowKill lets kill stop the node (the course's fault-tolerance
	// tests use it); without it kill is refused.
	AllowKill bool
	// CallTimeout bounds the work one request may cause (a lookup may hop).
	CallTimeout time.Duration
	Log         *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Serve accepts connections on ln until Close is called.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.mu.Unlock()
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.CallTimeout == 0 {
		s.CallTimeout = 5 * time.Second
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Close stops accepting, closes every connection and waits for handlers.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	br := bufio.NewReader(c)
	var wmu sync.Mutex
	enc := msgpack.NewEncoder(c)
	reply := func(id uint32, errVal, result any) {
		wmu.Lock()
		defer wmu.Unlock()
		c.SetWriteDeadline(time.Now().Add(s.CallTimeout))
		if err := enc.Encode([]any{typeResponse, id, errVal, result}); err != nil {
			c.Close()
		}
	}
	var handlers sync.WaitGroup
	defer handlers.Wait()
	for {
		v, err := readMessage(br)
		if err != nil {
			return
		}
		m, err := parseMessage(v)
		if err != nil {
			// A stream that does not parse cannot be resynchronised; say why
			// if there is a msgid to say it to, then hang up.
			s.Log.Debug("chord rpc: bad message", "remote", c.RemoteAddr(), "err", err)
			if arr, ok := v.([]any); ok && len(arr) == 4 {
				if id, ok := asInt(arr[1]); ok && id >= 0 && id <= 1<<32-1 {
					reply(uint32(id), err.Error(), nil)
				}
			}
			return
		}
		if m.Type == typeResponse {
			return
		}
		handlers.Add(1)
		peer := tlsconf.Verified(c)
		go func() {
			defer handlers.Done()
			var result any
			var herr error
			if s.PeersOnly && !peer && !openMethods[m.Method] {
				herr = fmt.Errorf("%s: %w", m.Method, ErrPeersOnly)
			} else {
				result, herr = s.handle(m.Method, m.Params)
			}
			if m.Type == typeNotification {
				return
			}
			var ev any
			if herr != nil {
				ev = herr.Error()
			}
			reply(m.ID, ev, result)
			if m.Method == "kill" && herr == nil && s.OnKill != nil && s.AllowKill {
				go s.OnKill()
			}
		}()
	}
}

// ErrPeersOnly refuses a method that changes a node to a client without a
// certificate of the cluster's CA.
var ErrPeersOnly = errors.New("refused: this node takes ring-changing methods only over mutual TLS, from a certificate of its CA")

// ErrKillRefused refuses kill on a node started without --allow-kill.
var ErrKillRefused = errors.New("kill refused: this node was started without --allow-kill")

// openMethods are the methods any client may call: lookups, which change
// nothing.
var openMethods = map[string]bool{
	"get_info": true, "ping": true, "find_successor": true, "get_predecessor": true, "get_successor": true,
	"get_successors": true, "get_http_addr": true, "get_addrs": true,
}

// ringMethods are the methods only a member of a ring answers.
var ringMethods = map[string]bool{
	"find_successor": true, "get_predecessor": true, "get_successor": true, "get_successors": true,
	"get_state": true, "notify": true, "stabilize": true, "check_predecessor": true, "leave": true, "claim": true,
}

func wantParams(method string, p []any, n int) error {
	if len(p) != n {
		return fmt.Errorf("%s takes %d argument(s), got %d", method, n, len(p))
	}
	return nil
}

// handle runs one method. It never panics on bad input: every argument is
// checked and a bad one is an error reply.
func (s *Server) handle(method string, p []any) (any, error) {
	if s.OnCall != nil {
		s.OnCall(method)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.CallTimeout)
	defer cancel()
	n := s.Node
	if ringMethods[method] && !n.InRing() {
		// An idle node (or one that left) knows no ring: an answer from
		// its stale state would lead callers astray.
		return nil, fmt.Errorf("%s: %w", method, chord.ErrNotInRing)
	}
	switch method {
	case "get_info":
		return EncodeRef(n.Self()), wantParams(method, p, 0)
	case "ping":
		return true, nil
	case "create":
		if err := wantParams(method, p, 0); err != nil {
			return nil, err
		}
		n.Create()
		if s.OnMember != nil {
			s.OnMember(method)
		}
		return nil, nil
	case "join":
		if err := wantParams(method, p, 1); err != nil {
			return nil, err
		}
		via, err := DecodeRef(p[0])
		if err != nil {
			return nil, err
		}
		if via.IsZero() {
			return nil, errors.New("join: empty node")
		}
		if err := n.Join(ctx, via); err != nil {
			return nil, err
		}
		if s.OnMember != nil {
			s.OnMember(method)
		}
		return nil, nil
	case "find_successor":
		if err := wantParams(method, p, 1); err != nil {
			return nil, err
		}
		id, ok := asInt(p[0])
		if !ok || id < 0 || id > 1<<32-1 {
			return nil, errors.New("find_successor: id is not a 32-bit unsigned integer")
		}
		r, err := n.FindSuccessor(ctx, chord.ID(id))
		if err != nil {
			return nil, err
		}
		return EncodeRef(r), nil
	case "get_predecessor":
		return EncodeRef(n.Predecessor()), wantParams(method, p, 0)
	case "get_successor":
		if err := wantParams(method, p, 1); err != nil {
			return nil, err
		}
		i, ok := asInt(p[0])
		if !ok {
			return nil, errors.New("get_successor: index is not an integer")
		}
		if i < 0 || i > 1<<16 {
			return EncodeRef(chord.Ref{}), nil
		}
		return EncodeRef(n.Successor(int(i))), nil
	case "get_successors":
		return encodeRefs(n.Successors()), wantParams(method, p, 0)
	case "get_state":
		if err := wantParams(method, p, 1); err != nil {
			return nil, err
		}
		from, err := DecodeRef(p[0])
		if err != nil {
			return nil, err
		}
		pred, succs := n.State(from)
		return []any{EncodeRef(pred), encodeRefs(succs)}, nil
	case "notify":
		if err := wantParams(method, p, 1); err != nil {
			return nil, err
		}
		from, err := DecodeRef(p[0])
		if err != nil {
			return nil, err
		}
		n.Notify(from)
		return nil, nil
	case "leave":
		if err := wantParams(method, p, 3); err != nil {
			return nil, err
		}
		leaver, err := DecodeRef(p[0])
		if err != nil {
			return nil, err
		}
		pred, err := DecodeRef(p[1])
		if err != nil {
			return nil, err
		}
		succs, err := DecodeRefs(p[2])
		if err != nil {
			return nil, err
		}
		n.HandleLeave(leaver, pred, succs)
		return nil, nil
	case "claim":
		if err := wantParams(method, p, 1); err != nil {
			return nil, err
		}
		r, err := DecodeRef(p[0])
		if err != nil {
			return nil, err
		}
		if r.IsZero() {
			return nil, errors.New("claim: empty node")
		}
		if err := n.CutOff(ctx); err != nil {
			return nil, err
		}
		return EncodeRef(n.Claim(r)), nil
	case "stabilize":
		n.Stabilize(ctx)
		return nil, wantParams(method, p, 0)
	case "check_predecessor":
		n.CheckPredecessor(ctx)
		return nil, wantParams(method, p, 0)
	case "get_http_addr":
		return s.HTTPAddr, wantParams(method, p, 0)
	case "get_addrs":
		return s.Addrs, wantParams(method, p, 0)
	case "kill":
		if s.OnKill == nil {
			return nil, errors.New("kill: not supported by this node")
		}
		if !s.AllowKill {
			return nil, ErrKillRefused
		}
		return nil, nil
	}
	return nil, fmt.Errorf("unknown method %q", method)
}

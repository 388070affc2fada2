// Package resp is the Redis protocol (RESP2) front end of a node's
// key-value service: GET, SET (with its options), DEL, EXISTS, MGET, MSET,
// the conditional writes, counters, expiry commands and scans of
// commands.go, PING, ECHO, INFO, COMMAND, CONFIG GET, SELECT 0, CLIENT,
// CLUSTER and QUIT, enough for redis-cli, redis-benchmark, Redis Cluster
// clients and the applications behind them. Pipelined commands
// are read together, executed concurrently and answered in order; plain
// GETs and SETs go to the coordinator as one ordered batch.
//
// It reaches the key-value service only through Backend, and imports kv
// for the message and record types alone: no storage, ring or HTTP. The
// package that composes a node (store) implements Backend and runs Serve.
package resp

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"tide/kv"
)

// Config describes the service a Server fronts, as its clients see it.
type Config struct {
	// Addr is the advertised RESP address (INFO's tcp_port).
	Addr string
	// PeerAddr is this node's KV peer address, whose hash is its cluster
	// node ID (CLUSTER MYID, and each member's in CLUSTER NODES).
	PeerAddr string
	// N, W and R are the replicas and quorums, reported by INFO.
	N, W, R int
	// MaxValue bounds a value, and any argument: a command with a longer
	// one is read, and answered with a TooLargeError.
	MaxValue int
	// ACL, if set with users, requires every connection to log in (AUTH,
	// or HELLO ... AUTH) before any other command, and checks each
	// command against its user's rules.
	ACL *ACL
	// OnAuthFailure, if set, is told of every refusal for missing or wrong
	// credentials or permissions.
	OnAuthFailure func()
	// IdleTimeout closes a connection that sends no command for this long
	// (0: never), as Redis's timeout.
	IdleTimeout time.Duration
	// MaxConns caps the connections served at once (0: no cap); one more
	// is answered with an error and closed.
	MaxConns int
	// Sync is the KV sync mode, "always" or "periodic", reported by
	// CONFIG GET appendfsync as always or everysec.
	Sync string
}

// Backend is the key-value service a Server fronts. Its errors are
// answered as -ERR with their text.
type Backend interface {
	// Get reads key with the default read quorum.
	Get(ctx context.Context, key []byte) (kv.Record, bool, error)
	// Put writes key with the default write quorum.
	Put(ctx context.Context, key, value []byte) error
	// Delete deletes key with the default write quorum.
	Delete(ctx context.Context, key []byte) error
	// Write writes a record: its key, value and expiry deadline (Unix
	// ns, 0: none), with the default write quorum.
	Write(ctx context.Context, rec kv.Record) error
	// Cas runs a read-modify-write of key linearizably, answering as
	// kv.Op describes. An error of the op itself (a value that is not a
	// number) satisfies IsOpError.
	Cas(ctx context.Context, key []byte, op kv.Op) (kv.Message, error)
	// IsOpError reports whether an error of Cas is the op's refusal,
	// answered as Redis words it rather than as a failure.
	IsOpError(err error) bool
	// Scan lists the keys of the whole store (every node's), in ring
	// order from cursor (0: the start), up to count, with their records;
	// next is the cursor to go on from, 0 once the ring is done.
	Scan(ctx context.Context, cursor uint64, count int) (keys []kv.Record, next uint64, err error)
	// NewBatcher returns what one connection runs its batches of plain
	// GETs and SETs through.
	NewBatcher() Batcher
	// Status is what INFO reports of the service.
	Status() Status
	// Members are the ring members that serve RESP, in token order.
	Members() []Member
}

// Batcher runs batches of client requests (kv.KindClientGet and
// kv.KindClientPut messages) through the coordinator, applied in order.
type Batcher interface {
	// Do runs ms and returns each one's answer and failure.
	Do(ctx context.Context, ms []kv.Message) ([]kv.Message, []error)
	// Abandoned reports whether the last Do gave up on requests the
	// coordinator may still read, so that ms must not be reused, and
	// forgets it.
	Abandoned() bool
}

// Status is what INFO reports of the key-value service.
type Status struct {
	Members int // ring members
	Stats   kv.Stats
	Keys    int64 // records this node stores
	Bytes   int64 // their key and value bytes
}

// Member is a ring member that serves RESP.
type Member struct {
	PeerAddr string // its KV peer address (the cluster node ID's source)
	RESPAddr string
	Self     bool // this node
}

// Server answers RESP connections for a Backend.
type Server struct {
	cfg   Config
	kv    Backend
	acl   atomic.Pointer[ACL]
	conns atomic.Int64
}

// NewServer returns a server for b.
func NewServer(cfg Config, b Backend) *Server {
	srv := &Server{cfg: cfg, kv: b}
	if cfg.ACL != nil && len(cfg.ACL.Users) > 0 {
		srv.acl.Store(cfg.ACL)
	}
	return srv
}

// SetACL replaces the users of a server started with an ACL (a reloaded
// ACL file): new logins use a; an open connection keeps its login if its
// user is still there and on, under a's rules for that user, and is
// logged out otherwise. An empty a, or a server started without an ACL,
// is refused.
func (srv *Server) SetACL(a *ACL) error {
	if a == nil || len(a.Users) == 0 {
		return errors.New("resp: an ACL with no users would open the server to anyone")
	}
	if srv.acl.Load() == nil {
		return errors.New("resp: this server was started without an ACL")
	}
	srv.acl.Store(a)
	return nil
}

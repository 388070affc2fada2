package autoscale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"tide/paxos"
)

// Leader elects one active controller among several.
type Leader interface {
	// TryAcquire takes or renews leadership without blocking for long and
	// reports whether this controller holds it.
	TryAcquire(ctx context.Context) (bool, error)
	// Release gives leadership up.
	Release(ctx context.Context) error
}

// State is the controller's memory across crashes: the membership change
// in flight, so that the next controller finishes it.
type State interface {
	Load(ctx context.Context) (*Pending, error)
	Save(ctx context.Context, p *Pending) error // nil clears
}

// Pending is a membership change in flight.
type Pending struct {
	System   string    `json:"system"`
	Action   Action    `json:"action"`
	Instance string    `json:"instance"` // scale in: the victim; scale out: the new instance once launched
	Phase    string    `json:"phase"`    // scale in: "drain", then "terminate"; scale out: "launch"
	Reason   string    `json:"reason"`
	Started  time.Time `json:"started"`
}

// FileLock is leadership through an exclusive flock on a file: the kernel
// drops the lock when its holder exits or crashes, so a standby takes over
// at its next try. For controllers on one machine (the local provisioner).
type FileLock struct {
	Path string
	mu   sync.Mutex
	f    *os.File
}

// TryAcquire implements Leader.
func (l *FileLock) TryAcquire(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		return true, nil
	}
	if err := os.MkdirAll(filepath.Dir(l.Path), 0o755); err != nil {
		return false, err
	}
	f, err := os.OpenFile(l.Path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, err
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	l.f = f
	return true, nil
}

// Release implements Leader.
func (l *FileLock) Release(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close() // closing drops the flock
	l.f = nil
	return err
}

// FileState keeps Pending in a JSON file, replaced atomically.
type FileState struct{ Path string }

// Load implements State.
func (s FileState) Load(context.Context) (*Pending, error) {
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(strings.TrimSpace(string(b))) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p Pending
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("controller state %s: %w", s.Path, err)
	}
	return &p, nil
}

// Save implements State.
func (s FileState) Save(_ context.Context, p *Pending) error {
	if p == nil {
		err := os.Remove(s.Path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o755); err != nil {
		return err
	}
	tmp := s.Path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	return os.Rename(tmp, s.Path)
}

// LogKV is the part of the tide log's client that leases need.
type LogKV interface {
	Get(ctx context.Context, key string, mode paxos.ReadMode) ([]byte, bool, error)
	CAS(ctx context.Context, key string, expect, value []byte) (bool, []byte, error)
	Put(ctx context.Context, key string, value []byte) error
}

// LogLease is leadership through a lease in the tide log: a key holding
// "holder expiry-unix-nanos", taken and renewed with compare-and-swap, so
// every replica of the log agrees on one holder. A crashed holder stops
// renewing, and another controller takes the lease once it expires.
type LogLease struct {
	KV     LogKV
	Key    string        // default "autoscale/leader"
	Holder string        // this controller's unique name
	TTL    time.Duration // default 10s
	Now    func() time.Time

	mu   sync.Mutex
	held []byte // the value we last wrote
}

func (l *LogLease) key() string {
	if l.Key == "" {
		return "autoscale/leader"
	}
	return l.Key
}

// TryAcquire implements Leader.
func (l *LogLease) TryAcquire(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	ttl := l.TTL
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	cur, ok, err := l.KV.Get(ctx, l.key(), paxos.ReadThroughLog)
	if err != nil {
		return false, err
	}
	if ok {
		holder, exp := parseLease(cur)
		if holder != l.Holder && now().UnixNano() < exp {
			l.held = nil
			return false, nil // someone else's live lease
		}
	}
	next := []byte(l.Holder + " " + strconv.FormatInt(now().Add(ttl).UnixNano(), 10))
	var expect []byte
	if ok {
		expect = cur
	}
	swapped, _, err := l.KV.CAS(ctx, l.key(), expect, next)
	if err != nil {
		return false, err
	}
	if !swapped {
		l.held = nil
		return false, nil
	}
	l.held = next
	return true, nil
}

// Release implements Leader: the lease is cleared if we still hold it.
func (l *LogLease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == nil {
		return nil
	}
	_, _, err := l.KV.CAS(ctx, l.key(), l.held, []byte("released 0"))
	l.held = nil
	return err
}

func parseLease(b []byte) (string, int64) {
	holder, exp, ok := strings.Cut(string(b), " ")
	if !ok {
		return "", 0
	}
	n, _ := strconv.ParseInt(exp, 10, 64)
	return holder, n
}

// LogState keeps Pending in the tide log under a key.
type LogState struct {
	KV  LogKV
	Key string // default "autoscale/pending"
}

func (s LogState) key() string {
	if s.Key == "" {
		return "autoscale/pending"
	}
	return s.Key
}

// Load implements State.
func (s LogState) Load(ctx context.Context) (*Pending, error) {
	b, ok, err := s.KV.Get(ctx, s.key(), paxos.ReadThroughLog)
	if err != nil || !ok || len(b) == 0 || string(b) == "null" {
		return nil, err
	}
	var p Pending
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("controller state in the log: %w", err)
	}
	return &p, nil
}

// Save implements State.
func (s LogState) Save(ctx context.Context, p *Pending) error {
	if p == nil {
		return s.KV.Put(ctx, s.key(), []byte("null"))
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return s.KV.Put(ctx, s.key(), b)
}

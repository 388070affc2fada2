// Package kv is the Dynamo-style replication core of the tide store: N
// replicas on a key's N distinct ring successors, W acknowledgements per
// write, R answers per read, last-writer-wins versions, read repair, hinted
// handoff and range-digest anti-entropy.
//
// A Node is a state machine in the style of package paxos: Step takes a
// message, Tick a unit of time, Ready hands back what to persist and what
// to send. Its only seam to the outside is Storage, which production backs
// with pebble and tests with a map.
//
// It imports nothing of tide and no I/O: no sockets, goroutines, clocks
// (time comes in through Tick and the clock function) or files.
package kv

import (
	"bytes"
	"fmt"
)

// Record is one version of a key. Tombstones record deletes so that an old
// value cannot come back through repair.
type Record struct {
	_msgpack struct{} `msgpack:",as_array"`
	Key      []byte   `msgpack:"k"`
	Value    []byte   `msgpack:"v,omitempty"`
	Version  uint64   `msgpack:"ver"`
	Tomb     bool     `msgpack:"t,omitempty"`
	// Expire is the absolute deadline of the value, Unix nanoseconds (0:
	// none), as Cassandra's TTL cells carry theirs: it is part of the
	// version, so every replica agrees on when the key disappears, and a
	// replica that was down at the deadline brings back nothing.
	Expire uint64 `msgpack:"x,omitempty"`
}

// Expired reports whether r's deadline has passed at now (Unix ns).
func (r Record) Expired(now uint64) bool { return r.Expire != 0 && now >= r.Expire }

// Live reports whether r holds a value at now: neither a tombstone nor
// expired.
func (r Record) Live(now uint64) bool { return !r.Tomb && !r.Expired(now) }

// collectAfter is the time from which a tombstone counts its TTL: its
// version, or the deadline of the value it replaced on expiry if later.
func (r Record) collectAfter() uint64 { return max(r.Version, r.Expire) }

// TombCollectable reports whether r is a tombstone older than ttl at now:
// every replica must have it by then, and it may be dropped.
func (r Record) TombCollectable(now, ttl uint64) bool {
	c := r.collectAfter()
	return r.Tomb && now > c && now-c > ttl
}

// Size is the record's key and value bytes, as storage counts them.
func (r Record) Size() int64 { return int64(len(r.Key) + len(r.Value)) }

// Newer reports whether r should replace o: the higher version wins, and
// equal versions are ordered by value so every replica picks the same one.
func (r Record) Newer(o Record) bool {
	if r.Version != o.Version {
		return r.Version > o.Version
	}
	if r.Tomb != o.Tomb {
		return r.Tomb
	}
	return bytes.Compare(r.Value, o.Value) > 0
}

// Storage is a node's local copy of its keys.
type Storage interface {
	// Get returns the stored record of key.
	Get(key []byte) (Record, bool, error)
	// Scan calls fn for every record whose position is in (from, to], in
	// ring order from from (a range that wraps yields (from, max] before
	// [0, to]), and by key within a position; from == to scans
	// everything, from position 0. It stops when fn returns false.
	Scan(from, to uint32, fn func(pos uint32, r Record) bool) error
}

// VersionScanner is a Storage that can scan without copying values out:
// fn sees each record's key, version and tombstone flag (no value), in
// memory that is valid only during the call. Range digests use it.
type VersionScanner interface {
	ScanVersions(from, to uint32, fn func(pos uint32, r Record) bool) error
}

// Ring tells a node where keys live.
type Ring interface {
	// Position maps a key to its ring position.
	Position(key []byte) uint32
	// Preference returns the N distinct nodes that hold a position, the
	// owner first.
	Preference(pos uint32, n int) []string
	// Members lists every node with its token, in token order.
	Members() []Member
}

// Member is one node of the ring.
type Member struct {
	Addr  string
	Token uint32
}

// Config configures a Node.
type Config struct {
	// N, W, R: replicas, write quorum, read quorum. Default 3/2/2.
	N, W, R int
	// ResendTicks: a replica request unanswered this long is sent again;
	// after TimeoutTicks the client request fails. Defaults 20 and 200.
	ResendTicks, TimeoutTicks int
	// LeaderWaitTicks: a conditional op forwarded to its key's leader
	// that the leader has not confirmed receiving (KindCasTaken) this
	// long is answered "outcome unknown", and the leader is suspected:
	// this node sends the key's next ops to the next replica instead,
	// until it hears from the leader again. Default the larger of
	// 3*ResendTicks and TimeoutTicks/8.
	LeaderWaitTicks int
	// A read asks only as many replicas as its quorum needs (the
	// coordinator itself first, then the preference order), as Cassandra
	// does; the others are asked too when it has no answer after
	// SpeculateTicks (default 3), or when a replica lacks the key. A read
	// whose quorum is smaller than W asks every replica at once (its
	// write-back needs W of them), and so does every read with ReadAll,
	// as in the Dynamo paper.
	SpeculateTicks int
	ReadAll        bool
	// HintTicks is how often held hints are retried. Default 50.
	HintTicks int
	// HintDropTicks is how long hints are kept for a node that is not in
	// the ring: one that left gracefully, was removed, or was dropped
	// from it after a crash. Past that, its hints are dropped: the writes
	// they hold are on the replicas that acknowledged them, and the
	// key's current replicas converge by anti-entropy and hand-off. A
	// node back within the time still gets them. Default 30000 (5 min at
	// the store's 10 ms tick).
	HintDropTicks int
	// SyncTicks is how often anti-entropy compares one range with one peer.
	// Default 100.
	SyncTicks int
	// ScanBytesPerTick paces anti-entropy: comparing ranges reads every
	// record in them, and the next comparison starts only once the bytes
	// read so far, divided by this rate, have passed in ticks. Default
	// 256 KiB (25 MiB/s at the store's 10 ms tick): a primary range of
	// 350 MB is compared about every 15 s instead of every second.
	ScanBytesPerTick int64
	// SettleTicks: anti-entropy compares the records written up to this
	// long before a comparison starts, and leaves newer ones to the next:
	// under load, writes still on their way to a replica would otherwise
	// make every comparison differ, and send records the replicas are
	// about to get anyway. Default 40.
	SettleTicks int
	// Buckets splits a range for digest comparison. Default 64.
	Buckets int
	// HandOffTicks is how long the member table must stay unchanged before
	// a node hands off and drops records it no longer replicates.
	// Default 300 (3 s at the store's 10 ms tick).
	HandOffTicks int
	// TransitionTicks is how long a replaced ring view counts at least:
	// its preference lists must also meet the quorums, until every member
	// has settled on the new view and this long has passed (viewsync.go).
	// Default 1000 (10 s).
	TransitionTicks int
	// VersionCache is how many keys' versions a node keeps in memory, so
	// that a write of a key written recently compares versions without
	// reading storage. Default 262144 (about 20 MB with short keys);
	// negative: none.
	VersionCache int
	// MaxValue bounds a value. Default 1 MiB.
	MaxValue int
	// MigrationBytesPerTick caps the bytes anti-entropy and hand-off send
	// per tick, so moving data does not starve foreground traffic. 0: no
	// cap.
	MigrationBytesPerTick int64
	// Regions names the other regions this node's region replicates to:
	// every client write it coordinates is kept in a durable outbox for
	// each, and sent to the region (see SetRegionRing) until a write
	// quorum of it holds the write. Empty: one region.
	Regions []string
	// Origin names this incarnation of the node in the replication
	// watermarks it sends other regions (see RegionMark): a number no
	// other incarnation of any node uses (the driver draws it at random
	// at every start). 0: no watermarks are sent.
	Origin uint64
	// RegionDelay holds writes this long (in version units, nanoseconds)
	// before they are sent to other regions: replication lag made longer
	// on purpose, for benchmarks. 0: sent at the next tick.
	RegionDelay uint64
	// TombstoneTTL is how long, in version units (nanoseconds), a delete's
	// tombstone is kept before it is collected. Anti-entropy must have
	// spread it to every replica by then. Default one hour.
	TombstoneTTL uint64
}

func (c Config) withDefaults() Config {
	if c.N == 0 {
		c.N = 3
	}
	if c.W == 0 {
		c.W = min(2, c.N)
	}
	if c.R == 0 {
		c.R = min(2, c.N)
	}
	if c.ResendTicks == 0 {
		c.ResendTicks = 20
	}
	if c.TimeoutTicks == 0 {
		c.TimeoutTicks = 200
	}
	if c.LeaderWaitTicks == 0 {
		c.LeaderWaitTicks = max(3*c.ResendTicks, c.TimeoutTicks/8)
	}
	if c.ScanBytesPerTick == 0 {
		c.ScanBytesPerTick = 256 << 10
	}
	if c.SpeculateTicks == 0 {
		c.SpeculateTicks = 3
	}
	if c.HintTicks == 0 {
		c.HintTicks = 50
	}
	if c.HintDropTicks == 0 {
		c.HintDropTicks = 30000
	}
	if c.SyncTicks == 0 {
		c.SyncTicks = 100
	}
	if c.SettleTicks == 0 {
		c.SettleTicks = 40
	}
	if c.Buckets == 0 {
		c.Buckets = 64
	}
	if c.HandOffTicks == 0 {
		c.HandOffTicks = 300
	}
	if c.TransitionTicks == 0 {
		c.TransitionTicks = 1000
	}
	if c.VersionCache == 0 {
		c.VersionCache = 1 << 18
	}
	if c.MaxValue == 0 {
		c.MaxValue = 1 << 20
	}
	if c.TombstoneTTL == 0 {
		c.TombstoneTTL = uint64(3600e9)
	}
	return c
}

// Validate checks the quorum settings.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.N < 1 || c.W < 1 || c.R < 1 || c.W > c.N || c.R > c.N {
		return fmt.Errorf("kv: need 1 <= W, R <= N (N=%d W=%d R=%d)", c.N, c.W, c.R)
	}
	return nil
}

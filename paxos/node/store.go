// Package node runs paxos roles for real: over package transport, with
// durable state in pebble, on a ticker. It also provides the client that
// tools and benchmarks use.
package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/vmihailenco/msgpack/v5"

	"tide/paxos"
)

// Store keeps a role's durable state in pebble: an acceptor's promise and
// votes, a leader's highest ballot, a replica's latest snapshot. Save is
// one synced batch; a driver that commits rounds with Write while an
// earlier Sync runs makes one fsync cover all of them (group commit).
type Store struct {
	db *pebble.DB
	// scratch holds a vote's encoding until the batch copies it in: Save
	// and Write are called by one goroutine at a time (a role's loop).
	scratch []byte
}

var (
	keyPromised     = []byte("promised")
	keyGC           = []byte("gc")
	keySnapshot     = []byte("snapshot")
	prefixVote      = []byte("v/")
	prefixRound     = []byte("m/")
	keyRetired      = []byte("retired")
	keyFloor        = []byte("floor")
	keyConfig       = []byte("config")
	keyRetiredEpoch = []byte("retired_epoch")
)

func roundKey(b paxos.Ballot) []byte {
	k := binary.BigEndian.AppendUint64(append([]byte(nil), prefixRound...), b.Round)
	return binary.BigEndian.AppendUint32(k, b.ID)
}

func voteKey(slot uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefixVote...), slot)
}

// OpenStore opens or creates the store in dir.
func OpenStore(dir string) (*Store, error) {
	db, err := pebble.Open(filepath.Join(dir, "paxos"), &pebble.Options{Logger: quiet{}})
	if err != nil {
		return nil, fmt.Errorf("open paxos store in %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

// OpenMemStore opens a store that lives in memory (pebble's vfs.NewMem),
// for the simulator: the same encoding and recovery code as on disk.
func OpenMemStore() (*Store, error) {
	db, err := pebble.Open("paxos", &pebble.Options{Logger: quiet{}, FS: vfs.NewMem()})
	if err != nil {
		return nil, fmt.Errorf("open in-memory paxos store: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// Save makes ops and snapshot durable in one synced batch.
func (s *Store) Save(ops []paxos.PersistOp, snapshot []byte) error {
	return s.commit(ops, snapshot, pebble.Sync)
}

// Write commits ops and snapshot in one batch without waiting for the
// disk: they are durable once a later Sync returns.
func (s *Store) Write(ops []paxos.PersistOp, snapshot []byte) error {
	return s.commit(ops, snapshot, pebble.NoSync)
}

// Sync makes every batch written before the call durable: it appends a
// one-byte log record with a synced write, and the write-ahead log is
// sequential, so its fsync covers everything before it.
func (s *Store) Sync() error {
	if err := s.db.LogData([]byte{0}, pebble.Sync); err != nil {
		return fmt.Errorf("sync paxos state: %w", err)
	}
	return nil
}

func (s *Store) commit(ops []paxos.PersistOp, snapshot []byte, opts *pebble.WriteOptions) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, op := range ops {
		if op.Promised != nil {
			v, _ := msgpack.Marshal(op.Promised)
			b.Set(keyPromised, v, nil)
		}
		if op.Config != nil {
			v, _ := msgpack.Marshal(op.Config)
			b.Set(keyConfig, v, nil)
		}
		if op.Accept != nil {
			s.scratch = paxos.AppendEntry(s.scratch[:0], op.Accept)
			b.Set(voteKey(op.Accept.Slot), s.scratch, nil)
		}
		if op.Match != nil {
			v, _ := msgpack.Marshal(op.Match)
			b.Set(roundKey(op.Match.Ballot), v, nil)
		}
		if op.Retire != nil {
			v, _ := msgpack.Marshal(op.Retire)
			b.DeleteRange(roundKey(paxos.Ballot{}), roundKey(*op.Retire), nil)
			b.Set(keyRetired, v, nil)
		}
		if op.RetireEpoch > 0 {
			b.Set(keyRetiredEpoch, binary.BigEndian.AppendUint64(nil, op.RetireEpoch), nil)
		}
		if op.Floor > 0 {
			b.Set(keyFloor, binary.BigEndian.AppendUint64(nil, op.Floor), nil)
		}
		if op.GCBelow > 0 {
			b.DeleteRange(voteKey(0), voteKey(op.GCBelow), nil)
			b.Set(keyGC, binary.BigEndian.AppendUint64(nil, op.GCBelow), nil)
		}
	}
	if snapshot != nil {
		b.Set(keySnapshot, snapshot, nil)
	}
	if err := b.Commit(opts); err != nil {
		return fmt.Errorf("persist paxos state: %w", err)
	}
	return nil
}

func (s *Store) get(k []byte) ([]byte, error) {
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

// AcceptorState loads what an acceptor persisted.
func (s *Store) AcceptorState() (paxos.AcceptorState, error) {
	st := paxos.AcceptorState{Accepted: map[uint64]paxos.Entry{}}
	var err error
	if st.Promised, err = s.Ballot(); err != nil {
		return st, err
	}
	if v, err := s.get(keyGC); err != nil {
		return st, err
	} else if len(v) == 8 {
		st.GCBelow = binary.BigEndian.Uint64(v)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: voteKey(0), UpperBound: []byte("v0")})
	if err != nil {
		return st, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		e, err := paxos.DecodeEntry(it.Value())
		if err != nil {
			return st, fmt.Errorf("decode vote %x: %w", it.Key(), err)
		}
		if e.Slot >= st.GCBelow {
			st.Accepted[e.Slot] = e
		}
	}
	return st, it.Error()
}

// MatchmakerState loads what a matchmaker persisted.
func (s *Store) MatchmakerState() (paxos.MatchmakerState, error) {
	var st paxos.MatchmakerState
	if v, err := s.get(keyRetired); err != nil {
		return st, err
	} else if v != nil {
		if err := msgpack.Unmarshal(v, &st.Retired); err != nil {
			return st, fmt.Errorf("decode retirement ballot: %w", err)
		}
	}
	var retiredEpoch uint64
	if v, err := s.get(keyRetiredEpoch); err != nil {
		return st, err
	} else if len(v) == 8 {
		retiredEpoch = binary.BigEndian.Uint64(v)
	}
	if v, err := s.get(keyFloor); err != nil {
		return st, err
	} else if len(v) == 8 {
		st.Floor = binary.BigEndian.Uint64(v)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefixRound, UpperBound: []byte("m0")})
	if err != nil {
		return st, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		var rc paxos.RoundConfig
		if err := msgpack.Unmarshal(it.Value(), &rc); err != nil {
			return st, fmt.Errorf("decode round %x: %w", it.Key(), err)
		}
		st.Apply(paxos.PersistOp{Match: &rc})
	}
	// Rounds of configurations older than the retiring round's were
	// dropped in memory, not on disk.
	st.Apply(paxos.PersistOp{RetireEpoch: retiredEpoch})
	if err := it.Error(); err != nil {
		return st, err
	}
	// The newest configuration a round registered under.
	c, err := s.Config()
	st.Config = c
	return st, err
}

// Ballot loads the highest ballot persisted (an acceptor's promise or a
// leader's last campaign).
func (s *Store) Ballot() (paxos.Ballot, error) {
	var b paxos.Ballot
	v, err := s.get(keyPromised)
	if err != nil || v == nil {
		return b, err
	}
	if err := msgpack.Unmarshal(v, &b); err != nil {
		return b, fmt.Errorf("decode ballot: %w", err)
	}
	return b, nil
}

// Config loads the configuration a leader persisted, or nil.
func (s *Store) Config() (*paxos.Config, error) {
	v, err := s.get(keyConfig)
	if err != nil || v == nil {
		return nil, err
	}
	var c paxos.Config
	if err := msgpack.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("decode configuration: %w", err)
	}
	return &c, nil
}

// Snapshot loads a replica's latest snapshot, or nil.
func (s *Store) Snapshot() ([]byte, error) { return s.get(keySnapshot) }

type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

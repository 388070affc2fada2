package kv

import (
	"crypto/md5"
	"encoding/binary"
	"slices"
	"sort"
)

// MemStorage is an in-memory Storage for tests and the simulator.
type MemStorage struct {
	Pos  func([]byte) uint32
	recs map[string]Record
	// paxos is the Paxos acceptor state of keys (PaxosStorage).
	paxos map[string]PaxosState
	// Miscounts counts Put and Delete ops whose Had or HadBytes did not
	// match what the store held: a driver keeping counts from them would
	// drift.
	Miscounts int
}

// NewMemStorage returns an empty store placing keys with pos.
func NewMemStorage(pos func([]byte) uint32) *MemStorage {
	return &MemStorage{Pos: pos, recs: map[string]Record{}, paxos: map[string]PaxosState{}}
}

// Apply performs persisted operations (what a driver does with Ready).
func (m *MemStorage) Apply(ops []PersistOp) {
	check := func(op PersistOp, key []byte) {
		cur, had := m.recs[string(key)]
		if had != op.Had || (had && cur.Size() != op.HadBytes) {
			m.Miscounts++
		}
	}
	for _, op := range ops {
		if op.Put != nil {
			check(op, op.Put.Key)
			m.recs[string(op.Put.Key)] = *op.Put
		}
		if op.Delete != nil {
			check(op, op.Delete)
			delete(m.recs, string(op.Delete))
			delete(m.paxos, string(op.Delete))
		}
		if op.Paxos != nil {
			m.paxos[string(op.Paxos.Key)] = *op.Paxos
		}
	}
}

// Paxos implements PaxosStorage.
func (m *MemStorage) Paxos(key []byte) (PaxosState, bool, error) {
	s, ok := m.paxos[string(key)]
	return s, ok, nil
}

// Get implements Storage.
func (m *MemStorage) Get(key []byte) (Record, bool, error) {
	r, ok := m.recs[string(key)]
	return r, ok, nil
}

// Len returns the number of records.
func (m *MemStorage) Len() int { return len(m.recs) }

// Scan implements Storage.
func (m *MemStorage) Scan(from, to uint32, fn func(uint32, Record) bool) error {
	type pr struct {
		pos uint32
		key string
	}
	var all []pr
	for k := range m.recs {
		p := m.Pos([]byte(k))
		if from == to || inHalfOpen(p, from, to) {
			all = append(all, pr{p, k})
		}
	}
	// Ring order: from the position after from around to to.
	off := from + 1
	if from == to {
		off = 0
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].pos != all[j].pos {
			return all[i].pos-off < all[j].pos-off
		}
		return all[i].key < all[j].key
	})
	for _, p := range all {
		if !fn(p.pos, m.recs[p.key]) {
			return nil
		}
	}
	return nil
}

func inHalfOpen(x, a, b uint32) bool {
	if a == b {
		return true
	}
	if a < b {
		return a < x && x <= b
	}
	return x > a || x <= b
}

// Partitioners map keys to ring positions.
var Partitioners = map[string]func([]byte) uint32{
	// md5-low32: the low 32 bits of MD5, read big-endian; shared with the
	// file store and the Chord identifier space.
	"md5-low32": func(k []byte) uint32 {
		s := md5.Sum(k)
		return binary.BigEndian.Uint32(s[12:])
	},
	// md5-mod10000: int(md5(key).hexdigest(), 16) % 10000, the Dynamo
	// seed's ring of 10,000 positions.
	"md5-mod10000": func(k []byte) uint32 {
		s := md5.Sum(k)
		// The 128-bit digest mod 10000, computed in two 64-bit halves.
		hi := binary.BigEndian.Uint64(s[:8]) % 10000
		lo := binary.BigEndian.Uint64(s[8:]) % 10000
		// 2^64 mod 10000 = 1616
		return uint32((hi*1616 + lo) % 10000)
	},
}

// StaticRing is a Ring over a fixed member list.
type StaticRing struct {
	Pos     func([]byte) uint32
	members []Member
	// pref[i] lists the first prefMax distinct nodes from member i on:
	// every position in i's arc shares its preference lists, which are
	// prefixes of it.
	pref [][]string
}

const prefMax = 8

// NewStaticRing returns a ring of the given members (any order).
func NewStaticRing(pos func([]byte) uint32, members []Member) *StaticRing {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int {
		switch {
		case a.Token < b.Token:
			return -1
		case a.Token > b.Token:
			return 1
		}
		return 0
	})
	r := &StaticRing{Pos: pos, members: ms, pref: make([][]string, len(ms))}
	for i := range ms {
		r.pref[i] = slices.Clip(r.walk(i, prefMax))
	}
	return r
}

// walk lists the first n distinct nodes from member i on.
func (r *StaticRing) walk(i, n int) []string {
	var out []string
	for k := 0; k < len(r.members) && len(out) < n; k++ {
		a := r.members[(i+k)%len(r.members)].Addr
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// Position implements Ring.
func (r *StaticRing) Position(key []byte) uint32 { return r.Pos(key) }

// Members implements Ring.
func (r *StaticRing) Members() []Member { return r.members }

// Owner returns the member that owns pos.
func (r *StaticRing) Owner(pos uint32) Member {
	i := sort.Search(len(r.members), func(i int) bool { return r.members[i].Token >= pos })
	return r.members[i%len(r.members)]
}

// Preference implements Ring: the owner of pos and the next distinct
// members clockwise.
func (r *StaticRing) Preference(pos uint32, n int) []string {
	if len(r.members) == 0 {
		return nil
	}
	i := sort.Search(len(r.members), func(i int) bool { return r.members[i].Token >= pos }) % len(r.members)
	// The list is shared: callers only read it, and its capacity ends
	// where it does, so an append copies.
	switch p := r.pref[i]; {
	case n <= len(p):
		return p[:n:n]
	case len(p) < prefMax:
		return p // every node there is
	}
	return r.walk(i, n)
}

package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/vmihailenco/msgpack/v5"

	"tide/kv"
)

// The KV namespace lives in the node's pebble database beside the file
// metadata: records under "k/" + position + key, so a ring range is one
// ordered scan, and hints under "h/" + target + NUL + key.

func kvKey(pos uint32, key []byte) []byte {
	b := make([]byte, 0, 6+len(key))
	b = append(b, 'k', '/')
	b = binary.BigEndian.AppendUint32(b, pos)
	return append(b, key...)
}

func hintKey(target string, key []byte) []byte {
	b := append([]byte("h/"+target), 0)
	return append(b, key...)
}

// kvStorage adapts the engine to kv.Storage.
type kvStorage struct{ e *Engine }

// Get implements kv.Storage.
func (s kvStorage) Get(key []byte) (kv.Record, bool, error) {
	v, closer, err := s.e.db.Get(kvKey(s.e.pos(key), key))
	if errors.Is(err, pebble.ErrNotFound) {
		return kv.Record{}, false, nil
	}
	if err != nil {
		return kv.Record{}, false, err
	}
	defer closer.Close()
	r, err := kv.DecodeRecord(v, false)
	if err != nil {
		return kv.Record{}, false, fmt.Errorf("decode kv record: %w", err)
	}
	return r, true, nil
}

// Scan implements kv.Storage: records with positions in (from, to].
func (s kvStorage) Scan(from, to uint32, fn func(uint32, kv.Record) bool) error {
	return s.scan(from, to, false, fn)
}

// ScanVersions implements kv.VersionScanner: Scan without the values, and
// with keys that alias the iterator's memory.
func (s kvStorage) ScanVersions(from, to uint32, fn func(uint32, kv.Record) bool) error {
	return s.scan(from, to, true, func(pos uint32, r kv.Record) bool {
		r.Value = nil
		return fn(pos, r)
	})
}

func (s kvStorage) scan(from, to uint32, alias bool, fn func(uint32, kv.Record) bool) error {
	scan := func(lo, hi []byte) (bool, error) {
		it, err := s.e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return false, err
		}
		defer it.Close()
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			r, err := kv.DecodeRecord(it.Value(), alias)
			if err != nil {
				return false, fmt.Errorf("decode kv record %x: %w", k, err)
			}
			if !fn(binary.BigEndian.Uint32(k[2:6]), r) {
				return false, nil
			}
		}
		return true, it.Error()
	}
	// bound(p) is the first key of position p.
	bound := func(p uint64) []byte {
		if p > 0xffffffff {
			return []byte("k0")
		}
		return binary.BigEndian.AppendUint32([]byte("k/"), uint32(p))
	}
	switch {
	case from == to:
		_, err := scan(bound(0), bound(1<<32))
		return err
	case from < to:
		_, err := scan(bound(uint64(from)+1), bound(uint64(to)+1))
		return err
	default: // wraps: (from, max] then [0, to]
		more, err := scan(bound(uint64(from)+1), bound(1<<32))
		if err != nil || !more {
			return err
		}
		_, err = scan(bound(0), bound(uint64(to)+1))
		return err
	}
}

// applyKV applies a KV node's changes in one batch. The batch is visible to
// reads at once; it is durable once syncWAL returns for a later call, or at
// once when sync is set.
func (e *Engine) applyKV(ops []kv.PersistOp, sync bool) error {
	if len(ops) == 0 {
		return nil
	}
	b := e.db.NewBatch()
	defer b.Close()
	var dKeys, dBytes int64
	gone := func(op kv.PersistOp) {
		if op.Had {
			dKeys--
			dBytes -= op.HadBytes
		}
	}
	for _, op := range ops {
		switch {
		case op.Put != nil && op.Put.Tomb && e.tombExpired(op.Put.Version):
			// A tombstone past its TTL, come back from a replica that
			// has not collected it yet (anti-entropy, a hint, read
			// repair): store it as collected, or replicas would keep
			// handing it back to each other.
			b.Delete(kvKey(e.pos(op.Put.Key), op.Put.Key), nil)
			gone(op)
		case op.Put != nil:
			b.Set(kvKey(e.pos(op.Put.Key), op.Put.Key), kv.AppendRecord(nil, op.Put), nil)
			gone(op)
			dKeys++
			dBytes += int64(len(op.Put.Key) + len(op.Put.Value))
		case op.Delete != nil:
			b.Delete(kvKey(e.pos(op.Delete), op.Delete), nil)
			gone(op)
		case op.Hint != nil:
			v, _ := msgpack.Marshal(op.Hint)
			b.Set(hintKey(op.Hint.Target, op.Hint.Rec.Key), v, nil)
		case op.DoneHint != nil:
			b.Delete(hintKey(op.DoneHint.Target, op.DoneHint.Rec.Key), nil)
		}
	}
	e.kvMu.Lock()
	defer e.kvMu.Unlock()
	if dKeys != 0 || dBytes != 0 {
		// The counts change in the same batch as the records.
		b.Set([]byte(kvCountKey), kvCountValue(e.kvKeys.Load()+dKeys, e.kvBytes.Load()+dBytes), nil)
	}
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	if err := b.Commit(opt); err != nil {
		return err
	}
	e.kvKeys.Add(dKeys)
	e.kvBytes.Add(dBytes)
	return nil
}

// kvCountKey holds the number of KV records and their bytes, kept in step
// with the records by applyKV.
const kvCountKey = "s/kvcount"

func kvCountValue(keys, bytes int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(keys)), uint64(bytes))
}

// loadKVCount reads the KV record counts, or counts the records once for
// a data directory written before the counts were kept.
func (e *Engine) loadKVCount() error {
	v, closer, err := e.db.Get([]byte(kvCountKey))
	if err == nil {
		defer closer.Close()
		if len(v) != 16 {
			return fmt.Errorf("kv record count: %d bytes, want 16", len(v))
		}
		e.kvKeys.Store(int64(binary.BigEndian.Uint64(v)))
		e.kvBytes.Store(int64(binary.BigEndian.Uint64(v[8:])))
		return nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return err
	}
	keys, bytes, err := e.scanKVCount()
	if err != nil {
		return err
	}
	if err := e.db.Set([]byte(kvCountKey), kvCountValue(keys, bytes), pebble.Sync); err != nil {
		return err
	}
	e.kvKeys.Store(keys)
	e.kvBytes.Store(bytes)
	return nil
}

// tombExpired reports whether a tombstone of version v (a timestamp in
// nanoseconds) is older than the tombstone TTL, as kv.Node collects it.
func (e *Engine) tombExpired(v uint64) bool {
	if e.tombTTL == 0 {
		return false
	}
	now := uint64(time.Now().UnixNano())
	return now > v && now-v > e.tombTTL
}

// syncWAL makes every batch committed before the call durable: it appends a
// one-byte log record with a synced write, and the write-ahead log is
// sequential, so the fsync covers all that came before it.
func (e *Engine) syncWAL() error {
	return e.db.LogData([]byte{0}, pebble.Sync)
}

// hints loads the hints held for other nodes.
func (e *Engine) hints() ([]kv.Hint, error) {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("h/"), UpperBound: []byte("h0")})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []kv.Hint
	for it.First(); it.Valid(); it.Next() {
		var h kv.Hint
		if err := msgpack.Unmarshal(it.Value(), &h); err != nil {
			return nil, fmt.Errorf("decode hint: %w", err)
		}
		out = append(out, h)
	}
	return out, it.Error()
}

// hintCount counts the hints held for other nodes.
func (e *Engine) hintCount() int {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("h/"), UpperBound: []byte("h0")})
	if err != nil {
		return 0
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		n++
	}
	return n
}

// kvCount returns the number of KV records (tombstones included) and
// their key and value bytes.
func (e *Engine) kvCount() (n int, size int64) {
	return int(e.kvKeys.Load()), e.kvBytes.Load()
}

// scanKVCount counts KV records and their bytes by reading them all.
func (e *Engine) scanKVCount() (n, size int64, err error) {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("k/"), UpperBound: []byte("k0")})
	if err != nil {
		return 0, 0, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		r, err := kv.DecodeRecord(it.Value(), true)
		if err != nil {
			continue
		}
		n++
		size += int64(len(r.Key) + len(r.Value))
	}
	return n, size, it.Error()
}

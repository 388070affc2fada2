package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/vmihailenco/msgpack/v5"

	"tide/kv"
)

// The KV namespace lives in the node's pebble database beside the file
// metadata: records under "k/" + position + key, so a ring range is one
// ordered scan, hints under "h/" + target + NUL + key, and writes held for
// other regions (the outbox) under "o/" + region + NUL + key, and Paxos
// acceptor state (lightweight transactions) under "p/" + key.
//
// A value of sepValueBytes or more is kept apart, under "v/" + position +
// key, and its record under "k/" is a stub (kv.AppendStub) that gives the
// value's length. Anti-entropy's digests, key-version lists and hand-off
// passes scan keys and versions only, so they read the small "k/" records
// and none of the large values; a scan that needs values walks "v/" in
// the same order beside "k/". Whether a value is kept apart follows from
// its length alone, so the length of what a key held before (PersistOp's
// HadBytes) tells whether a "v/" entry is to be deleted.
const sepValueBytes = 256

func kvKey(pos uint32, key []byte) []byte { return posKey('k', pos, key) }

func valueKey(pos uint32, key []byte) []byte { return posKey('v', pos, key) }

func posKey(prefix byte, pos uint32, key []byte) []byte {
	return appendPosKey(make([]byte, 0, 6+len(key)), prefix, pos, key)
}

func appendPosKey(b []byte, prefix byte, pos uint32, key []byte) []byte {
	b = append(b, prefix, '/')
	b = binary.BigEndian.AppendUint32(b, pos)
	return append(b, key...)
}

// outboxKey is where a write held for another region is kept.
func outboxKey(region string, key []byte) []byte {
	b := append([]byte("o/"+region), 0)
	return append(b, key...)
}

// paxosKey is where a key's Paxos acceptor state is kept.
func paxosKey(key []byte) []byte { return append([]byte("p/"), key...) }

// Paxos implements kv.PaxosStorage.
func (s kvStorage) Paxos(key []byte) (kv.PaxosState, bool, error) {
	v, closer, err := s.e.db.Get(paxosKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return kv.PaxosState{}, false, nil
	}
	if err != nil {
		return kv.PaxosState{}, false, err
	}
	defer closer.Close()
	var st kv.PaxosState
	if err := msgpack.Unmarshal(v, &st); err != nil {
		return kv.PaxosState{}, false, fmt.Errorf("decode paxos state of %q: %w", key, err)
	}
	return st, true, nil
}

func hintKey(target string, key []byte) []byte {
	b := append([]byte("h/"+target), 0)
	return append(b, key...)
}

// kvStorage adapts the engine to kv.Storage.
type kvStorage struct{ e *Engine }

// KV is the engine's KV records as a kv.Storage.
func (e *Engine) KV() kv.Storage { return kvStorage{e} }

// SetTombstoneTTL sets the KV tombstone TTL in nanoseconds: a tombstone
// older than this is not stored (0, the default, stores every one). Set
// it before the first ApplyKV.
func (e *Engine) SetTombstoneTTL(ttl uint64) { e.tombTTL = ttl }

// Get implements kv.Storage.
func (s kvStorage) Get(key []byte) (kv.Record, bool, error) {
	pos := s.e.pos(key)
	v, closer, err := s.e.db.Get(kvKey(pos, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return kv.Record{}, false, nil
	}
	if err != nil {
		return kv.Record{}, false, err
	}
	r, n, sep, err := kv.DecodeStored(v, false)
	closer.Close()
	if err != nil {
		return kv.Record{}, false, fmt.Errorf("decode kv record: %w", err)
	}
	if sep {
		v, closer, err := s.e.db.Get(valueKey(pos, key))
		if err != nil {
			return kv.Record{}, false, fmt.Errorf("kv value of %q: %w", key, err)
		}
		defer closer.Close()
		if len(v) != n {
			return kv.Record{}, false, fmt.Errorf("kv value of %q: %d bytes, its record says %d", key, len(v), n)
		}
		r.Value = append(make([]byte, 0, n), v...)
	}
	return r, true, nil
}

// Scan implements kv.Storage: records with positions in (from, to].
func (s kvStorage) Scan(from, to uint32, fn func(uint32, kv.Record) bool) error {
	return s.scan(from, to, false, fn)
}

// ScanVersions implements kv.VersionScanner: Scan without the values, and
// with keys that alias the iterator's memory. It reads no value kept
// apart.
func (s kvStorage) ScanVersions(from, to uint32, fn func(uint32, kv.Record) bool) error {
	return s.scan(from, to, true, func(pos uint32, r kv.Record) bool {
		r.Value = nil
		return fn(pos, r)
	})
}

// scan walks the records of positions (from, to]. Without versionsOnly,
// the values kept apart are read from "v/" beside them and copied out;
// with it, none is read, and keys alias the iterator's memory.
func (s kvStorage) scan(from, to uint32, versionsOnly bool, fn func(uint32, kv.Record) bool) error {
	scan := func(lo, hi uint64) (bool, error) {
		it, err := s.e.db.NewIter(&pebble.IterOptions{LowerBound: posBound('k', lo), UpperBound: posBound('k', hi)})
		if err != nil {
			return false, err
		}
		defer it.Close()
		var vit *pebble.Iterator // opened at the first value kept apart
		var vk []byte
		defer func() {
			if vit != nil {
				vit.Close()
			}
		}()
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			r, n, sep, err := kv.DecodeStored(it.Value(), versionsOnly)
			if err != nil {
				return false, fmt.Errorf("decode kv record %x: %w", k, err)
			}
			if sep && !versionsOnly {
				if vit == nil {
					if vit, err = s.e.db.NewIter(&pebble.IterOptions{LowerBound: posBound('v', lo), UpperBound: posBound('v', hi)}); err != nil {
						return false, err
					}
				}
				// Both walks go in the same order, so successive seeks
				// move forward (pebble then steps instead of seeking).
				vk = append(append(vk[:0], 'v'), k[1:]...)
				if !vit.SeekGE(vk) || !bytes.Equal(vit.Key(), vk) {
					if err := vit.Error(); err != nil {
						return false, err
					}
					return false, fmt.Errorf("kv record %x: its value is missing", k)
				}
				if len(vit.Value()) != n {
					return false, fmt.Errorf("kv record %x: value of %d bytes, its record says %d", k, len(vit.Value()), n)
				}
				r.Value = append(make([]byte, 0, n), vit.Value()...)
			}
			if !fn(binary.BigEndian.Uint32(k[2:6]), r) {
				return false, nil
			}
		}
		return true, it.Error()
	}
	switch {
	case from == to:
		_, err := scan(0, 1<<32)
		return err
	case from < to:
		_, err := scan(uint64(from)+1, uint64(to)+1)
		return err
	default: // wraps: (from, max] then [0, to]
		more, err := scan(uint64(from)+1, 1<<32)
		if err != nil || !more {
			return err
		}
		_, err = scan(0, uint64(to)+1)
		return err
	}
}

// posBound is the first key of position p under prefix ('k' or 'v'), or
// the end of the prefix for p = 1<<32.
func posBound(prefix byte, p uint64) []byte {
	if p > 0xffffffff {
		return []byte{prefix, '0'}
	}
	return binary.BigEndian.AppendUint32([]byte{prefix, '/'}, uint32(p))
}

// ApplyKV applies a KV node's changes in one batch. The batch is visible to
// reads at once; it is durable once SyncWAL returns for a later call, or at
// once when sync is set.
func (e *Engine) ApplyKV(ops []kv.PersistOp, sync bool) error {
	if len(ops) == 0 {
		return nil
	}
	if n := addedBytes(ops); n > 0 {
		if err := e.checkFloor(n); err != nil {
			return err
		}
	}
	e.kvMu.Lock()
	defer e.kvMu.Unlock()
	var dKeys, dBytes int64
	if rest, groups := e.splitBulk(ops); len(groups) > 0 {
		if err := e.ingestKV(groups); err != nil {
			// Write them through the batch instead: each is the last
			// write of its key in the round, so it may come last.
			slog.Warn("kv: ingesting bulk records failed; writing them through the log", "err", err)
		} else {
			for _, g := range groups {
				for _, b := range g {
					dKeys++
					dBytes += b.r.Size()
				}
			}
			e.ingested.Add(dBytes)
			ops = rest
		}
	}
	// One batch serves round after round, growing as a round needs: a
	// fresh one per round cost a coordinator 2-3% of its CPU in
	// allocating and clearing its buffer.
	b := e.kvBatch
	if b == nil {
		b = e.db.NewBatchWithSize(64 << 10)
		e.kvBatch = b
	}
	keep := false
	defer func() {
		if !keep || len(b.Repr()) > maxKeptBatch {
			// A failed commit, or a round of bulk writes: not worth
			// holding on to.
			b.Close()
			e.kvBatch = nil
			return
		}
		b.Reset()
	}()
	// gone accounts for what key held before, and deletes its value kept
	// apart unless keep (a new value kept apart replaces it).
	gone := func(pos uint32, key []byte, op kv.PersistOp, keep bool) {
		if !op.Had {
			return
		}
		dKeys--
		dBytes -= op.HadBytes
		if !keep && op.HadBytes-int64(len(key)) >= sepValueBytes {
			b.Delete(valueKey(pos, key), nil)
		}
	}
	for _, op := range ops {
		switch {
		case op.Put != nil && op.Put.Tomb && e.tombExpired(*op.Put):
			// A tombstone past its TTL, come back from a replica that
			// has not collected it yet (anti-entropy, a hint, read
			// repair): store it as collected, or replicas would keep
			// handing it back to each other.
			pos := e.pos(op.Put.Key)
			b.Delete(kvKey(pos, op.Put.Key), nil)
			gone(pos, op.Put.Key, op, false)
		case op.Put != nil:
			r := op.Put
			pos := e.pos(r.Key)
			sep := len(r.Value) >= sepValueBytes
			gone(pos, r.Key, op, sep)
			if sep {
				d := b.SetDeferred(6+len(r.Key), len(r.Value))
				d.Key[0], d.Key[1] = 'v', '/'
				binary.BigEndian.PutUint32(d.Key[2:], pos)
				copy(d.Key[6:], r.Key)
				copy(d.Value, r.Value)
				d.Finish()
				e.recBuf = kv.AppendStub(e.recBuf[:0], r)
			} else {
				e.recBuf = kv.AppendRecord(e.recBuf[:0], r)
			}
			// The batch copies key and value: the scratch buffers serve
			// every op of the round.
			e.keyBuf = appendPosKey(e.keyBuf[:0], 'k', pos, r.Key)
			b.Set(e.keyBuf, e.recBuf, nil)
			dKeys++
			dBytes += int64(len(r.Key) + len(r.Value))
		case op.Delete != nil:
			pos := e.pos(op.Delete)
			b.Delete(kvKey(pos, op.Delete), nil)
			b.Delete(paxosKey(op.Delete), nil)
			gone(pos, op.Delete, op, false)
		case op.Paxos != nil:
			v, _ := msgpack.Marshal(op.Paxos)
			b.Set(paxosKey(op.Paxos.Key), v, nil)
		case op.Hint != nil:
			v, _ := msgpack.Marshal(op.Hint)
			b.Set(hintKey(op.Hint.Target, op.Hint.Rec.Key), v, nil)
		case op.DoneHint != nil:
			b.Delete(hintKey(op.DoneHint.Target, op.DoneHint.Rec.Key), nil)
		case op.Outbox != nil:
			v, _ := msgpack.Marshal(op.Outbox)
			b.Set(outboxKey(op.Outbox.Target, op.Outbox.Rec.Key), v, nil)
		case op.DoneOutbox != nil:
			b.Delete(outboxKey(op.DoneOutbox.Target, op.DoneOutbox.Rec.Key), nil)
		}
	}
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
	keep = true
	e.kvKeys.Add(dKeys)
	e.kvBytes.Add(dBytes)
	return nil
}

// addedBytes is what ops add to the disk, roughly: 0 for a round of
// deletes and finished hints, which ApplyKV commits even on a full disk
// (they are how space returns).
func addedBytes(ops []kv.PersistOp) int64 {
	var n int64
	for _, op := range ops {
		switch {
		case op.Put != nil && !op.Put.Tomb:
			n += int64(len(op.Put.Key) + len(op.Put.Value))
		case op.Hint != nil:
			n += int64(len(op.Hint.Rec.Key) + len(op.Hint.Rec.Value))
		case op.Outbox != nil:
			n += int64(len(op.Outbox.Rec.Key) + len(op.Outbox.Rec.Value))
		}
	}
	return n
}

// maxKeptBatch bounds the batch ApplyKV keeps for the next round.
const maxKeptBatch = 4 << 20

// kvCountKey holds the number of KV records and their bytes, kept in step
// with the records by ApplyKV.
const kvCountKey = "s/kvcount"

func kvCountValue(keys, bytes int64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(keys)), uint64(bytes))
}

// loadKVCount reads the KV record counts, or counts the records once for
// a data directory written before the counts were kept.
func (e *Engine) loadKVCount() error {
	recount, err := e.recountNeeded()
	if err != nil {
		return err
	}
	v, closer, err := e.db.Get([]byte(kvCountKey))
	if err == nil && recount {
		closer.Close()
		err = pebble.ErrNotFound
	}
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
	b := e.db.NewBatch()
	defer b.Close()
	b.Set([]byte(kvCountKey), kvCountValue(keys, bytes), nil)
	b.Delete([]byte(kvRecountKey), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	e.kvKeys.Store(keys)
	e.kvBytes.Store(bytes)
	return nil
}

// tombExpired reports whether a tombstone is older than the tombstone
// TTL, as kv.Node collects it.
func (e *Engine) tombExpired(r kv.Record) bool {
	if e.tombTTL == 0 {
		return false
	}
	return r.TombCollectable(uint64(time.Now().UnixNano()), e.tombTTL)
}

// SyncWAL makes every batch committed before the call durable: it appends a
// one-byte log record with a synced write, and the write-ahead log is
// sequential, so the fsync covers all that came before it.
func (e *Engine) SyncWAL() error {
	return e.db.LogData([]byte{0}, pebble.Sync)
}

// ClearKV deletes every KV record, value and hint, durably: the seed's
// clear_cache. The KV driver calls it between rounds.
func (e *Engine) ClearKV() error {
	e.kvMu.Lock()
	defer e.kvMu.Unlock()
	b := e.db.NewBatch()
	defer b.Close()
	for _, p := range []string{"k", "v", "h", "o", "p"} {
		if err := b.DeleteRange([]byte(p+"/"), []byte(p+"0"), nil); err != nil {
			return err
		}
	}
	b.Set([]byte(kvCountKey), kvCountValue(0, 0), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("clear kv data: %w", err)
	}
	e.kvKeys.Store(0)
	e.kvBytes.Store(0)
	return nil
}

// Hints loads the hints held for other nodes.
func (e *Engine) Hints() ([]kv.Hint, error) { return e.loadHints("h/", "h0", "hint") }

// Outbox loads the writes held for other regions.
func (e *Engine) Outbox() ([]kv.Hint, error) { return e.loadHints("o/", "o0", "outbox entry") }

// loadHints decodes every kv.Hint stored in [lower, upper).
func (e *Engine) loadHints(lower, upper, what string) ([]kv.Hint, error) {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte(lower), UpperBound: []byte(upper)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []kv.Hint
	for it.First(); it.Valid(); it.Next() {
		var h kv.Hint
		if err := msgpack.Unmarshal(it.Value(), &h); err != nil {
			return nil, fmt.Errorf("decode %s %q: %w", what, it.Key(), err)
		}
		out = append(out, h)
	}
	return out, it.Error()
}

// HintCount counts the hints held for other nodes.
func (e *Engine) HintCount() int {
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

// HintsByTarget returns how many hints are held for each target node.
func (e *Engine) HintsByTarget() map[string]int {
	out := map[string]int{}
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("h/"), UpperBound: []byte("h0")})
	if err != nil {
		return out
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[2:]
		if i := bytes.IndexByte(k, 0); i >= 0 {
			out[string(k[:i])]++
		}
	}
	return out
}

// KVCount returns the number of KV records (tombstones included) and
// their key and value bytes.
func (e *Engine) KVCount() (n int, size int64) {
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
		r, vlen, _, err := kv.DecodeStored(it.Value(), true)
		if err != nil {
			continue
		}
		n++
		size += int64(len(r.Key) + len(r.Value) + vlen)
	}
	return n, size, it.Error()
}

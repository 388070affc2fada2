// Package engine is a storage node's disk: one pebble database per node
// (under DATA/meta) and the file bodies beside it (DATA/files). It holds
// the file store's metadata and bodies (Meta, Writer: a file is written,
// fsynced, renamed into place, then its metadata committed), the node's
// own state (PutState, State), and the key-value service's records,
// hints and region outbox (kvstore.go: the engine as a kv.Storage,
// ApplyKV for a round of writes, SyncWAL for group commit), with bulk
// transfers written as sstables and ingested (kvingest.go).
//
// It may import the pure core kv (for its record and hint encodings),
// chord (for ring positions) and store/status (ErrNotFound answers 404);
// no other tide package, and nothing of the network.
package engine

import (
	"bufio"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"

	"tide/chord"
	"tide/store/status"
)

// Meta describes one stored file or tombstone.
type Meta struct {
	Name    string   `json:"name"`
	Key     chord.ID `json:"key"`
	Size    int64    `json:"size"`
	MD5     string   `json:"md5,omitempty"`
	Version uint64   `json:"version"`
	Deleted bool     `json:"deleted,omitempty"`
}

// Engine keeps files under dir/files and their metadata in a pebble
// database under dir/meta. A file is replaced atomically: the new bytes are
// written and fsynced to a temporary file, renamed over the old one, and
// only then is the metadata committed with a synced write.
type Engine struct {
	dir  string
	pos  func([]byte) uint32 // the cluster's partitioner
	db   *pebble.DB
	mu   sync.Mutex // serialises commits so version checks and renames agree
	used atomic.Int64
	nfil atomic.Int64
	// KV record counts (see ApplyKV); kvMu orders their updates.
	kvKeys, kvBytes atomic.Int64
	kvMu            sync.Mutex
	keyBuf, recBuf  []byte // applyKV's scratch space, under kvMu
	kvBatch         *pebble.Batch
	// tombTTL is the KV tombstone TTL in nanoseconds: a tombstone older
	// than this is not stored (0 stores every tombstone).
	tombTTL uint64
	opts    *pebble.Options
	// recountMarked: this process has ingested, and kvRecountKey is set.
	recountMarked bool
	// ingestBuf buffers the files ingestKV writes, one at a time (under
	// kvMu): a fresh 1 MiB buffer per file cost the receiving node of a
	// join a tenth of its CPU in allocation and zeroing.
	ingestBuf *bufio.Writer
	// ingested counts the KV bytes written by ingestion (kvingest.go).
	ingested atomic.Int64
	stalls   *stallStats
	// space refuses writes while the disk is nearly full (space.go).
	space space
}

// stallStats counts pebble's write stalls: writes held back because
// flushes or compactions fell behind. A stall holds the KV driver, and
// one that outlasts the quorum time-out fails the writes in flight.
type stallStats struct {
	count   atomic.Int64
	nanos   atomic.Int64
	mu      sync.Mutex
	began   time.Time
	reason  string
	lastLog time.Time
}

func (s *stallStats) listener() *pebble.EventListener {
	return &pebble.EventListener{
		WriteStallBegin: func(i pebble.WriteStallBeginInfo) {
			s.mu.Lock()
			s.began, s.reason = time.Now(), i.Reason
			s.mu.Unlock()
			s.count.Add(1)
		},
		WriteStallEnd: func() {
			s.mu.Lock()
			d := time.Since(s.began)
			reason := s.reason
			logIt := d > 500*time.Millisecond && time.Since(s.lastLog) > 10*time.Second
			if logIt {
				s.lastLog = time.Now()
			}
			s.mu.Unlock()
			s.nanos.Add(int64(d))
			if logIt {
				slog.Warn("storage write stall: writes waited for flushes or compactions", "waited", d.Round(time.Millisecond), "reason", reason)
			}
		},
	}
}

// Stalls counts the write stalls so far: writes held back because
// flushes or compactions fell behind.
func (e *Engine) Stalls() int64 { return e.stalls.count.Load() }

// StallTime is how long writes were held back by write stalls so far.
func (e *Engine) StallTime() time.Duration { return time.Duration(e.stalls.nanos.Load()) }

// Ingested counts the KV bytes written by ingestion (kvingest.go).
func (e *Engine) Ingested() int64 { return e.ingested.Load() }

// Compactions reports the compactions pebble owes and runs.
func (e *Engine) Compactions() Compactions {
	c := e.db.Metrics().Compact
	return Compactions{EstimatedDebt: c.EstimatedDebt, NumInProgress: c.NumInProgress}
}

// Compactions is the engine's compaction backlog.
type Compactions struct {
	// EstimatedDebt is the bytes pebble estimates it must compact to bring
	// its levels back into shape (high after a bulk load).
	EstimatedDebt uint64
	// NumInProgress is the compactions under way.
	NumInProgress int64
}

// ErrNotFound is returned for a name with no live file; it answers 404.
var ErrNotFound error = &status.Error{Code: http.StatusNotFound, Msg: "file not found"}

// OpenEngine opens or creates the engine in dir; pos places names and keys
// on the ring.
func Open(dir string, pos func([]byte) uint32) (*Engine, error) {
	for _, d := range []string{"files", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", filepath.Join(dir, d), err)
		}
	}
	// Temporary files left by a crash are incomplete by definition.
	if tmps, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, t := range tmps {
			os.Remove(filepath.Join(dir, "tmp", t.Name()))
		}
	}
	opts := pebbleOptions()
	st := &stallStats{}
	opts.EventListener = st.listener()
	db, err := pebble.Open(filepath.Join(dir, "meta"), opts)
	opts.Cache.Unref() // the DB holds its own reference
	if err != nil {
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if pid := lockHolder(filepath.Join(dir, "meta", "LOCK")); pid > 0 {
				holder = fmt.Sprintf("another process (pid %d)", pid)
			}
			return nil, fmt.Errorf("data directory %s is in use by %s: stop it, or give this node another --data-dir", dir, holder)
		}
		return nil, fmt.Errorf("open metadata in %s: %w", dir, err)
	}
	e := &Engine{dir: dir, db: db, pos: pos, opts: opts, stalls: st}
	e.space.dir = dir
	e.SetStatfs(statfs)
	if err := e.SetDiskReserve(-1); err != nil {
		db.Close()
		return nil, err
	}
	if err := e.loadKVCount(); err != nil {
		db.Close()
		return nil, fmt.Errorf("kv record count in %s: %w", dir, err)
	}
	err = e.Scan(0, 0, func(m Meta) bool {
		if !m.Deleted {
			e.used.Add(m.Size)
			e.nfil.Add(1)
		}
		return true
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return e, nil
}

// Close closes the metadata database.
func (e *Engine) Close() error {
	e.kvMu.Lock()
	err := e.clearRecount()
	if e.kvBatch != nil {
		e.kvBatch.Close()
		e.kvBatch = nil
	}
	e.kvMu.Unlock()
	if cerr := e.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// Used returns the bytes of live files stored.
func (e *Engine) Used() int64 { return e.used.Load() }

// Files returns the number of live files stored.
func (e *Engine) Files() int64 { return e.nfil.Load() }

// KeyOf is a file name's ring position.
func (e *Engine) KeyOf(name string) chord.ID { return chord.ID(e.pos([]byte(name))) }

func metaKey(key chord.ID, name string) []byte {
	b := make([]byte, 0, 6+len(name))
	b = append(b, 'm', '/')
	b = binary.BigEndian.AppendUint32(b, uint32(key))
	return append(b, name...)
}

func (e *Engine) path(name string) string {
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:])
	return filepath.Join(e.dir, "files", h[:2], h)
}

// Get returns the metadata of name, including a tombstone.
func (e *Engine) Get(name string) (Meta, bool, error) {
	v, closer, err := e.db.Get(metaKey(e.KeyOf(name), name))
	if errors.Is(err, pebble.ErrNotFound) {
		return Meta{}, false, nil
	}
	if err != nil {
		return Meta{}, false, fmt.Errorf("read metadata of %q: %w", name, err)
	}
	defer closer.Close()
	var m Meta
	if err := json.Unmarshal(v, &m); err != nil {
		return Meta{}, false, fmt.Errorf("decode metadata of %q: %w", name, err)
	}
	return m, true, nil
}

// Open returns a live file for reading.
func (e *Engine) Open(name string) (Meta, *os.File, error) {
	m, ok, err := e.Get(name)
	if err != nil {
		return Meta{}, nil, err
	}
	if !ok || m.Deleted {
		return Meta{}, nil, ErrNotFound
	}
	f, err := os.Open(e.path(name))
	if err != nil {
		return Meta{}, nil, fmt.Errorf("open %q: %w", name, err)
	}
	return m, f, nil
}

// Scan calls fn for every entry whose key is in (from, to], in key order;
// from == to scans everything. fn returns false to stop.
func (e *Engine) Scan(from, to chord.ID, fn func(Meta) bool) error {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("m/"), UpperBound: []byte("m0")})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) < 6 {
			continue
		}
		id := chord.ID(binary.BigEndian.Uint32(k[2:6]))
		if from != to && !chord.InHalfOpen(id, from, to) {
			continue
		}
		var m Meta
		if err := json.Unmarshal(it.Value(), &m); err != nil {
			return fmt.Errorf("decode metadata %q: %w", k, err)
		}
		if !fn(m) {
			return nil
		}
	}
	return it.Error()
}

// Writer receives a file's bytes into a temporary file.
type Writer struct {
	e    *Engine
	f    *os.File
	h    hash.Hash
	n    int64
	done bool
}

// Create starts writing a new version of a file.
func (e *Engine) Create() (*Writer, error) {
	f, err := os.CreateTemp(filepath.Join(e.dir, "tmp"), "up-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	return &Writer{e: e, f: f, h: md5.New()}, nil
}

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	return n, err
}

// Size is the number of bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// Abort discards the bytes written.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

// Commit makes the written bytes the file name at version. If the engine
// already holds name at an equal or newer version, the write is discarded
// and Commit reports false.
func (w *Writer) Commit(name string, version uint64) (Meta, bool, error) {
	defer w.Abort()
	if err := w.f.Sync(); err != nil {
		return Meta{}, false, fmt.Errorf("sync %q: %w", name, err)
	}
	if err := w.f.Close(); err != nil {
		return Meta{}, false, fmt.Errorf("close %q: %w", name, err)
	}
	m := Meta{Name: name, Key: w.e.KeyOf(name), Size: w.n, MD5: hex.EncodeToString(w.h.Sum(nil)), Version: version}
	e := w.e
	e.mu.Lock()
	defer e.mu.Unlock()
	old, had, err := e.Get(name)
	if err != nil {
		return Meta{}, false, err
	}
	if had && old.Version >= version {
		return old, false, nil
	}
	dst := e.path(name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Meta{}, false, err
	}
	if err := os.Rename(w.f.Name(), dst); err != nil {
		return Meta{}, false, fmt.Errorf("install %q: %w", name, err)
	}
	w.done = true
	syncDir(filepath.Dir(dst))
	if err := e.putMeta(m); err != nil {
		return Meta{}, false, err
	}
	e.account(old, had, m)
	return m, true, nil
}

// Delete records a tombstone for name at version and removes its bytes.
// An older version than the one held is ignored.
func (e *Engine) Delete(name string, version uint64) (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old, had, err := e.Get(name)
	if err != nil {
		return false, err
	}
	if had && old.Version >= version {
		return false, nil
	}
	m := Meta{Name: name, Key: e.KeyOf(name), Version: version, Deleted: true}
	if err := e.putMeta(m); err != nil {
		return false, err
	}
	os.Remove(e.path(name))
	e.account(old, had, m)
	return true, nil
}

// Drop forgets name entirely, without a tombstone: used once a file has
// been handed to the nodes that now own it.
func (e *Engine) Drop(name string, version uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	old, had, err := e.Get(name)
	if err != nil || !had || old.Version != version {
		return err
	}
	if err := e.db.Delete(metaKey(old.Key, name), pebble.Sync); err != nil {
		return fmt.Errorf("drop %q: %w", name, err)
	}
	os.Remove(e.path(name))
	if !old.Deleted {
		e.used.Add(-old.Size)
		e.nfil.Add(-1)
	}
	return nil
}

func (e *Engine) putMeta(m Meta) error {
	v, _ := json.Marshal(m)
	if !m.Deleted {
		// The body is on disk already; this guards pebble's log.
		if err := e.checkFloor(int64(len(v))); err != nil {
			return err
		}
	}
	if err := e.db.Set(metaKey(m.Key, m.Name), v, pebble.Sync); err != nil {
		return fmt.Errorf("write metadata of %q: %w", m.Name, err)
	}
	return nil
}

func (e *Engine) account(old Meta, had bool, m Meta) {
	if had && !old.Deleted {
		e.used.Add(-old.Size)
		e.nfil.Add(-1)
	}
	if !m.Deleted {
		e.used.Add(m.Size)
		e.nfil.Add(1)
	}
}

// PutState stores a small named blob of node state durably.
func (e *Engine) PutState(name string, v []byte) error {
	return e.db.Set([]byte("s/"+name), v, pebble.Sync)
}

// DeleteState forgets a blob stored with PutState.
func (e *Engine) DeleteState(name string) error {
	return e.db.Delete([]byte("s/"+name), pebble.Sync)
}

// State returns a blob stored with PutState, or nil.
func (e *Engine) State(name string) ([]byte, error) {
	v, closer, err := e.db.Get([]byte("s/" + name))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// CopyTo writes a live file's bytes to w.
func (e *Engine) CopyTo(name string, w io.Writer) (Meta, error) {
	m, f, err := e.Open(name)
	if err != nil {
		return Meta{}, err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return m, err
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// pebbleOptions tunes pebble for the KV layer's load: bloom filters so
// that a write's look-up of the key's current version (which misses for
// every new key) does not read and decompress data blocks; a block cache
// large enough for the hot part of the data; and memtables that hold many
// rounds of writes before a flush. (4 MiB memtables made random-key SETs
// 23% faster, since skiplist inserts then hit the CPU cache, but a join
// right after loading 1 GiB of 16 KiB values migrated at 54-71 MB/s
// instead of 94-106, alternating runs; presumably the load leaves many
// more small level-0 files to compact.) The caller drops its reference
// to the cache once the DB is open.
func pebbleOptions() *pebble.Options {
	o := &pebble.Options{Logger: quietLogger{}, Cache: pebble.NewCache(128 << 20), MemTableSize: 32 << 20,
		// Room to absorb bursts while flushes and compactions catch up,
		// rather than stalling writes at pebble's defaults (2 memtables,
		// 12 level-0 files).
		MemTableStopWritesThreshold: 4, L0StopWritesThreshold: 24,
		// The newest on-disk format: columnar sstable blocks. (It includes
		// FormatFlushableIngest: ingestions that overlap the memtable
		// queue behind it instead of flushing it; see kvingest.go.)
		FormatMajorVersion: pebble.FormatNewest}
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		o.Levels[i].FilterType = pebble.TableFilter
	}
	o.EnsureDefaults()
	return o
}

// lockHolder returns the pid holding a lock on the file at path, from
// /proc/locks (Linux), or 0 if it cannot tell.
func lockHolder(path string) int {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	ino := strconv.FormatUint(uint64(st.Ino), 10)
	for _, line := range strings.Split(string(b), "\n") {
		// 1: POSIX  ADVISORY  WRITE 1234 fd:01:5678 0 EOF
		f := strings.Fields(line)
		if len(f) >= 6 && strings.HasSuffix(f[5], ":"+ino) {
			if pid, err := strconv.Atoi(f[4]); err == nil {
				return pid
			}
		}
	}
	return 0
}

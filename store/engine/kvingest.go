package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"tide/kv"
)

// Records that arrive in bulk (range streams, hand-offs: PersistOp.Bulk)
// are written into sstables and ingested, as CockroachDB applies range
// snapshots, instead of going through the write-ahead log, the memtable,
// a flush and compactions. A stream arrives in key order, so each
// sender's file covers a span no other file covers, and pebble places it
// straight in the bottom level: the data is written once.
//
// Ingested entries take sequence numbers above everything already in the
// database, so only records that are the only write of their key in the
// round, and whose key held nothing before it (kv.Node checked that the
// record is the newest it knows), are ingested; the rest of the round
// goes through a batch committed after the ingestion.

const (
	// ingestMinBytes: a round's bulk records smaller than this go through
	// the batch, as do a sender's smaller than ingestGroupMinBytes: an
	// ingestion costs an fsync of each file and one of the manifest.
	ingestMinBytes      = 1 << 20
	ingestGroupMinBytes = 256 << 10
	// kvRecountKey marks a database whose record counts may be off: the
	// counts change in the batch after an ingestion, and a crash between
	// the two leaves them behind the records. It is set before the first
	// ingestion of a process and cleared on a clean close; the counts are
	// taken again by a scan on open while it is set.
	kvRecountKey = "s/kvrecount"
)

var ingestSeq atomic.Uint64

// bulkRecord is a record to ingest with its pebble key, computed once.
type bulkRecord struct {
	key []byte
	r   *kv.Record
}

// ingestible reports whether op may be ingested, the round's other writes
// aside: a new key's live record, brought by a push.
func ingestible(op kv.PersistOp) bool {
	return op.Bulk != "" && op.Put != nil && !op.Had && !op.Put.Tomb
}

// splitBulk takes the records of ops that can be ingested out of ops: by
// sender, sorted in key order. It returns ops unchanged when the round
// has too few of them.
func (e *Engine) splitBulk(ops []kv.PersistOp) (rest []kv.PersistOp, groups [][]bulkRecord) {
	var total int64
	for _, op := range ops {
		if ingestible(op) {
			total += op.Put.Size()
		}
	}
	if total < ingestMinBytes {
		return ops, nil
	}
	// Only a key written once in the round: the batch with the round's
	// other writes commits after the ingestion, so its writes would win
	// over an ingested record whatever their order in the round.
	writes := make(map[string]int, len(ops))
	for _, op := range ops {
		switch {
		case op.Put != nil:
			writes[string(op.Put.Key)]++
		case op.Delete != nil:
			writes[string(op.Delete)]++
		}
	}
	bySender := map[string][]*kv.Record{}
	size := map[string]int64{}
	var order []string
	for _, op := range ops {
		if !ingestible(op) || writes[string(op.Put.Key)] != 1 {
			continue
		}
		if _, ok := bySender[op.Bulk]; !ok {
			order = append(order, op.Bulk)
		}
		bySender[op.Bulk] = append(bySender[op.Bulk], op.Put)
		size[op.Bulk] += op.Put.Size()
	}
	take := map[*kv.Record]bool{}
	for _, from := range order {
		if size[from] < ingestGroupMinBytes {
			continue
		}
		g := make([]bulkRecord, len(bySender[from]))
		for i, r := range bySender[from] {
			take[r] = true
			g[i] = bulkRecord{kvKey(e.pos(r.Key), r.Key), r}
		}
		slices.SortFunc(g, compareBulk)
		groups = append(groups, g)
	}
	if len(groups) == 0 {
		return ops, nil
	}
	rest = make([]kv.PersistOp, 0, len(ops)-len(take))
	for _, op := range ops {
		if op.Put == nil || !take[op.Put] {
			rest = append(rest, op)
		}
	}
	// Files of one ingestion must not overlap: senders whose spans
	// overlap (hand-offs, pulls) share one file.
	slices.SortFunc(groups, func(a, b []bulkRecord) int { return compareBulk(a[0], b[0]) })
	merged := groups[:1]
	for _, g := range groups[1:] {
		prev := merged[len(merged)-1]
		if compareBulk(g[0], prev[len(prev)-1]) <= 0 {
			all := append(slices.Clone(prev), g...)
			slices.SortFunc(all, compareBulk)
			merged[len(merged)-1] = all
			continue
		}
		merged = append(merged, g)
	}
	return rest, merged
}

func compareBulk(a, b bulkRecord) int { return bytes.Compare(a.key, b.key) }

// ingestKV writes groups (each sorted, spans apart) into sstables, a file
// of records and a file of values kept apart per group, and ingests them.
func (e *Engine) ingestKV(groups [][]bulkRecord) error {
	if !e.recountMarked {
		if err := e.db.Set([]byte(kvRecountKey), nil, pebble.Sync); err != nil {
			return err
		}
		e.recountMarked = true
	}
	format := e.db.FormatMajorVersion().MaxTableFormat()
	var paths []string
	defer func() {
		for _, p := range paths {
			os.Remove(p) // ingested files are gone already
		}
	}()
	write := func(fill func(w *sstable.Writer) error) error {
		path := filepath.Join(e.dir, "tmp", fmt.Sprintf("ingest-%d-%d.sst", os.Getpid(), ingestSeq.Add(1)))
		f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return err
		}
		paths = append(paths, path)
		if e.ingestBuf == nil {
			e.ingestBuf = bufio.NewWriterSize(f, 1<<20)
		}
		e.ingestBuf.Reset(f)
		w := sstable.NewWriter(&ingestWritable{f: f, bw: e.ingestBuf}, e.opts.MakeWriterOptions(6, format))
		if err := fill(w); err != nil {
			w.Close()
			return err
		}
		return w.Close() // syncs the file
	}
	var buf []byte
	for _, g := range groups {
		apart := 0
		err := write(func(w *sstable.Writer) error {
			for _, b := range g {
				if len(b.r.Value) >= sepValueBytes {
					apart++
					buf = kv.AppendStub(buf[:0], b.r)
				} else {
					buf = kv.AppendRecord(buf[:0], b.r)
				}
				if err := w.Set(b.key, buf); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if apart == 0 {
			continue
		}
		err = write(func(w *sstable.Writer) error {
			var vk []byte
			for _, b := range g {
				if len(b.r.Value) >= sepValueBytes {
					// The value's key is the record's under 'v'.
					vk = append(append(vk[:0], 'v'), b.key[1:]...)
					if err := w.Set(vk, b.r.Value); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := e.db.Ingest(context.Background(), paths); err != nil {
		return fmt.Errorf("ingest %d files: %w", len(paths), err)
	}
	paths = nil
	return nil
}

// ingestWritable writes an sstable to be ingested through a 1 MiB buffer
// (Engine.ingestBuf). Pebble's own file writable buffers 4 KiB, so that
// every block of a large value (a block each) costs a write system call,
// which was most of a receiving node's CPU during a join.
type ingestWritable struct {
	f  vfs.File
	bw *bufio.Writer
}

var _ objstorage.Writable = (*ingestWritable)(nil)

func (w *ingestWritable) Write(p []byte) error {
	_, err := w.bw.Write(p)
	return err
}

// Finish flushes, syncs and closes the file.
func (w *ingestWritable) Finish() error {
	err := w.bw.Flush()
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (w *ingestWritable) Abort() {
	w.bw.Reset(nil) // what is buffered is dropped
	w.f.Close()
}

// clearRecount removes the recount mark at a clean close: every batch
// committed before this synced write is durable with it.
func (e *Engine) clearRecount() error {
	if !e.recountMarked {
		return nil
	}
	return e.db.Delete([]byte(kvRecountKey), pebble.Sync)
}

// recountNeeded reports whether an ingestion may have left the counts
// behind the records.
func (e *Engine) recountNeeded() (bool, error) {
	_, closer, err := e.db.Get([]byte(kvRecountKey))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"tide/kv"
)

// The KV record counts follow puts, overwrites, tombstones and deletes,
// and survive a restart; a data directory without them is counted once.
func TestKVCountsKept(t *testing.T) {
	dir := t.TempDir()
	pos := kv.Partitioners["md5-low32"]
	e, err := Open(dir, pos)
	if err != nil {
		t.Fatal(err)
	}
	rec := func(k, v string, ver uint64, tomb bool) *kv.Record {
		return &kv.Record{Key: []byte(k), Value: []byte(v), Version: ver, Tomb: tomb}
	}
	steps := [][]kv.PersistOp{
		{{Put: rec("a", "1234", 1, false)}, {Put: rec("b", "56", 1, false)}},
		{{Put: rec("a", "7", 2, false), Had: true, HadBytes: 5}},
		{{Put: rec("b", "", 3, true), Had: true, HadBytes: 3}, {Put: rec("c", "xyz", 1, false)}},
		{{Delete: []byte("b"), Had: true, HadBytes: 1}},
	}
	for i, ops := range steps {
		if err := e.ApplyKV(ops, false); err != nil {
			t.Fatal(err)
		}
		keys, bytes := e.KVCount()
		sk, sb, err := e.scanKVCount()
		if err != nil || int64(keys) != sk || bytes != sb {
			t.Fatalf("after step %d: counted %d records of %d bytes, a scan finds %d of %d (%v)", i, keys, bytes, sk, sb, err)
		}
	}
	// ScanVersions sees what Scan sees, without the values.
	var full, meta []string
	kvStorage{e}.Scan(0, 0, func(p uint32, r kv.Record) bool {
		full = append(full, fmt.Sprint(p, string(r.Key), r.Version, r.Tomb))
		return true
	})
	kvStorage{e}.ScanVersions(0, 0, func(p uint32, r kv.Record) bool {
		if r.Value != nil {
			t.Errorf("ScanVersions passed the value of %s", r.Key)
		}
		meta = append(meta, fmt.Sprint(p, string(r.Key), r.Version, r.Tomb))
		return true
	})
	if len(full) != 2 || strings.Join(full, ";") != strings.Join(meta, ";") {
		t.Fatalf("Scan saw %q, ScanVersions %q", full, meta)
	}
	e.Close()
	e, err = Open(dir, pos)
	if err != nil {
		t.Fatal(err)
	}
	if keys, bytes := e.KVCount(); keys != 2 || bytes != 2+4 {
		t.Fatalf("after a restart: %d records of %d bytes, want 2 of 6", keys, bytes)
	}
	// Without the stored counts (a directory from before them), the
	// records are counted when the engine opens.
	if err := e.db.Delete([]byte(kvCountKey), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e, err = Open(dir, pos)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if keys, bytes := e.KVCount(); keys != 2 || bytes != 6 {
		t.Fatalf("counted on open: %d records of %d bytes, want 2 of 6", keys, bytes)
	}
}

// TestKVLargeValuesKeptApart drives the engine with random puts,
// overwrites, tombstones and deletes of values on both sides of
// sepValueBytes, and checks Get, Scan and ScanVersions against a model
// after each batch, and that no value kept apart outlives its record.
func TestKVLargeValuesKeptApart(t *testing.T) {
	pos := kv.Partitioners["md5-low32"]
	e, err := Open(t.TempDir(), pos)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	st := kvStorage{e}
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[string]kv.Record{}
	keys := []string{"a", "b", "c", "d", "e\x00\xff", "f"}
	// A record stored whole before values were kept apart: a large value
	// inline, which later writes must replace cleanly.
	old := kv.Record{Key: []byte("f"), Value: bytes.Repeat([]byte("o"), 1000), Version: 1}
	if err := e.db.Set(kvKey(pos(old.Key), old.Key), kv.AppendRecord(nil, &old), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	model["f"] = old
	e.kvKeys.Add(1)
	e.kvBytes.Add(old.Size())
	ver := uint64(10)
	for round := range 300 {
		var ops []kv.PersistOp
		touched := map[string]bool{}
		for range 1 + rng.IntN(4) {
			k := keys[rng.IntN(len(keys))]
			if touched[k] {
				continue
			}
			touched[k] = true
			cur, had := model[k]
			op := kv.PersistOp{Had: had, HadBytes: cur.Size()}
			ver++
			switch rng.IntN(6) {
			case 0:
				if !had {
					continue
				}
				op.Delete = []byte(k)
				delete(model, k)
			case 1:
				r := kv.Record{Key: []byte(k), Version: ver, Tomb: true}
				op.Put = &r
				model[k] = r
			default:
				n := []int{0, 3, sepValueBytes - 1, sepValueBytes, 600, 70000}[rng.IntN(6)]
				r := kv.Record{Key: []byte(k), Value: bytes.Repeat([]byte{byte('a' + round%26)}, n), Version: ver}
				op.Put = &r
				model[k] = r
			}
			ops = append(ops, op)
		}
		if err := e.ApplyKV(ops, false); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			got, ok, err := st.Get([]byte(k))
			want, wok := model[k]
			if err != nil || ok != wok || (ok && (got.Version != want.Version || got.Tomb != want.Tomb || !bytes.Equal(got.Value, want.Value))) {
				t.Fatalf("round %d: Get(%q) = %v %d bytes %v, want %v %d bytes", round, k, ok, len(got.Value), err, wok, len(want.Value))
			}
		}
		var seen, versions int
		if err := st.Scan(0, 0, func(_ uint32, r kv.Record) bool {
			seen++
			want := model[string(r.Key)]
			if r.Version != want.Version || !bytes.Equal(r.Value, want.Value) {
				t.Fatalf("round %d: Scan gave %q version %d with %d bytes, want %d with %d", round, r.Key, r.Version, len(r.Value), want.Version, len(want.Value))
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
		st.ScanVersions(0, 0, func(_ uint32, r kv.Record) bool {
			versions++
			if r.Value != nil || r.Version != model[string(r.Key)].Version {
				t.Fatalf("round %d: ScanVersions gave %q version %d with a value of %d bytes", round, r.Key, r.Version, len(r.Value))
			}
			return true
		})
		if seen != len(model) || versions != len(model) {
			t.Fatalf("round %d: Scan saw %d records, ScanVersions %d, want %d", round, seen, versions, len(model))
		}
		apart := 0
		for _, r := range model {
			if len(r.Value) >= sepValueBytes && (string(r.Key) != "f" || r.Version != 1) {
				apart++
			}
		}
		it, _ := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("v/"), UpperBound: []byte("v0")})
		n := 0
		for it.First(); it.Valid(); it.Next() {
			n++
		}
		it.Close()
		if n != apart {
			t.Fatalf("round %d: %d values kept apart, %d records have one", round, n, apart)
		}
		keys, size := e.KVCount()
		sk, sb, err := e.scanKVCount()
		if err != nil || int64(keys) != sk || size != sb {
			t.Fatalf("round %d: counted %d records of %d bytes, a scan finds %d of %d (%v)", round, keys, size, sk, sb, err)
		}
	}
}

// TestKVBulkIngested applies rounds of bulk records (as range streams
// bring them) mixed with ordinary writes to the same keys, and checks
// that the bulk ones were ingested and every key reads its last write of
// the round; then that counts an ingestion left behind are taken again
// after a crash.
func TestKVBulkIngested(t *testing.T) {
	dir := t.TempDir()
	pos := kv.Partitioners["md5-low32"]
	e, err := Open(dir, pos)
	if err != nil {
		t.Fatal(err)
	}
	st := kvStorage{e}
	model := map[string]kv.Record{}
	ver := uint64(1)
	put := func(key string, n int, bulk string, had bool) kv.PersistOp {
		ver++
		r := &kv.Record{Key: []byte(key), Value: bytes.Repeat([]byte{byte(ver)}, n), Version: ver}
		op := kv.PersistOp{Put: r, Bulk: bulk, Had: had}
		if cur, ok := model[key]; ok {
			op.Had, op.HadBytes = true, cur.Size()
		}
		model[key] = *r
		return op
	}
	for round := range 4 {
		var ops []kv.PersistOp
		// Two senders with spans apart, one whose keys spread over the
		// whole ring (as a hand-off's do), and small values among them.
		for i := range 200 {
			ops = append(ops, put(fmt.Sprintf("r%d-a-%03d", round, i), 8000, "10.0.0.1:1", false))
			ops = append(ops, put(fmt.Sprintf("r%d-b-%03d", round, i), 100, "10.0.0.2:1", false))
		}
		for i := range 50 {
			ops = append(ops, put(fmt.Sprintf("r%d-c-%03d", round, i), 9000, "10.0.0.3:1", false))
		}
		// Later writes of the round to keys a bulk record brought, and a
		// delete: these must win over the ingested files.
		ops = append(ops, put(fmt.Sprintf("r%d-a-007", round), 3, "", false))
		ops = append(ops, put(fmt.Sprintf("r%d-c-009", round), 5000, "", false))
		k := fmt.Sprintf("r%d-b-011", round)
		ops = append(ops, kv.PersistOp{Delete: []byte(k), Had: true, HadBytes: model[k].Size()})
		delete(model, k)
		if round > 0 {
			// A key handed off (deleted) and then brought back by a
			// stream in the same round: the stream's record wins.
			k := fmt.Sprintf("r%d-a-%03d", round-1, 50)
			ops = append(ops, kv.PersistOp{Delete: []byte(k), Had: true, HadBytes: model[k].Size()})
			delete(model, k)
			ops = append(ops, put(k, 8000, "10.0.0.1:1", false))
		}
		if err := e.ApplyKV(ops, false); err != nil {
			t.Fatal(err)
		}
	}
	if e.ingested.Load() == 0 {
		t.Fatal("no bulk record was ingested")
	}
	check := func(when string) {
		t.Helper()
		for k, want := range model {
			got, ok, err := st.Get([]byte(k))
			if err != nil || !ok || got.Version != want.Version || !bytes.Equal(got.Value, want.Value) {
				t.Fatalf("%s: Get(%q) = %v version %d (%v), want version %d", when, k, ok, got.Version, err, want.Version)
			}
		}
		n := 0
		st.Scan(0, 0, func(_ uint32, r kv.Record) bool {
			n++
			if want, ok := model[string(r.Key)]; !ok || want.Version != r.Version {
				t.Fatalf("%s: Scan found %q version %d, want %v %d", when, r.Key, r.Version, ok, want.Version)
			}
			return true
		})
		keys, size := e.KVCount()
		sk, sb, err := e.scanKVCount()
		if n != len(model) || err != nil || int64(keys) != sk || size != sb || keys != len(model) {
			t.Fatalf("%s: %d records scanned, %d counted (%d bytes), a count scan finds %d (%d bytes), the model has %d", when, n, keys, size, sk, sb, len(model))
		}
	}
	check("after ingesting")
	// A crash after an ingestion, before its round's batch: the stored
	// counts lag. The mark makes the next open count again.
	if err := e.db.Set([]byte(kvCountKey), kvCountValue(1, 1), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Close(); err != nil { // no clean Close: the mark stays
		t.Fatal(err)
	}
	if e, err = Open(dir, pos); err != nil {
		t.Fatal(err)
	}
	st = kvStorage{e}
	check("after a crash")
	if need, err := e.recountNeeded(); need || err != nil {
		t.Fatalf("the recount mark is still set after counting (%v)", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

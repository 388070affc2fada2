package paxos

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// benchKV returns a KV with n keys shaped like tide bench log's (c<i>-<j>,
// 16-byte values).
func benchKV(n int) *KV {
	kv := NewKV()
	v := []byte("0123456789abcdef")
	for i := range n {
		kv.m[fmt.Sprintf("c%d-%d", i%1000, i/1000)] = v
	}
	return kv
}

// BenchmarkKVSnapshot: a replica snapshots its whole state every
// SnapshotEvery slots, on its loop.
func BenchmarkKVSnapshot(b *testing.B) {
	kv := benchKV(200_000)
	b.ReportAllocs()
	for b.Loop() {
		b.SetBytes(int64(len(kv.Snapshot())))
	}
}

// BenchmarkReplicaSnapshot: the KV's snapshot wrapped with the session
// table of 1,000 clients, as a replica persists it.
func BenchmarkReplicaSnapshot(b *testing.B) {
	cfg := baseConfig()
	r, err := NewReplicaAt(cfg, cfg.Replicas[0], benchKV(200_000), nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		r.clients[uint64(i)] = clientRecord{Seq: 7, Result: []byte("0123456789"), Slot: 5}
	}
	b.ReportAllocs()
	for b.Loop() {
		r.snapshot()
		b.SetBytes(int64(len(r.snap)))
	}
}

// TestKVSnapshotRoundTrip: the KV's hand-written snapshot restores to the
// same map, and reads as the msgpack map msgpack.Marshal wrote before it
// (snapshots on disk from earlier versions restore the same way).
func TestKVSnapshotRoundTrip(t *testing.T) {
	kv := benchKV(3000)
	kv.m["empty"] = []byte{}
	kv.m["nil"] = nil
	kv.m[""] = []byte("empty key")
	kv.m[string(make([]byte, 70000))] = make([]byte, 70000) // str32 and bin32
	b := kv.Snapshot()
	got := NewKV()
	if err := got.Restore(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.m, kv.m) {
		t.Fatal("the snapshot restored to another map")
	}
	var viaMsgpack map[string][]byte
	if err := msgpack.Unmarshal(b, &viaMsgpack); err != nil || !reflect.DeepEqual(viaMsgpack, kv.m) {
		t.Fatalf("msgpack reads the snapshot as another map (%v)", err)
	}
	old, err := msgpack.Marshal(kv.m)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != len(b) {
		t.Fatalf("snapshot is %d bytes, msgpack.Marshal writes %d", len(b), len(old))
	}
	empty := NewKV()
	if err := empty.Restore(NewKV().Snapshot()); err != nil || empty.Len() != 0 {
		t.Fatalf("empty snapshot restored to %d keys (%v)", empty.Len(), err)
	}
}

// TestSnapshotSpacingGrowsWithState: replicas snapshot at every multiple
// of SnapshotEvery while the state is small, and at every m-th for a large
// one, the same slots on every replica.
func TestSnapshotSpacingGrowsWithState(t *testing.T) {
	cfg := baseConfig()
	cfg.SnapshotEvery = 10
	for _, c := range []struct {
		keys int
		due  []uint64 // of slots 0, 10, ..., 70
	}{
		{0, []uint64{0, 10, 20, 30, 40, 50, 60, 70}},
		{snapshotKeys - 1, []uint64{0, 10, 20, 30, 40, 50, 60, 70}},
		{2 * snapshotKeys, []uint64{0, 30, 60}},
	} {
		r, err := NewReplicaAt(cfg, cfg.Replicas[0], benchKV(c.keys), nil)
		if err != nil {
			t.Fatal(err)
		}
		var due []uint64
		for slot := uint64(0); slot < 80; slot += 10 {
			r.exec = slot
			if r.snapshotDue() {
				due = append(due, slot)
			}
		}
		if !reflect.DeepEqual(due, c.due) {
			t.Errorf("%d keys: snapshots at %v, want %v", c.keys, due, c.due)
		}
	}
}

// A put that overwrites a value of the same size in place leaves every
// result and snapshot taken before it as it was, and the map holds what
// each put wrote: sizes that differ, and empty values, included.
func TestKVOverwriteInPlace(t *testing.T) {
	kv := NewKV()
	put := func(v []byte) {
		t.Helper()
		if r, err := DecodeKVResult(kv.Apply(EncodeKV(KVOp{Op: "put", Key: "k", Value: v}))); err != nil || !r.OK {
			t.Fatalf("put %q: %+v %v", v, r, err)
		}
	}
	get := func() KVResult {
		t.Helper()
		r, err := DecodeKVResult(kv.Apply(EncodeKV(KVOp{Op: "get", Key: "k"})))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	value := []byte("first value, 23 bytes.")
	put(value)
	value[0] = 'X' // the operation's bytes are not the map's
	before := get()
	snap := kv.Snapshot()
	read := kv.Read(EncodeKV(KVOp{Op: "get", Key: "k"}))
	for _, v := range []string{"other value, 23 bytes.", "shorter", "", "a value again"} {
		put([]byte(v))
		if r := get(); !r.Found || string(r.Value) != v {
			t.Fatalf("after put %q: get %+v", v, r)
		}
	}
	if string(before.Value) != "first value, 23 bytes." {
		t.Fatalf("a get's result changed under a later put: %q", before.Value)
	}
	if r, _ := DecodeKVResult(read); string(r.Value) != "first value, 23 bytes." {
		t.Fatalf("a read's result changed under a later put: %q", r.Value)
	}
	old := NewKV()
	if err := old.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if v := old.m["k"]; string(v) != "first value, 23 bytes." {
		t.Fatalf("a snapshot changed under a later put: %q", v)
	}
	// A restored map's values are its own: overwriting one in place
	// leaves the snapshot it came from as it was.
	snap2 := kv.Snapshot()
	kv2 := NewKV()
	if err := kv2.Restore(snap2); err != nil {
		t.Fatal(err)
	}
	kv2.Apply(EncodeKV(KVOp{Op: "put", Key: "k", Value: []byte("A VALUE AGAIN")}))
	kv3 := NewKV()
	if err := kv3.Restore(snap2); err != nil || string(kv3.m["k"]) != "a value again" {
		t.Fatalf("a snapshot changed under a put to the map restored from it: %q %v", kv3.m["k"], err)
	}
}

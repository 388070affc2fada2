// Command mutants checks that tide's tests guard its safety rules. Each
// mutant in a list breaks one rule on purpose by replacing a snippet of
// source; the mutant's test command, run on a copy of the repository with
// the replacement made, must fail ("kill" it). A mutant the tests let pass
// ("survive") is a rule nothing checks.
//
//	go run ./tools/mutants                  # every mutant in tools/mutants/mutants.txt
//	go run ./tools/mutants -run gc          # those whose name matches a regexp
//	go run ./tools/mutants -list            # print them, and whether each still applies
//
// # The list
//
// The list is a text file of blocks, one per mutant. Outside a fence, blank
// lines and lines starting with # are ignored. A block is a run of fields,
// each "key: value", and starts at its name field:
//
//	name: quorum-majority
//	invariant: a quorum is a strict majority, so that any two intersect
//	file: paxos/quorum.go
//	run: go test -count=1 ./paxos
//	timeout: 10m
//	original:
//	```
//			return g.count(set) > len(g.Acceptors)/2
//	```
//	replacement:
//	```
//			return g.count(set) >= len(g.Acceptors)/2
//	```
//
// Fields:
//   - name: letters, digits, '.', '_' and '-'; unique in the list.
//   - invariant: the safety rule the mutant breaks.
//   - file: the file to change, relative to the repository's root.
//   - run: a shell command (sh -c), run at the root of the copy, that must
//     fail; environment variables go in front as in a shell
//     (TIDE_PAXOS_SEEDS=300 go test ...).
//   - timeout: optional, a Go duration (default 20m); a command still
//     running then is stopped, which counts as a kill.
//   - original, replacement: the exact text to replace and its
//     replacement, between fence lines of three backquotes (the opening one
//     may name a language, as in ```go). Everything between the fences is
//     taken verbatim, tabs included; the newline before the closing fence
//     is not part of the text. The original must occur exactly once in the
//     file, or the mutant is STALE: the code moved on and the mutant must be
//     rewritten. An empty replacement deletes the original.
//
// A line that starts with a space or a tab continues the invariant or run
// field above it; the pieces are joined by one space.
//
// # A run
//
// First, every distinct test command is run once on an unmutated copy
// (the baseline): if one fails there, a kill would prove nothing, and no
// mutant runs. Then, one mutant at a time: the repository's files are
// copied into a fresh temporary directory, the replacement is made, the
// mutated package is compiled (a mutant that does not compile is BROKEN,
// not killed), and the command runs there. The Go build and module caches
// are shared with normal builds, so unchanged packages are not recompiled.
//
// The files copied are the commit HEAD names when the run starts (-rev
// picks another), so that edits in progress in the working tree, perhaps
// half made, do not decide the result; commit a new test to count it.
// With -worktree the copy is of the tracked files (git ls-files) as they
// are in the working tree, uncommitted edits included but untracked files
// not (git add a new test file to count it).
//
// The exit status is 1 if any mutant SURVIVED, is STALE or BROKEN, or a
// baseline failed; 2 if the list or a flag is wrong; 130 if interrupted.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

// result is what became of a mutant.
type result string

const (
	killed   result = "KILLED"   // the command failed: the tests guard the rule
	survived result = "SURVIVED" // the command passed: nothing guards the rule
	stale    result = "STALE"    // the original is not in the file exactly once
	broken   result = "BROKEN"   // the mutated package does not compile
	failed   result = "ERROR"    // the tool itself could not run the mutant
)

type outcome struct {
	m      *mutant
	res    result
	secs   float64
	detail string
}

func main() {
	listPath := flag.String("file", "tools/mutants/mutants.txt", "the mutant list, relative to the repository's root")
	runRE := flag.String("run", "", "run only the mutants whose name matches this regexp")
	list := flag.Bool("list", false, "print the mutants and whether each still applies, and run nothing")
	keep := flag.Bool("keep", false, "keep each temporary copy (and its test output, in mutant-output.log)")
	baseline := flag.Bool("baseline", true, "first run each test command on an unmutated copy")
	verbose := flag.Bool("v", false, "show the test commands' output as they run")
	rev := flag.String("rev", "HEAD", "mutate the files of this commit")
	worktree := flag.Bool("worktree", false, "mutate the tracked files as they are in the working tree instead of a commit's")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, options{
		listPath: *listPath, runRE: *runRE, list: *list, keep: *keep,
		baseline: *baseline, verbose: *verbose, rev: *rev, worktree: *worktree,
	})
	stop()
	os.Exit(code)
}

type options struct {
	listPath, runRE      string
	list, keep, baseline bool
	verbose              bool
	rev                  string // the commit to copy, unless worktree
	worktree             bool
}

func run(ctx context.Context, o options) int {
	root, err := gitOutput(".", "rev-parse", "--show-toplevel")
	if err != nil {
		fmt.Fprintf(os.Stderr, "mutants: find the repository: %v\n", err)
		return 2
	}
	root = strings.TrimSpace(root)
	path := o.listPath
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mutants: %v\n", err)
		return 2
	}
	all, err := parse(data)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mutants: %s:%v\n", o.listPath, err)
		return 2
	}
	var ms []*mutant
	re, err := regexp.Compile(o.runRE)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mutants: -run: %v\n", err)
		return 2
	}
	for _, m := range all {
		if re.MatchString(m.Name) {
			ms = append(ms, m)
		}
	}
	if len(ms) == 0 {
		fmt.Fprintf(os.Stderr, "mutants: no mutant in %s matches %q\n", o.listPath, o.runRE)
		return 2
	}
	src, err := newSource(root, o.rev, o.worktree)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mutants: %v\n", err)
		return 2
	}
	fmt.Printf("mutating %s\n", src.desc)
	if o.list {
		printList(os.Stdout, src, ms)
		return 0
	}
	r := &runner{src: src, keep: o.keep, verbose: o.verbose}
	start := time.Now()

	if o.baseline {
		seen := map[string]bool{}
		for _, m := range ms {
			if seen[m.Run] {
				continue
			}
			seen[m.Run] = true
			fmt.Printf("baseline: %s\n", m.Run)
			oc := r.try(ctx, &mutant{Name: "baseline", Run: m.Run, Timeout: m.Timeout})
			if ctx.Err() != nil {
				fmt.Println("interrupted")
				return 130
			}
			if oc.res != survived {
				fmt.Printf("baseline FAILED in %.1fs: %s\n", oc.secs, oc.detail)
				fmt.Println("the unmutated code fails this command, so no kill by it would mean anything; no mutant was run")
				return 1
			}
			fmt.Printf("baseline passed in %.1fs\n", oc.secs)
		}
	}

	var outs []outcome
	for i, m := range ms {
		fmt.Printf("[%d/%d] %s (%s) ...\n", i+1, len(ms), m.Name, m.File)
		oc := r.try(ctx, m)
		if ctx.Err() != nil {
			fmt.Println("interrupted")
			return 130
		}
		fmt.Printf("[%d/%d] %s %s %.1fs", i+1, len(ms), m.Name, oc.res, oc.secs)
		if oc.detail != "" {
			fmt.Printf(": %s", oc.detail)
		}
		fmt.Println()
		outs = append(outs, oc)
	}

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "MUTANT\tRESULT\tSECONDS\tINVARIANT")
	bad := 0
	for _, oc := range outs {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\n", oc.m.Name, oc.res, oc.secs, oc.m.Invariant)
		if oc.res != killed {
			bad++
		}
	}
	tw.Flush()
	fmt.Printf("\n%d of %d mutants killed; total %.1fs\n", len(outs)-bad, len(outs), time.Since(start).Seconds())
	if bad > 0 {
		return 1
	}
	return 0
}

// printList prints each mutant with whether its original occurs exactly
// once in the files a run would mutate.
func printList(w io.Writer, src *source, ms []*mutant) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "MUTANT\tFILE\tAPPLIES\tINVARIANT")
	for _, m := range ms {
		state := "yes"
		text, err := src.read(m.File)
		if err == nil {
			_, err = apply(string(text), m)
		}
		if err != nil {
			state = "STALE: " + err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.Name, m.File, state, m.Invariant)
	}
	tw.Flush()
}

// runner runs mutants, each on its own copy of a source tree.
type runner struct {
	src     *source
	keep    bool
	verbose bool
}

// try copies the repository, applies m (unless it is the baseline, which
// has no file), compiles the mutated package and runs m's command. A
// baseline that passes is reported as survived.
func (r *runner) try(ctx context.Context, m *mutant) outcome {
	start := time.Now()
	oc := outcome{m: m}
	finish := func(res result, detail string) outcome {
		oc.res, oc.detail = res, detail
		oc.secs = time.Since(start).Seconds()
		return oc
	}

	dir, err := os.MkdirTemp("", "tide-mutant-"+m.Name+"-")
	if err != nil {
		return finish(failed, err.Error())
	}
	var log bytes.Buffer
	defer func() {
		if r.keep {
			os.WriteFile(filepath.Join(dir, "mutant-output.log"), log.Bytes(), 0o644)
			fmt.Printf("    kept %s\n", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintf(os.Stderr, "mutants: remove %s: %v\n", dir, err)
		}
	}()
	if err := r.src.populate(dir); err != nil {
		return finish(failed, err.Error())
	}

	var out io.Writer = &log
	if r.verbose {
		out = io.MultiWriter(&log, os.Stdout)
	}
	if m.File != "" {
		if err := mutate(filepath.Join(dir, m.File), m); err != nil {
			return finish(stale, err.Error())
		}
		// A mutant that does not compile fails every test command and so
		// would look killed while testing nothing.
		pkg := "./" + filepath.ToSlash(filepath.Dir(m.File))
		check := "go build -o " + os.DevNull + " " + pkg
		if strings.HasSuffix(m.File, "_test.go") {
			check = "go test -count=1 -run '^$' " + pkg
		}
		fmt.Fprintf(&log, "$ %s\n", check)
		mark := log.Len()
		if _, err := shell(ctx, dir, check, m.Timeout, &log); err != nil {
			return finish(broken, why(log.String()[mark:]))
		}
	}

	fmt.Fprintf(&log, "$ %s\n", m.Run)
	mark := log.Len()
	timedOut, err := shell(ctx, dir, m.Run, m.Timeout, out)
	switch {
	case timedOut:
		return finish(killed, fmt.Sprintf("timed out after %v", m.Timeout))
	case err != nil:
		return finish(killed, why(log.String()[mark:]))
	}
	return finish(survived, "")
}

// shell runs script with sh -c in dir, its output to out, in a process
// group of its own, so that a timeout or an interrupt stops the test
// binaries it started too. It reports whether the timeout stopped it.
func shell(ctx context.Context, dir, script string, timeout time.Duration, out io.Writer) (timedOut bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir = dir
	// Each mutant builds in a directory of its own. Without -trimpath the
	// go command keys every compiled package of this module by its
	// directory, so each copy would recompile the whole module; with it,
	// the copies share the build cache, and only the mutated package and
	// those that import it are compiled again.
	if gf := os.Getenv("GOFLAGS"); !strings.Contains(gf, "-trimpath") {
		cmd.Env = append(os.Environ(), "GOFLAGS="+strings.TrimSpace(gf+" -trimpath"))
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var group atomic.Int64
	cmd.Cancel = func() error {
		// SIGINT, as from a terminal: go test stops its test binary and
		// removes its work directory.
		group.Store(int64(cmd.Process.Pid))
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	}
	cmd.WaitDelay = 10 * time.Second
	err = cmd.Run()
	if pgid := int(group.Load()); pgid != 0 {
		stopGroup(pgid)
	}
	return errors.Is(ctx.Err(), context.DeadlineExceeded), err
}

// stopGroup gives the processes left in group pgid a few seconds to exit,
// then kills them.
func stopGroup(pgid int) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if syscall.Kill(-pgid, 0) != nil {
			return // none left
		}
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// why picks from a failed test command's output the lines that say what
// failed: the innermost of the first run of "--- FAIL" lines with the
// message under it, or a panic, or a compile error with its package, or
// else the last line.
func why(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	fail, pkg := "", ""
	for i, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "--- FAIL"):
			fail = t
		case fail != "":
			// A message that ends in a colon goes on below (a transcript
			// diff does).
			for j := i + 1; strings.HasSuffix(t, ":") && j < len(lines) && j <= i+3; j++ {
				t += " " + strings.TrimSpace(lines[j])
			}
			return clip(fail+" "+t, 200)
		case strings.HasPrefix(t, "panic:"):
			return clip(t, 200)
		case strings.HasPrefix(t, "# "):
			pkg = t // a package that failed to compile; its first error follows
		case pkg != "":
			return clip(pkg+": "+t, 200)
		}
	}
	if fail != "" {
		return clip(fail, 200)
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if t := strings.TrimSpace(lines[i]); t != "" {
			return clip(t, 200)
		}
	}
	return ""
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"tide/autoscale"
	"tide/web"
)

// upProc is a `tide up` child process and what its banner said.
type upProc struct {
	cmd       *exec.Cmd
	banner    string
	dashboard string   // URL
	https     []string // store nodes' HTTP addresses
	chords    []string // their Chord addresses
	redis     []string // their Redis protocol addresses
	names     []string // their names (node1, ...)
	dep       string   // the log's deployment file
	exited    chan error
}

// startUp runs `tide up` on free ports in dir and waits for its banner.
func startUp(t *testing.T, dir string, extra ...string) *upProc {
	t.Helper()
	args := append([]string{"up", "--data-dir", dir, "--host-per-node=false", "--base-port", "0",
		"--dashboard", "127.0.0.1:0", "--autoscale-listen", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(tideBin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	u := &upProc{cmd: cmd, exited: make(chan error, 1)}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody reads after the banner
			}
		}
		close(lines)
	}()
	go func() { u.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGKILL)
		}
	})
	var b strings.Builder
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("tide up ended before its banner:\n%s\nstderr:\n%s", b.String(), stderr.String())
			}
			b.WriteString(line + "\n")
			f := strings.Fields(line)
			switch {
			case len(f) >= 2 && f[0] == "dashboard":
				u.dashboard = f[1]
			case len(f) >= 5 && f[0] == "store":
				u.names = append(u.names, strings.Trim(f[len(f)-1], "()"))
				for i := 0; i+1 < len(f); i++ {
					switch f[i] {
					case "http":
						u.https = append(u.https, f[i+1])
					case "chord":
						u.chords = append(u.chords, f[i+1])
					case "redis":
						u.redis = append(u.redis, f[i+1])
					}
				}
			case len(f) >= 5 && f[0] == "log":
				u.dep = f[len(f)-1]
			}
			if strings.HasPrefix(line, "Press Ctrl-C") {
				u.banner = b.String()
				t.Logf("tide up banner:\n%s", u.banner)
				if u.dashboard == "" || len(u.https) == 0 || len(u.redis) != len(u.https) || u.dep == "" {
					t.Fatalf("banner lacks the dashboard, nodes, redis addresses or the log deployment:\n%s", u.banner)
				}
				return u
			}
		case <-deadline:
			t.Fatalf("no banner from tide up after 2 minutes:\n%s\nstderr:\n%s", b.String(), stderr.String())
		}
	}
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after
		// its closing parenthesis.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], p)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}

// stop sends SIGINT, as Ctrl-C does, and checks that tide up exits and
// leaves none of its processes behind.
func (u *upProc) stop(t *testing.T) {
	t.Helper()
	u.stopWith(t, os.Interrupt)
}

// stopWith sends sig to tide up and checks that it exits cleanly and
// leaves none of its processes behind.
func (u *upProc) stopWith(t *testing.T, sig os.Signal) {
	t.Helper()
	kids := descendants(u.cmd.Process.Pid)
	if len(kids) < 3 {
		t.Fatalf("tide up has %d child processes, want its nodes and log roles", len(kids))
	}
	u.cmd.Process.Signal(sig)
	select {
	case err := <-u.exited:
		if err != nil {
			t.Errorf("tide up exited with %v after %v", err, sig)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("tide up still runs 2 minutes after %v", sig)
	}
	var left []int
	for _, k := range kids {
		if alive(k) {
			left = append(left, k)
		}
	}
	if len(left) > 0 {
		t.Fatalf("processes left after tide up stopped: %v (of %d children)", left, len(kids))
	}
	t.Logf("%v stopped tide up and its %d child processes", sig, len(kids))
}

// roleCounts counts the storage nodes and the log role processes among
// pids, from their command lines.
func roleCounts(pids []int) (nodes, logRoles int) {
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		switch {
		case len(args) > 1 && args[1] == "node":
			nodes++
		case len(args) > 2 && args[1] == "log" && args[2] == "serve":
			logRoles++
		}
	}
	return nodes, logRoles
}

func httpDo(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// respDo sends one command in the Redis protocol and returns the reply
// line (and a bulk string's data).
func respDo(t *testing.T, addr string, args ...string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c, "$%d\r\n%s\r\n", len(a), a)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("%v to %s: %v", args, addr, err)
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "$") && line != "$-1" {
		data, _ := r.ReadString('\n')
		return strings.TrimRight(data, "\r\n")
	}
	return line
}

// dashEvents returns the autoscalers' events the dashboard at url holds.
func dashEvents(ctx context.Context, url string) ([]web.Event, error) {
	var evs []web.Event
	err := getJSON(ctx, url+"api/events", &evs)
	return evs, err
}

// findEvent returns the first event of system with action and outcome
// after sequence number since, or nil.
func findEvent(evs []web.Event, system string, action autoscale.Action, outcome string, since uint64) *web.Event {
	for i, ev := range evs {
		if ev.System == system && ev.Action == action && ev.Outcome == outcome && ev.Seq > since {
			return &evs[i]
		}
	}
	return nil
}

// TestUp starts `tide up --demo` as a user would: the demo's load makes
// the autoscaler add a node, and once the load stops and its files are
// deleted, drain it again. With chromium (make deps), the dashboard is
// checked in a real browser: the ring and the log, the summary on a
// laptop screen, the new node and its event, and a screenshot. Meanwhile
// it stores a file, a key over HTTP and over the Redis protocol, and a
// log entry, and reads them back, also through tide dashboard; it stops
// tide up with SIGINT and checks that no process is left; starts it again
// on the same directory and reads everything back; and checks that a
// second tide up on that directory is refused.
func TestUp(t *testing.T) {
	dir := t.TempDir()
	// The demo's own policies, on 4 MiB nodes that its files fill past
	// the high mark in a few seconds; 30 s of load keep the fourth node
	// long enough to be seen.
	up := startUp(t, dir, "--demo", "--capacity", "4MiB", "--demo-duration", "30s")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// waitPage evaluates a script in the dashboard until it returns true;
	// it is nil without chromium.
	var waitPage func(what, script string)
	var page context.Context
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Logf("chromium is not installed (make deps installs it): the dashboard is checked through its API only")
	} else {
		actx, cancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath("chromium"), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1440, 900))...)
		defer cancel()
		var pcancel context.CancelFunc
		page, pcancel = chromedp.NewContext(actx)
		defer pcancel()
		waitPage = func(what, script string) {
			t.Helper()
			deadline := time.Now().Add(2 * time.Minute)
			for {
				ok, err := chromedp.Run(page, chromedp.Evaluate[bool](script))
				if err == nil && ok {
					return
				}
				if time.Now().After(deadline) {
					body, _ := chromedp.Run(page, chromedp.Evaluate[string](`document.querySelector("main").innerText`))
					t.Fatalf("dashboard never showed %s (last error %v); it shows:\n%s", what, err, body)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		if err := chromedp.Do(page, chromedp.Navigate(up.dashboard)); err != nil {
			t.Fatal(err)
		}
		waitPage("every log role", `["matchmaker","batcher","leader","proxy","acceptor","replica","unbatcher"].every(k =>
			document.querySelector(".role[data-kind=" + k + "] .inst:not(.down)"))`)
		waitPage("an active leader", `document.querySelectorAll(".role[data-kind=leader] .inst.active").length === 1`)
		// On a small laptop screen the summary and every panel's heading
		// show without scrolling.
		if err := chromedp.Do(page, chromedp.EmulateViewport(1366, 768)); err != nil {
			t.Fatal(err)
		}
		waitPage("the summary and every panel within a 1366x768 window", `document.querySelector("#summary").getBoundingClientRect().bottom <= innerHeight &&
			[...document.querySelectorAll("section.panel h2")].every(h => h.getBoundingClientRect().bottom <= innerHeight) &&
			document.documentElement.scrollWidth <= innerWidth`)
		if err := chromedp.Do(page, chromedp.EmulateViewport(1440, 900)); err != nil {
			t.Fatal(err)
		}
	}

	// The demo's scale-out: a fourth node joins the ring.
	var scaled *web.Event
	waitFor(t, "the demo's scale-out", 3*time.Minute, func() error {
		evs, err := dashEvents(ctx, up.dashboard)
		if err != nil {
			return err
		}
		if scaled = findEvent(evs, "store", autoscale.ActScaleOut, "succeeded", 0); scaled == nil {
			return fmt.Errorf("no store scale-out yet in %d events", len(evs))
		}
		return nil
	})
	t.Logf("scale-out: %s (%s)", scaled.Reason, scaled.Metric)
	if waitPage != nil {
		waitPage("a fourth member", `document.querySelectorAll("#ring .ring-node[data-state=member]").length === 4 &&
			document.querySelectorAll("#nodes tbody tr[data-state=member]").length === 4`)
		waitPage("the scale-out event", `document.querySelector("#events li[data-action=scale_out][data-outcome=succeeded]") !== null &&
			document.querySelector("#timeline .tl-event[data-action=scale_out]") !== null`)
		png, err := chromedp.Run(page, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		shot := filepath.Join(t.ArtifactDir(), "dashboard.png")
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			t.Fatal(err)
		}
		if p := os.Getenv("TIDE_DASHBOARD_SCREENSHOT"); p != "" {
			os.WriteFile(p, png, 0o644)
		}
		t.Logf("screenshot: %s", shot)
	}

	// A file, a key over HTTP and one over RESP, and a log entry.
	fileBody := bytes.Repeat([]byte("tide up smoke test\n"), 100)
	if code, b := httpDo(t, http.MethodPut, "http://"+up.https[0]+"/files/smoke.txt", fileBody); code/100 != 2 {
		t.Fatalf("upload: %d %s", code, b)
	}
	if code, b := httpDo(t, http.MethodPut, "http://"+up.https[1]+"/kv/smoke-http", []byte("via http")); code/100 != 2 {
		t.Fatalf("kv put: %d %s", code, b)
	}
	if got := respDo(t, up.redis[2], "SET", "smoke-resp", "via resp"); got != "+OK" {
		t.Fatalf("redis SET: %q", got)
	}
	runTide(t, "log", "put", up.dep, "smoke-log", "via the log")
	readBack := func(u *upProc) {
		t.Helper()
		if code, b := httpDo(t, http.MethodGet, "http://"+u.https[2]+"/files/smoke.txt", nil); code != 200 || !bytes.Equal(b, fileBody) {
			t.Fatalf("download: %d, %d bytes, want %d", code, len(b), len(fileBody))
		}
		if code, b := httpDo(t, http.MethodGet, "http://"+u.https[0]+"/kv/smoke-resp", nil); code != 200 || string(b) != "via resp" {
			t.Fatalf("kv get of the RESP key: %d %q", code, b)
		}
		if got := respDo(t, u.redis[1], "GET", "smoke-http"); got != "via http" {
			t.Fatalf("redis GET of the HTTP key: %q", got)
		}
		if got := strings.TrimSpace(runTide(t, "log", "get", u.dep, "smoke-log")); got != "via the log" {
			t.Fatalf("log get: %q", got)
		}
	}
	readBack(up)

	// tide dashboard, as for a deployed cluster, finds the ring from a
	// node's Chord address and the log from its deployment.
	dash := exec.Command(tideBin, "dashboard", "--nodes", up.chords[1], "--log", up.dep, "--listen", "127.0.0.1:0")
	dashOut, _ := dash.StdoutPipe()
	if err := dash.Start(); err != nil {
		t.Fatal(err)
	}
	defer dash.Process.Kill()
	line, err := bufio.NewReader(dashOut).ReadString('\n')
	if f := strings.Fields(line); err != nil || len(f) != 2 || f[0] != "dashboard" {
		t.Fatalf("tide dashboard printed %q (%v)", line, err)
	}
	waitFor(t, "tide dashboard to show the ring and the log", time.Minute, func() error {
		var st struct {
			Store struct{ Members int }
			Log   *struct{ Leader string }
		}
		if err := getJSON(ctx, strings.Fields(line)[1]+"api/state", &st); err != nil {
			return err
		}
		if st.Store.Members < 3 || st.Log == nil || st.Log.Leader == "" {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	dash.Process.Signal(os.Interrupt)
	if err := dash.Wait(); err != nil {
		t.Errorf("tide dashboard exited with %v after SIGINT", err)
	}

	// Once the demo's load stops and its files are deleted, a node (the
	// least loaded, not necessarily the new one) is drained out again.
	members := &upProc{dep: up.dep}
	waitFor(t, "the scale-in after the demo's load stopped", 4*time.Minute, func() error {
		evs, err := dashEvents(ctx, up.dashboard)
		if err != nil {
			return err
		}
		in := findEvent(evs, "store", autoscale.ActScaleIn, "succeeded", scaled.Seq)
		if in == nil {
			return fmt.Errorf("no store scale-in yet after event %d", scaled.Seq)
		}
		var st web.State
		if err := getJSON(ctx, up.dashboard+"api/state", &st); err != nil {
			return err
		}
		members.https, members.redis = nil, nil
		for _, n := range st.Store.Nodes {
			if n.State == "member" {
				members.https, members.redis = append(members.https, n.HTTP), append(members.redis, n.RESP)
			}
		}
		if st.Store.Members != 3 || len(members.https) != 3 {
			return fmt.Errorf("scaled in (%s), but the ring has %d members", in.Reason, st.Store.Members)
		}
		t.Logf("scale-in: %s (%s)", in.Reason, in.Metric)
		return nil
	})
	if waitPage != nil {
		waitPage("the ring back to 3 members", `document.querySelectorAll("#nodes tbody tr[data-state=member]").length === 3 &&
			document.querySelector("#events li[data-action=scale_in][data-outcome=succeeded]") !== null`)
	}
	readBack(members) // through the drain
	up.stop(t)

	// Again on the same directory, with a policy file: the same data.
	cfgPath := filepath.Join(t.TempDir(), "autoscale.yaml")
	os.WriteFile(cfgPath, []byte("period: 1s\nstore:\n  min: 3\n  max: 4\n  periods: 2\n  scale_out_cooldown: 2s\n"), 0o644)
	up = startUp(t, dir, "--capacity", "4MiB", "--autoscale-config", cfgPath)
	readBack(up)
	// A second tide up on the directory is refused at once.
	out, err := exec.Command(tideBin, "up", "--data-dir", dir, "--host-per-node=false", "--base-port", "0",
		"--dashboard", "127.0.0.1:0", "--autoscale-listen", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by another tide up") {
		t.Fatalf("a second tide up on %s: %v\n%s", dir, err, out)
	}
	// A node started by hand on a running node's data says who holds it.
	out, err = exec.Command(tideBin, "node", "--chord-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "nodes", up.names[0])).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is in use by another process (pid ") {
		t.Fatalf("a node on %s's data directory: %v\n%s", up.names[0], err, out)
	}

	// SIGKILL of tide up (no chance to clean up) takes its children with
	// it.
	kids := descendants(up.cmd.Process.Pid)
	up.cmd.Process.Signal(syscall.SIGKILL)
	<-up.exited
	waitFor(t, "every child of a killed tide up to exit", time.Minute, func() error {
		for _, k := range kids {
			if alive(k) {
				return fmt.Errorf("pid %d still runs", k)
			}
		}
		return nil
	})
	// The log is down: a client says so at once, not at its time-out.
	out, err = exec.Command(tideBin, "log", "put", up.dep, "k", "v").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no role of the log") {
		t.Fatalf("log put to a stopped log: %v\n%s", err, out)
	}
}

// TestUpHangupAndKill checks that tide up's children live and die with
// it. Closing its terminal (SIGHUP, which reaches only tide up: every
// child runs in a process group of its own) stops it as Ctrl-C does: it
// exits cleanly and every node and log role with it. A SIGKILL, which
// gives it no chance to clean up, takes every child with it too (the
// kernel's parent-death signal). Each time, the next tide up on the same
// directory brings back what was written before.
func TestUpHangupAndKill(t *testing.T) {
	dir := t.TempDir()
	small := []string{"--nodes", "2", "--replicas", "2", "--autoscale=false"}
	up := startUp(t, dir, small...)
	kids := descendants(up.cmd.Process.Pid)
	if nodes, roles := roleCounts(kids); nodes != 2 || roles < 7 {
		t.Fatalf("tide up runs %d nodes and %d log roles (of %d children), want 2 and at least one per log role kind", nodes, roles, len(kids))
	}
	if got := respDo(t, up.redis[0], "SET", "before-hup", "1"); got != "+OK" {
		t.Fatalf("redis SET: %q", got)
	}
	runTide(t, "log", "put", up.dep, "before-hup", "1")

	// Closing the terminal: a clean stop, no process left.
	up.stopWith(t, syscall.SIGHUP)

	up = startUp(t, dir, small...)
	if got := respDo(t, up.redis[1], "GET", "before-hup"); got != "1" {
		t.Fatalf("redis GET after a restart from SIGHUP: %q", got)
	}
	if got := strings.TrimSpace(runTide(t, "log", "get", up.dep, "before-hup")); got != "1" {
		t.Fatalf("log get after a restart from SIGHUP: %q", got)
	}
	if got := respDo(t, up.redis[1], "SET", "before-kill", "2"); got != "+OK" {
		t.Fatalf("redis SET: %q", got)
	}
	runTide(t, "log", "put", up.dep, "before-kill", "2")

	// SIGKILL: tide up cannot clean up, the kernel stops its children.
	kids = descendants(up.cmd.Process.Pid)
	if nodes, roles := roleCounts(kids); nodes != 2 || roles < 7 {
		t.Fatalf("the restarted tide up runs %d nodes and %d log roles, want 2 and at least 7", nodes, roles)
	}
	up.cmd.Process.Signal(syscall.SIGKILL)
	<-up.exited
	waitFor(t, "every child of a killed tide up to exit", 2*time.Minute, func() error {
		for _, k := range kids {
			if alive(k) {
				return fmt.Errorf("pid %d still runs", k)
			}
		}
		return nil
	})

	// Nothing acknowledged before the kill is lost, and the directory
	// is free for the next tide up.
	up = startUp(t, dir, small...)
	for _, k := range []string{"before-hup", "before-kill"} {
		want := map[string]string{"before-hup": "1", "before-kill": "2"}[k]
		if got := respDo(t, up.redis[0], "GET", k); got != want {
			t.Fatalf("redis GET %s after a restart from SIGKILL: %q, want %q", k, got, want)
		}
		if got := strings.TrimSpace(runTide(t, "log", "get", up.dep, k)); got != want {
			t.Fatalf("log get %s after a restart from SIGKILL: %q, want %q", k, got, want)
		}
	}
	up.stop(t)
}

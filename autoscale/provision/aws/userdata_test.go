package aws

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeTide stands in for the tide binary: it appends its arguments to
// $FAKE_LOG (NUL between arguments, RS between calls) and, as aws-peers,
// prints $FAKE_LIVE for --healthy and $FAKE_ALL otherwise.
const fakeTide = `#!/bin/bash
{ printf '%s\0' "$@"; printf '\036'; } >> "$FAKE_LOG"
if [ "$1" = aws-peers ]; then
	[ -n "${FAKE_PEERS_FAIL:-}" ] && exit 1
	case " $* " in
	*" --healthy "*) printf '%s' "$FAKE_LIVE" ;;
	*) printf '%s' "$FAKE_ALL" ;;
	esac
fi
exit 0
`

// fakeCurl answers the instance metadata service (private IP $FAKE_IP, or
// failure when empty) and "downloads" fakeTide for -o.
const fakeCurl = `#!/bin/bash
out=
prev=
for a in "$@"; do
	[ "$prev" = -o ] && out=$a
	prev=$a
done
if [ -n "$out" ]; then
	cp "$FAKE_TIDE_SRC" "$out"
	exit 0
fi
for a in "$@"; do
	case "$a" in
	*/latest/api/token) printf tok; exit 0 ;;
	*/meta-data/local-ipv4) [ -n "$FAKE_IP" ] || exit 22; printf '%s' "$FAKE_IP"; exit 0 ;;
	esac
done
exit 22
`

// fakeSystemctl records its calls in $FAKE_SYSTEMCTL; fakeSleep sleeps
// briefly instead of the script's 5s.
const (
	fakeSystemctl = "#!/bin/bash\necho \"$*\" >> \"$FAKE_SYSTEMCTL\"\n"
	fakeSleep     = "#!/bin/bash\nexec /bin/sleep 0.1\n"
)

type fakeEnv struct {
	dir, bin, log string
	env           []string
}

func newFakeEnv(t *testing.T) *fakeEnv {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	dir := t.TempDir()
	fakes := filepath.Join(dir, "fakebin")
	if err := os.Mkdir(fakes, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"curl": fakeCurl, "systemctl": fakeSystemctl, "sleep": fakeSleep, "tide-src": fakeTide} {
		if err := os.WriteFile(filepath.Join(fakes, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := &fakeEnv{dir: dir, bin: filepath.Join(dir, "opt", "bin", "tide"), log: filepath.Join(dir, "tide.log")}
	f.env = append(os.Environ(),
		"PATH="+fakes+":"+os.Getenv("PATH"),
		"FAKE_LOG="+f.log,
		"FAKE_TIDE_SRC="+filepath.Join(fakes, "tide-src"),
		"FAKE_SYSTEMCTL="+filepath.Join(dir, "systemctl.log"),
	)
	return f
}

// calls returns the fake tide's calls, each as its arguments.
func (f *fakeEnv) calls(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile(f.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for rec := range bytes.SplitSeq(b, []byte{036}) {
		if len(rec) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(rec), "\x00"), "\x00")
		out = append(out, args)
	}
	return out
}

// run runs script with bash in dir.
func run(t *testing.T, env []string, dir, script string) (output string, err error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "script.sh")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", file)
	cmd.Env = env
	cmd.Dir = dir
	var eb bytes.Buffer
	cmd.Stderr = &eb
	cmd.Stdout = &eb
	err = cmd.Run()
	return eb.String(), err
}

// mustUserData is UserData, failing t on an error.
func mustUserData(t *testing.T, o UserDataOptions) string {
	t.Helper()
	ud, err := UserData(o)
	if err != nil {
		t.Fatal(err)
	}
	return ud
}

func bashSyntax(t *testing.T, name, script string) {
	t.Helper()
	cmd := exec.Command("bash", "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bash -n %s: %v\n%s\n--- script ---\n%s", name, err, out, script)
	}
}

// TestUserDataInstalls runs the rendered user data with its system paths
// moved into a temporary directory and curl and systemctl faked: it
// downloads the binary, writes the start script and the unit, and starts
// the unit.
func TestUserDataInstalls(t *testing.T) {
	f := newFakeEnv(t)
	o := UserDataOptions{
		Group: "tide-nodes", Region: "eu-west-3", BinaryURL: "https://example.invalid/tide-linux-amd64",
		BinaryPath: f.bin, DataDir: filepath.Join(f.dir, "data dir"),
	}
	ud := mustUserData(t, o)
	bashSyntax(t, "user data", ud)
	if !strings.HasPrefix(ud, "#!/bin/bash\n") {
		t.Fatalf("user data does not start with a shebang:\n%s", ud)
	}
	for _, want := range []string{"GROUP='tide-nodes'", "REGION='eu-west-3'", "'https://example.invalid/tide-linux-amd64'"} {
		if !strings.Contains(ud, want) {
			t.Fatalf("user data lacks %s:\n%s", want, ud)
		}
	}
	unitPath := filepath.Join(f.dir, "tide.service")
	moved := strings.ReplaceAll(ud, "/etc/systemd/system/tide.service", unitPath)
	if moved == ud {
		t.Fatal("user data does not write /etc/systemd/system/tide.service")
	}
	if out, err := run(t, f.env, f.dir, moved); err != nil {
		t.Fatalf("user data: %v\n%s", err, out)
	}
	st, err := os.Stat(f.bin)
	if err != nil || st.Mode().Perm()&0o111 == 0 {
		t.Fatalf("binary not installed executable at %s: %v", f.bin, err)
	}
	startPath := filepath.Join(filepath.Dir(f.bin), "tide-start")
	got, err := os.ReadFile(startPath)
	if err != nil {
		t.Fatal(err)
	}
	o.defaults()
	if string(got) != startScript(o) {
		t.Fatalf("start script written:\n%s\nwant:\n%s", got, startScript(o))
	}
	unit, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=" + startPath + "\n", "Restart=on-failure\n", "WantedBy=multi-user.target\n"} {
		if !strings.Contains(string(unit), want) {
			t.Fatalf("unit lacks %q:\n%s", want, unit)
		}
	}
	if st, err := os.Stat(o.DataDir); err != nil || !st.IsDir() {
		t.Fatalf("data dir %s not made: %v", o.DataDir, err)
	}
	sc, _ := os.ReadFile(filepath.Join(f.dir, "systemctl.log"))
	if string(sc) != "daemon-reload\nenable --now tide.service\n" {
		t.Fatalf("systemctl calls:\n%s", sc)
	}

	// Without a URL the binary must already be there.
	o2 := UserDataOptions{Group: "g", Region: "r", BinaryPath: filepath.Join(f.dir, "missing", "tide"), DataDir: filepath.Join(f.dir, "d2")}
	out, err := run(t, f.env, f.dir, strings.ReplaceAll(mustUserData(t, o2), "/etc/systemd/system/tide.service", unitPath))
	if err == nil || !strings.Contains(out, "no tide binary") {
		t.Fatalf("user data without a binary: %v\n%s", err, out)
	}
}

// TestStartScript runs the start script against a fake tide and a fake
// metadata service.
func TestStartScript(t *testing.T) {
	f := newFakeEnv(t)
	if err := os.MkdirAll(filepath.Dir(f.bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.bin, []byte(fakeTide), 0o755); err != nil {
		t.Fatal(err)
	}
	// A group name no shell should mangle, with a line that is the
	// here-document's default delimiter.
	group := "it's a \"group\" $(touch pwned)\nTIDE_EOF\n*"
	o := UserDataOptions{
		Group: group, Region: "eu-west-3", EndpointURL: "http://127.0.0.1:1",
		BinaryPath: f.bin, DataDir: "/var/lib/tide data", ChordPort: 6057, HTTPPort: 6058,
		NodeFlags: []string{"--capacity", "8GiB", "--replicas", "2"}, PeerWait: time.Second,
	}
	ud := mustUserData(t, o)
	bashSyntax(t, "user data", ud)
	o.defaults()
	script := startScript(o)
	bashSyntax(t, "start script", script)
	if !strings.Contains(ud, script) || !strings.Contains(ud, "<<'TIDE_EOF_'\n") {
		t.Fatalf("user data does not carry the start script under a fresh delimiter:\n%s", ud)
	}

	peersCall := []string{"aws-peers", "--group", group, "--region", "eu-west-3", "--chord-port", "6057", "--http-port", "6058", "--endpoint-url", "http://127.0.0.1:1"}
	nodeCall := []string{"node", "--chord-addr", "0.0.0.0:6057", "--http-addr", "0.0.0.0:6058", "--advertise", "10.0.0.7", "--data-dir", "/var/lib/tide data", "--insecure"}
	flags := []string{"--capacity", "8GiB", "--replicas", "2"}
	cases := []struct {
		name      string
		env       []string
		ok        bool
		wantNode  []string // nil: no node started
		wantInErr string
	}{
		{
			name:     "live peers: join the first",
			env:      []string{"FAKE_IP=10.0.0.7", "FAKE_LIVE=10.0.0.5:6057\n10.0.0.6:6057\n", "FAKE_ALL=10.0.0.5:6057\n10.0.0.6:6057\n10.0.0.7:6057\n"},
			ok:       true,
			wantNode: slices.Concat(nodeCall, []string{"--join", "10.0.0.5:6057"}, flags),
		},
		{
			name:     "no live peer, oldest: new ring",
			env:      []string{"FAKE_IP=10.0.0.7", "FAKE_LIVE=", "FAKE_ALL=10.0.0.7:6057\n10.0.0.9:6057\n"},
			ok:       true,
			wantNode: slices.Concat(nodeCall, flags),
		},
		{
			name:      "no live peer, not oldest: wait, then give up",
			env:       []string{"FAKE_IP=10.0.0.7", "FAKE_LIVE=", "FAKE_ALL=10.0.0.9:6057\n10.0.0.7:6057\n"},
			wantInErr: "waiting for 10.0.0.9:6057",
		},
		{
			name:      "not in service yet, nobody live: wait",
			env:       []string{"FAKE_IP=10.0.0.7", "FAKE_LIVE=", "FAKE_ALL="},
			wantInErr: "no live peer after 1s",
		},
		{
			name:      "aws-peers fails: wait, then give up",
			env:       []string{"FAKE_IP=10.0.0.7", "FAKE_PEERS_FAIL=1"},
			wantInErr: "no live peer after 1s",
		},
		{
			name:      "no metadata service",
			env:       []string{"FAKE_IP="},
			wantInErr: "private IP",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(f.log)
			dir := t.TempDir()
			out, err := run(t, append(slices.Clone(f.env), c.env...), dir, script)
			if c.ok != (err == nil) {
				t.Fatalf("start script: %v\n%s", err, out)
			}
			if c.wantInErr != "" && !strings.Contains(out, c.wantInErr) {
				t.Fatalf("output lacks %q:\n%s", c.wantInErr, out)
			}
			if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
				t.Fatal("the group name was run as a command")
			}
			calls := f.calls(t)
			var node []string
			for i, call := range calls {
				switch call[0] {
				case "aws-peers":
					if !slices.Equal(call[:len(peersCall)], peersCall) {
						t.Fatalf("aws-peers call %q, want it to start %q", call, peersCall)
					}
					rest := call[len(peersCall):]
					if len(rest) != 0 && !slices.Equal(rest, []string{"--exclude-self", "--self-ip", "10.0.0.7", "--healthy"}) {
						t.Fatalf("aws-peers call ends %q", rest)
					}
				case "node":
					if i != len(calls)-1 {
						t.Fatalf("calls after node: %q", calls)
					}
					node = call
				default:
					t.Fatalf("unexpected call %q", call)
				}
			}
			if !slices.Equal(node, c.wantNode) {
				t.Fatalf("node started with %q, want %q", node, c.wantNode)
			}
			if c.wantInErr == "private IP" && len(calls) != 0 {
				t.Fatalf("calls without a private IP: %q", calls)
			}
		})
	}
}

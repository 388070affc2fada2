package postnotify

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPUUse is the CPU time (user + system) a run took, per request, and how
// busy the machine was meanwhile: what tells the barrier's own work from
// contention for the machine's cores.
type CPUUse struct {
	// ClientMSPerRequest is this process: the writers and readers, the
	// shims, lineage and the barrier (and whatever store runs in-process:
	// the tests' tide nodes and log).
	ClientMSPerRequest float64 `json:"client_ms_per_request"`
	// ServersMSPerRequest is every process this one started and their
	// children (the stores' servers), summed; ByProcess splits it by
	// program ("redis-server", "postgres", "tide node A" and "tide node
	// B" by region, "tide log", "nats-server"). Zero with --connect.
	ServersMSPerRequest float64            `json:"servers_ms_per_request"`
	ByProcess           map[string]float64 `json:"by_process_ms_per_request,omitempty"`
	// CoresUsed is the client's and servers' CPU time over the run's wall
	// time; HostBusyPct is how busy all of the machine's HostCores were
	// (every process, the benchmark's and others').
	CoresUsed   float64 `json:"cores_used"`
	HostBusyPct float64 `json:"host_busy_pct"`
	HostCores   int     `json:"host_cores"`
}

// cpuSample is the CPU time used so far.
type cpuSample struct {
	at        time.Time
	client    time.Duration
	servers   map[string]time.Duration // by program
	hostBusy  uint64                   // /proc/stat ticks, all CPUs
	hostTotal uint64
}

// clockTick is the unit of /proc's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now(), servers: map[string]time.Duration{}}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		s.hostBusy, s.hostTotal, _ = parseHostStat(b)
	}
	procs := readProcs()
	// Descendants of this process, by parent.
	children := map[int][]int{}
	for pid, p := range procs {
		children[p.ppid] = append(children[p.ppid], pid)
	}
	queue := append([]int(nil), children[os.Getpid()]...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		p := procs[pid]
		s.servers[p.name] += p.cpu
		queue = append(queue, children[pid]...)
	}
	return s
}

// proc is one process as /proc/PID/stat shows it.
type procStat struct {
	ppid int
	name string
	// cpu is its own user and system time and that of its children it
	// has waited for, so that the sum over a tree stays put as processes
	// in it exit.
	cpu time.Duration
}

func readProcs() map[int]procStat {
	out := map[int]procStat{}
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return out
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		p, err := parseProcStat(b)
		if err != nil {
			continue
		}
		out[pid] = p
	}
	// tide's own children (nodes, log roles) run this executable, under
	// whatever name it was installed as.
	self := out[os.Getpid()].name
	for pid, p := range out {
		if p.name == self || p.name == "tide" {
			if cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
				p.name = tideName(strings.Split(string(cl), "\x00"))
				out[pid] = p
			}
		}
	}
	return out
}

// tideName names a tide process by its subcommand (tide node, tide log)
// and, for a node, its region: "tide node A".
func tideName(args []string) string {
	name := "tide"
	if len(args) > 1 && args[1] != "" {
		name += " " + args[1]
	}
	for i, a := range args {
		if r, ok := strings.CutPrefix(a, "--region="); ok {
			return name + " " + r
		}
		if a == "--region" && i+1 < len(args) {
			return name + " " + args[i+1]
		}
	}
	return name
}

// parseProcStat parses /proc/PID/stat: "pid (comm) state ppid ..." with
// utime, stime, cutime and cstime the 14th to 17th fields. comm may hold
// spaces and parentheses, so the fields after it start at the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, errors.New("proc stat: no (comm)")
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state): field k is f[k-3].
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("proc stat: %d fields after comm, want 15 or more", len(f))
	}
	p := procStat{name: string(b[open+1 : end])}
	var err error
	if p.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("proc stat: ppid %q", f[1])
	}
	for _, s := range f[11:15] {
		v, err := strconv.ParseUint(s, 10, 32) // ticks: 497 days of CPU each
		if err != nil {
			return procStat{}, fmt.Errorf("proc stat: time %q", s)
		}
		p.cpu += time.Duration(v) * clockTick
	}
	return p, nil
}

// parseHostStat reads /proc/stat's "cpu" line: busy and total ticks of
// all CPUs (idle and iowait are not busy).
func parseHostStat(b []byte) (busy, total uint64, err error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, errors.New("/proc/stat: no cpu line first")
	}
	for i, s := range f[1:] {
		if i >= 8 { // guest times are already in user and nice
			break
		}
		v, err := strconv.ParseUint(s, 10, 56) // 8 of them sum without overflow
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %q", s)
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}

// cpuUse is what happened between two samples, over n requests.
func cpuUse(a, b cpuSample, n int) *CPUUse {
	if n <= 0 {
		return nil
	}
	per := func(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond) / float64(n)) }
	u := &CPUUse{ClientMSPerRequest: per(b.client - a.client), HostCores: runtime.NumCPU()}
	var servers time.Duration
	for name, t := range b.servers {
		d := t - a.servers[name]
		if d <= 0 {
			continue
		}
		if u.ByProcess == nil {
			u.ByProcess = map[string]float64{}
		}
		u.ByProcess[name] = per(d)
		servers += d
	}
	u.ServersMSPerRequest = per(servers)
	if wall := b.at.Sub(a.at); wall > 0 {
		u.CoresUsed = round3(float64(b.client-a.client+servers) / float64(wall))
	}
	if dt := b.hostTotal - a.hostTotal; b.hostTotal > a.hostTotal {
		u.HostBusyPct = round3(100 * float64(b.hostBusy-a.hostBusy) / float64(dt))
	}
	return u
}

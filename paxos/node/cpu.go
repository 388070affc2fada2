package node

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// processCPU is the CPU time this process has used, user and system, in
// seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

var (
	limitOnce sync.Once
	limit     float64
)

// cpuLimit is the CPU limit of this process's cgroup in CPUs (a
// container's --cpus), or 0 if it has none or it cannot be read.
func cpuLimit() float64 {
	limitOnce.Do(func() {
		// cgroup v2: "QUOTA PERIOD" or "max PERIOD".
		if b, err := os.ReadFile("/sys/fs/cgroup/cpu.max"); err == nil {
			limit = parseCPUMax(string(b))
			return
		}
		// cgroup v1.
		q, err1 := os.ReadFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
		p, err2 := os.ReadFile("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
		if err1 == nil && err2 == nil {
			limit = parseCPUMax(strings.TrimSpace(string(q)) + " " + strings.TrimSpace(string(p)))
		}
	})
	return limit
}

// parseCPUMax reads a quota and a period ("25000 100000"); "max" or a
// negative quota is no limit.
func parseCPUMax(s string) float64 {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0
	}
	q, err1 := strconv.ParseFloat(f[0], 64)
	p, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0
	}
	return q / p
}

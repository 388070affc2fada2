package cluster

import "syscall"

// childAttr puts a child in a process group of its own and has the kernel
// kill it if this process dies (SIGKILL, a crash): no node outlives its
// supervisor.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

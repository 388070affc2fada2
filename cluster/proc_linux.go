package cluster

import "syscall"

// childAttr puts a child in a process group of its own and, with
// dieWithParent, has the kernel kill it if this process dies (SIGKILL, a
// crash), so that no node outlives its supervisor.
func childAttr(dieWithParent bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if dieWithParent {
		a.Pdeathsig = syscall.SIGKILL
	}
	return a
}

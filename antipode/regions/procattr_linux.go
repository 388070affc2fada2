package regions

import "syscall"

// childAttr runs a store process in a process group of its own, as cred
// if set, and has the kernel kill it if this process dies.
func childAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred, Pdeathsig: syscall.SIGKILL}
}

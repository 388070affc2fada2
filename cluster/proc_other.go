//go:build !linux

package cluster

import "syscall"

// childAttr puts a child in a process group of its own. Only Linux can
// tie a child's life to its parent's (Pdeathsig); elsewhere a supervisor
// that is killed leaves its children running.
func childAttr(bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

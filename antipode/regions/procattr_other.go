//go:build !linux

package regions

import "syscall"

// childAttr runs a store process in a process group of its own, as cred
// if set. Only Linux can tie a child's life to its parent's.
func childAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Credential: cred}
}

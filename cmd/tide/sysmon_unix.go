//go:build unix

package main

import (
	"log/slog"
	"os"
	"syscall"
)

// steadySysmon makes this process run with steadySchedtrace: unless
// GODEBUG already sets schedtrace, it executes this binary again, in
// place (same process ID, arguments and open descriptors), with the
// setting added, since the runtime reads it only at start-up. It returns
// only if it did not re-execute: the setting was there, or the binary
// could not be found or run again (logged; the process then goes on
// with the runtime's default). Call it from the main thread (see main).
func steadySysmon() {
	env, changed := withSteadySysmon(os.Environ())
	if !changed {
		return
	}
	self, err := os.Executable()
	if err == nil {
		err = syscall.Exec(self, os.Args, env)
	}
	slog.Debug("running with the Go runtime's default sysmon", "err", err)
}

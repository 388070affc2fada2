//go:build !unix

package main

// steadySysmon does nothing where a process cannot execute itself again
// in place: the role runs with the Go runtime's default sysmon.
func steadySysmon() {}

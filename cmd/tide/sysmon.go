package main

import (
	"strings"
)

// steadySchedtrace is the GODEBUG setting a role process or a storage
// node runs with:
// a scheduler trace every 2^31-1 ms (about 24.8 days), which no one
// reads, for its side effect on the Go runtime's monitor thread
// (sysmon). Without any schedtrace, sysmon sleeps for good whenever the
// process is idle, the next system call wakes it, and it then polls
// every 20 µs for as long as the process stays busy. A role process of
// the log goes idle and busy again for every batch, so its sysmon woke
// about 3,700 times a second under load (the batcher, at 1000 clients),
// and the 11 busy role processes' sysmon threads used about 0.38 of the
// machine's 2 cores. Storage nodes (tide node) run with it too. With a schedtrace set, sysmon never sleeps for good, so it
// is never woken that way: it backs off to a wake-up every 10 ms and
// stays there unless it has to take a processor back from a long
// system call.
const steadySchedtrace = "schedtrace=2147483647"

// steadySysmonAnnotation marks a command whose process runs with
// steadySchedtrace: main calls steadySysmon before anything else runs.
const steadySysmonAnnotation = "tide-steady-sysmon"

// withSteadySysmon returns env (KEY=VALUE entries) with steadySchedtrace
// added to its GODEBUG, and whether it changed anything: a GODEBUG that
// already sets schedtrace (GODEBUG=schedtrace=0 is how to opt out) is
// left as it is.
func withSteadySysmon(env []string) ([]string, bool) {
	for i, kv := range env {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			continue
		}
		for _, f := range strings.Split(v, ",") {
			if strings.HasPrefix(f, "schedtrace=") {
				return env, false
			}
		}
		out := append([]string(nil), env...)
		if v == "" {
			out[i] = "GODEBUG=" + steadySchedtrace
		} else {
			out[i] = kv + "," + steadySchedtrace
		}
		return out, true
	}
	return append(append([]string(nil), env...), "GODEBUG="+steadySchedtrace), true
}

// Package netport binds TCP listeners whose port is kept: a log role's or
// a storage node's address is written into the configuration, and a
// restart binds the same port again.
//
// Asked for any port (port 0), the kernel hands out one of its ephemeral
// ports, the range it also takes the local ports of outgoing connections
// from. While such a process is stopped, any connection on the machine
// may take its port, and the restart fails with "address already in
// use". Listen takes port 0 outside that range instead, where only
// another listener can hold it.
package netport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Listen is net.Listen("tcp", addr), except that a port of 0 is taken at
// random from the ports below the kernel's ephemeral range (down to
// stableLow), or above it when too few lie below. It falls back to any
// port when no such port is free.
func Listen(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "0" {
		return net.Listen("tcp", addr)
	}
	lo, hi := stableRange()
	if hi > lo {
		for range tries {
			p := lo + rand.IntN(hi-lo+1)
			ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
			if err == nil {
				return ln, nil
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				return nil, err
			}
		}
	}
	return net.Listen("tcp", addr)
}

// tries is how many ports Listen tries before it takes any.
const tries = 64

// stableLow is the lowest port Listen picks, above the ports services
// commonly use.
const stableLow = 20000

// minStable is the fewest ports a range needs for Listen to pick from it.
const minStable = 1024

var (
	rangeOnce        sync.Once
	rangeLo, rangeHi int
)

// stableRange returns the ports Listen picks from, [lo, hi]; lo > hi
// when there are too few.
func stableRange() (lo, hi int) {
	rangeOnce.Do(func() {
		elo, ehi := 32768, 60999 // Linux's default
		if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
			if l, h, err := parseRange(string(b)); err == nil {
				elo, ehi = l, h
			}
		}
		rangeLo, rangeHi = pick(elo, ehi)
	})
	return rangeLo, rangeHi
}

// pick chooses the range outside ephemeral ports [elo, ehi].
func pick(elo, ehi int) (lo, hi int) {
	switch {
	case elo-stableLow >= minStable:
		return stableLow, elo - 1
	case 65535-ehi >= minStable:
		return max(ehi+1, stableLow), 65535
	}
	return 1, 0
}

// parseRange reads ip_local_port_range: two numbers.
func parseRange(s string) (lo, hi int, err error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("want two ports, got %q", s)
	}
	if lo, err = strconv.Atoi(f[0]); err != nil {
		return 0, 0, err
	}
	if hi, err = strconv.Atoi(f[1]); err != nil {
		return 0, 0, err
	}
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("not a port range: %q", s)
	}
	return lo, hi, nil
}

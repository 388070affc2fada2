package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on
// Linux's mainstream architectures).
const clockTick = 10 * time.Millisecond

// ProcCPU sums the user and system CPU time of processes so far, from
// /proc/PID/stat.
func ProcCPU(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
		}
		// The command name, in parentheses, may hold spaces: the fields
		// counted from the state after it are utime (12th) and stime.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if i < 0 || len(f) < 13 {
			return 0, fmt.Errorf("CPU time of process %d: unexpected /proc/%d/stat", pid, pid)
		}
		for _, x := range f[11:13] {
			t, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
			}
			total += time.Duration(t) * clockTick
		}
	}
	return total, nil
}

// ServeNullRESP answers the Redis protocol on ln until ctx ends or ln
// closes, storing nothing: SET is +OK, GET a nil bulk, CONFIG an empty
// array, anything else +OK. It parses every command in full and answers a
// pipeline with one write, as a real server must: the ceiling of a Go RESP
// front end on this machine.
func ServeNullRESP(ctx context.Context, ln net.Listener) {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go serveNull(c)
	}
}

func serveNull(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 64<<10)
	line := func() ([]byte, error) {
		l, err := r.ReadSlice('\n')
		if err != nil || len(l) < 2 || l[len(l)-2] != '\r' {
			return nil, fmt.Errorf("bad line")
		}
		return l[:len(l)-2], nil
	}
	for {
		l, err := line()
		if err != nil || len(l) < 2 || l[0] != '*' {
			return
		}
		n, err := strconv.Atoi(string(l[1:]))
		if err != nil || n < 1 || n > 1<<20 {
			return
		}
		reply := "+OK\r\n"
		for i := range n {
			h, err := line()
			if err != nil || len(h) < 2 || h[0] != '$' {
				return
			}
			k, err := strconv.Atoi(string(h[1:]))
			if err != nil || k < 0 || k > 512<<20 {
				return
			}
			if i == 0 && k > 0 && k <= 16 {
				name, err := r.Peek(k)
				if err != nil {
					return
				}
				switch name[0] | 0x20 { // lower case
				case 'g':
					reply = "$-1\r\n"
				case 'c':
					reply = "*0\r\n"
				}
			}
			if _, err := r.Discard(k + 2); err != nil {
				return
			}
		}
		w.WriteString(reply)
		if r.Buffered() == 0 {
			if w.Flush() != nil {
				return
			}
		}
	}
}

package resp

import (
	"bufio"
	"bytes"
	"errors"
	"testing"
)

// FuzzRESP feeds arbitrary bytes to the RESP reader: it returns a command,
// an error, or asks for more input, and never panics or allocates past its
// bounds.
func FuzzRESP(f *testing.F) {
	f.Add([]byte("*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n"))
	f.Add([]byte("PING\r\n"))
	f.Add([]byte("*1\r\n$-1\r\n"))
	f.Add([]byte("*99999999999\r\n"))
	f.Add([]byte("*2\r\n$3\r\nGET\r\n$100000000\r\nx"))
	f.Add([]byte("*2\r\n$3\r\nGET\r\n$3\r\nabc\r\n*3\r\n$3\r\nSET\r\n$3\r\nabc\r\n$70\r\n0123456789012345678901234567890123456789012345678901234567890123456789\r\n"))
	f.Add([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$40\r\n0123456789012345678901234567890123456789\r\n*1\r\n$4\r\nPING\r\n"))
	f.Add([]byte("*2\r\n$4\r\nECHO\r\n$600000000\r\nx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// A small buffer, so that lines longer than it are gathered too.
		r := bufio.NewReaderSize(bytes.NewReader(b), 64)
		// One arena for every command, as a connection has: what earlier
		// commands read must stay intact (writes may outlive their reply).
		var arena arena
		var kept, copies [][]byte
		defer func() {
			for i := range kept {
				if !bytes.Equal(kept[i], copies[i]) {
					t.Fatalf("argument %d changed from %q to %q after later commands", i, copies[i], kept[i])
				}
			}
		}()
		// A small bound, so that arguments over it are read and dropped.
		const maxBulk = 32
		for range 8 {
			// Arguments of inline commands are bounded by their line.
			bound := 64 << 10
			if first, err := r.Peek(1); err == nil && first[0] == '*' {
				bound = maxBulk
			}
			args, err := arena.readCommand(r, maxBulk)
			var tl *TooLargeError
			if errors.As(err, &tl) {
				// The command was read to its end, its oversized
				// argument dropped; the next one follows.
				if tl.Size <= maxBulk || tl.Limit != maxBulk || tl.Arg >= len(args) || args[tl.Arg] != nil {
					t.Fatalf("%v: argument %d of %d is %q", tl, tl.Arg, len(args), args)
				}
			} else if err != nil {
				return
			}
			for _, a := range args {
				if len(a) > bound {
					t.Fatalf("argument of %d bytes passed the bound", len(a))
				}
				kept = append(kept, a)
				copies = append(copies, bytes.Clone(a))
			}
			arena.reset()
		}
	})
}

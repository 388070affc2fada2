// Reading commands (RESP arrays of bulk strings, or inline lines) and
// writing replies.

package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxArgs bounds one command. maxDiscard bounds an argument the reader
// reads and drops because it is over the connection's limit: a longer one
// is a protocol error, as an argument over proto-max-bulk-len (512 MiB by
// default) is in Redis.
const (
	maxArgs    = 1 << 20
	maxDiscard = 512 << 20
)

// errProtocol is a malformed request: answered with -ERR, then the
// connection is closed, as Redis does.
var errProtocol = errors.New("Protocol error")

// TooLargeError is a command with an argument over the connection's limit.
// The reader has read the whole command and dropped that argument (its
// slot in the command is nil), so the connection is still in step: the
// command is answered with this error and the next one is read.
type TooLargeError struct {
	Arg   int  // the argument's index in the command (0 is its name)
	Value bool // the argument is a value of SET or MSET
	Size  int  // its length in bytes
	Limit int  // the largest length accepted
}

func (e *TooLargeError) Error() string {
	what := "argument"
	if e.Value {
		what = "value"
	}
	return fmt.Sprintf("%s of %d bytes is larger than the limit of %d", what, e.Size, e.Limit)
}

// readCommand reads one command: a RESP array of bulk strings, or an inline
// command line. An argument longer than maxBulk is read and dropped, and
// the command is returned with a *TooLargeError once it has been read to
// its end.
func readCommand(r *bufio.Reader, maxBulk int) ([][]byte, error) {
	var a arena
	return a.readCommand(r, maxBulk)
}

// arena is where a connection's commands are parsed into. Arguments
// are cut from shared chunks instead of allocated one by one. A chunk is
// never reused: the records of a write keep pointing into it for as long
// as the write is under way, which can outlast its reply. The argument
// slices of a pipeline's commands are reused once it is answered (reset).
type arena struct {
	chunk []byte
	slots [][]byte
	used  int
}

// arenaChunk is the size of the chunks arguments are cut from; larger
// arguments are allocated on their own.
const arenaChunk = 16 << 10

func (a *arena) bytes(n int) []byte {
	if n > arenaChunk/4 {
		return make([]byte, n)
	}
	if cap(a.chunk)-len(a.chunk) < n {
		a.chunk = make([]byte, 0, arenaChunk)
	}
	l := len(a.chunk)
	a.chunk = a.chunk[:l+n]
	return a.chunk[l : l+n : l+n]
}

// args returns room for n arguments.
func (a *arena) args(n int) [][]byte {
	if len(a.slots)-a.used < n {
		a.slots = make([][]byte, max(n, 1024))
		a.used = 0
	}
	s := a.slots[a.used : a.used : a.used+n]
	a.used += n
	return s
}

// reset makes the argument slices of the commands read so far available
// again; their bytes stay where they are.
func (a *arena) reset() {
	clear(a.slots[:a.used])
	a.used = 0
}

func (a *arena) readCommand(r *bufio.Reader, maxBulk int) ([][]byte, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	if len(line) == 0 {
		return nil, nil
	}
	if line[0] != '*' {
		return splitInline(line), nil
	}
	n, err := strconv.Atoi(string(line[1:]))
	if err != nil || n > maxArgs {
		return nil, fmt.Errorf("%w: invalid multibulk length", errProtocol)
	}
	if n <= 0 {
		return nil, nil
	}
	var args [][]byte
	if n <= 64 {
		args = a.args(n)
	} else {
		args = make([][]byte, 0, 64)
	}
	var tooLarge *TooLargeError
	for i := range n {
		hdr, err := readLine(r)
		if err != nil {
			return nil, err
		}
		if len(hdr) == 0 || hdr[0] != '$' {
			return nil, fmt.Errorf("%w: expected '$', got '%s'", errProtocol, firstByte(hdr))
		}
		l, err := strconv.Atoi(string(hdr[1:]))
		if err != nil || l < 0 || l > max(maxBulk, maxDiscard) {
			return nil, fmt.Errorf("%w: invalid bulk length", errProtocol)
		}
		var buf []byte
		if l > maxBulk {
			if tooLarge == nil {
				value := i >= 2 && i%2 == 0 && len(args) > 0 &&
					(strings.EqualFold(string(args[0]), "SET") || strings.EqualFold(string(args[0]), "MSET"))
				tooLarge = &TooLargeError{Arg: i, Value: value, Size: l, Limit: maxBulk}
			}
			if _, err := r.Discard(l); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
		} else {
			buf = a.bytes(l)
			if _, err := io.ReadFull(r, buf); err != nil {
				return nil, err
			}
		}
		crlf, err := r.Peek(2)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if crlf[0] != '\r' || crlf[1] != '\n' {
			return nil, fmt.Errorf("%w: bulk string not terminated by CRLF", errProtocol)
		}
		r.Discard(2)
		args = append(args, buf)
	}
	if tooLarge != nil {
		return args, tooLarge
	}
	return args, nil
}

func firstByte(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return string(b[:1])
}

// readLine reads a CRLF- (or LF-) terminated line of at most 64 KiB. The
// line may point into r's buffer: it is valid until the next read.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// Longer than the buffer: gather it.
		line = append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			if len(line) > 64<<10 {
				return nil, fmt.Errorf("%w: too big inline request", errProtocol)
			}
			var chunk []byte
			chunk, err = r.ReadSlice('\n')
			line = append(line, chunk...)
		}
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if len(line) > 64<<10 {
		return nil, fmt.Errorf("%w: too big inline request", errProtocol)
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func splitInline(line []byte) [][]byte {
	var out [][]byte
	for _, f := range strings.Fields(string(line)) {
		out = append(out, []byte(f))
	}
	return out
}

// writer encodes replies.
type writer struct{ w *bufio.Writer }

func (r writer) simple(s string) { r.w.WriteString("+" + s + "\r\n") }

func (r writer) err(s string) { r.w.WriteString("-" + s + "\r\n") }

func (r writer) int(n int64) { r.w.WriteString(":" + strconv.FormatInt(n, 10) + "\r\n") }

func (r writer) nilBulk() { r.w.WriteString("$-1\r\n") }

func (r writer) bulk(b []byte) {
	r.w.WriteString("$" + strconv.Itoa(len(b)) + "\r\n")
	r.w.Write(b)
	r.w.WriteString("\r\n")
}

func (r writer) array(n int) { r.w.WriteString("*" + strconv.Itoa(n) + "\r\n") }

// reply is a command's answer, rendered after concurrent execution.
type reply func(writer)

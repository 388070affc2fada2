package resp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// bulks encodes a command as a RESP array of bulk strings.
func bulks(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

// TestReadCommandTooLarge reads commands with arguments over the bound
// among ordinary ones: each such command is read to its end, with a
// TooLargeError naming the argument, and the commands after it are read
// whole. An argument over maxDiscard, or one cut short, still ends the
// connection.
func TestReadCommandTooLarge(t *testing.T) {
	const maxBulk = 10
	big := strings.Repeat("v", 3*maxBulk+7) // longer than the reader's buffer too
	stream := bulks("SET", "k", big) + bulks("GET", "k") +
		bulks("MSET", "a", "1", "b", big, "c", big) + bulks("ECHO", big) + bulks(big) + bulks("PING")
	r := bufio.NewReaderSize(strings.NewReader(stream), 16)
	var a arena
	type want struct {
		args  string // the command read, a dropped argument as <nil>
		large *TooLargeError
	}
	for i, w := range []want{
		{"SET k <nil>", &TooLargeError{Arg: 2, Value: true, Size: len(big), Limit: maxBulk}},
		{"GET k", nil},
		{"MSET a 1 b <nil> c <nil>", &TooLargeError{Arg: 4, Value: true, Size: len(big), Limit: maxBulk}},
		{"ECHO <nil>", &TooLargeError{Arg: 1, Size: len(big), Limit: maxBulk}},
		{"<nil>", &TooLargeError{Arg: 0, Size: len(big), Limit: maxBulk}},
		{"PING", nil},
	} {
		args, err := a.readCommand(r, maxBulk)
		var tl *TooLargeError
		if err != nil && !errors.As(err, &tl) {
			t.Fatalf("command %d: %v", i, err)
		}
		var got []string
		for _, arg := range args {
			if arg == nil {
				got = append(got, "<nil>")
			} else {
				got = append(got, string(arg))
			}
		}
		if strings.Join(got, " ") != w.args {
			t.Errorf("command %d = %q, want %q", i, got, w.args)
		}
		switch {
		case w.large == nil && tl != nil:
			t.Errorf("command %d: unexpected %v", i, tl)
		case w.large != nil && (tl == nil || *tl != *w.large):
			t.Errorf("command %d: error %v, want %v", i, err, w.large)
		}
	}
	if _, err := a.readCommand(r, maxBulk); err != io.EOF {
		t.Errorf("after the last command: %v, want EOF", err)
	}

	for _, c := range []struct{ in, name string }{
		{fmt.Sprintf("*2\r\n$4\r\nECHO\r\n$%d\r\n", maxDiscard+1), "over maxDiscard"},
		{"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$40\r\n0123456789", "cut short"},
		{"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$12\r\n0123456789ABxx", "not ended by CRLF"},
	} {
		_, err := readCommand(bufio.NewReaderSize(strings.NewReader(c.in), 16), maxBulk)
		var tl *TooLargeError
		if err == nil || errors.As(err, &tl) {
			t.Errorf("%s: %v, want an error that ends the connection", c.name, err)
		}
	}
}

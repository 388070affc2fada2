package resp

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// serve runs a Server of cfg over a memBackend on a free port.
func serve(t *testing.T, cfg Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	cfg.MaxValue, cfg.PeerAddr = 1<<10, "127.0.0.1:7000"
	go func() {
		NewServer(cfg, &memBackend{m: map[string][]byte{}}).Serve(ctx, ln)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// raw sends lines and returns every reply until the server closes.
func raw(t *testing.T, addr string, lines ...string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, strings.Join(append(lines, "QUIT"), "\r\n")+"\r\n")
	b, _ := io.ReadAll(bufio.NewReader(c))
	return string(b)
}

func TestRequirePass(t *testing.T) {
	addr := serve(t, Config{ACL: RequirePass("sesame")})
	got := raw(t, addr, "GET a", "PING", "AUTH wrong", "SET a 1", "AUTH sesame", "SET a 1", "GET a")
	want := "-NOAUTH Authentication required.\r\n-NOAUTH Authentication required.\r\n" +
		"-WRONGPASS invalid username-password pair or user is disabled.\r\n-NOAUTH Authentication required.\r\n" +
		"+OK\r\n+OK\r\n$1\r\n1\r\n+OK\r\n"
	if got != want {
		t.Fatalf("replies:\n%q\nwant\n%q", got, want)
	}
	ctx := context.Background()
	// go-redis with the password (it tries HELLO 3 ... AUTH, is told
	// NOPROTO, and falls back to AUTH), and without.
	ok := redis.NewClient(&redis.Options{Addr: addr, Password: "sesame"})
	defer ok.Close()
	if err := ok.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("go-redis with the password: %v", err)
	}
	if v, err := ok.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("go-redis GET: %q %v", v, err)
	}
	none := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer none.Close()
	if err := none.Get(ctx, "k").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatalf("go-redis without a password: %v, want NOAUTH", err)
	}
	bad := redis.NewClient(&redis.Options{Addr: addr, Password: "nope", MaxRetries: -1})
	defer bad.Close()
	if err := bad.Get(ctx, "k").Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("go-redis with a wrong password: %v, want WRONGPASS", err)
	}
	// HELLO 2 AUTH logs in, as clients that speak HELLO do.
	if got := raw(t, addr, "HELLO 2 AUTH default sesame", "GET k"); !strings.Contains(got, "$5\r\nproto\r\n:2\r\n") || !strings.HasSuffix(got, "$1\r\nv\r\n+OK\r\n") {
		t.Fatalf("HELLO 2 AUTH: %q", got)
	}
	if got := raw(t, addr, "HELLO 2 AUTH default nope"); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Fatalf("HELLO with a wrong password: %q", got)
	}
}

func TestACLFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.acl")
	os.WriteFile(file, []byte(`# users
user default off
user app on >apppass ~app:* +@all
user reader on >readpass allkeys +@read
user gone off >gonepass allkeys +@all
`), 0o600)
	acl, err := LoadACL(file)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, Config{ACL: acl})
	got := raw(t, addr,
		"AUTH app apppass", "SET app:1 x", "SET other y", "GET app:1",
		"AUTH reader readpass", "GET app:1", "SET app:2 z", "MGET app:1 other",
		"AUTH app apppass", "INCR app:n", "INCR other", "KEYS *",
		"AUTH reader readpass", "INCR app:n", "DBSIZE",
		"AUTH gone gonepass", "AUTH default anything")
	want := "+OK\r\n+OK\r\n-NOPERM No permissions to access a key\r\n$1\r\nx\r\n" +
		"+OK\r\n$1\r\nx\r\n-NOPERM User reader has no permissions to run the 'set' command\r\n*2\r\n$1\r\nx\r\n$-1\r\n" +
		// (the in-memory backend has no INCR or DBSIZE: the ACL let them through)
		"+OK\r\n-ERR not in the in-memory backend\r\n-NOPERM No permissions to access a key\r\n-NOPERM No permissions to access a key\r\n" +
		"+OK\r\n-NOPERM User reader has no permissions to run the 'incr' command\r\n-ERR not in the in-memory backend\r\n" +
		"-WRONGPASS invalid username-password pair or user is disabled.\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n"
	if got != want {
		t.Fatalf("replies:\n%q\nwant\n%q", got, want)
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr, Username: "app", Password: "apppass"})
	defer c.Close()
	if err := c.Set(ctx, "app:k", "v", 0).Err(); err != nil {
		t.Fatalf("go-redis as app: %v", err)
	}
	for _, bad := range []string{"user x on", "user x on >p +@admin", "user x on >p ~[", "usr x"} {
		if _, err := ParseUser(bad); err == nil {
			t.Errorf("ParseUser(%q) accepted it", bad)
		}
	}
}

// TestIdleAndCap: a connection that sends nothing, or trickles a command
// byte by byte slower than the idle timeout, is closed; the cap refuses
// one connection more with Redis's words, and serving goes on for others.
func TestIdleAndCap(t *testing.T) {
	addr := serve(t, Config{IdleTimeout: 300 * time.Millisecond})
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatal("an idle connection got bytes")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the server did not close an idle connection")
	}
	loris, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer loris.Close()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for _, b := range []byte("*1\r\n$4\r\nPING\r\n") {
			if _, err := loris.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	loris.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(loris); len(b) > 0 || err != nil {
		t.Fatalf("a slow-loris client got %q, %v; want the connection closed", b, err)
	}
	<-closed
	// The cap: two open, the third refused (a server without the idle
	// timeout, so that the two stay open however slow this machine is).
	addr = serve(t, Config{MaxConns: 2})
	a, _ := net.Dial("tcp", addr)
	defer a.Close()
	b, _ := net.Dial("tcp", addr)
	defer b.Close()
	io.WriteString(a, "PING\r\n")
	io.WriteString(b, "PING\r\n")
	for _, c := range []net.Conn{a, b} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "+PONG\r\n" {
			t.Fatalf("a connection under the cap: %q %v", line, err)
		}
	}
	third, _ := net.Dial("tcp", addr)
	defer third.Close()
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, _ := bufio.NewReader(third).ReadString('\n'); line != "-ERR max number of clients reached\r\n" {
		t.Fatalf("a connection over the cap: %q", line)
	}
}

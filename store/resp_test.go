package store

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"tide/resp"
)

// respValue reads one RESP reply: string, int64, nil or []any.
func respValue(t *testing.T, r *bufio.Reader) any {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch line[0] {
	case '+', '-':
		return line
	case ':':
		n, _ := strconv.ParseInt(line[1:], 10, 64)
		return n
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return nil
		}
		b := make([]byte, n+2)
		io.ReadFull(r, b)
		return string(b[:n])
	case '*':
		n, _ := strconv.Atoi(line[1:])
		out := make([]any, n)
		for i := range out {
			out[i] = respValue(t, r)
		}
		return out
	}
	t.Fatalf("bad reply line %q", line)
	return nil
}

func respCmd(t *testing.T, c net.Conn, r *bufio.Reader, args ...string) any {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	return respValue(t, r)
}

// TestRESPCluster checks the slot table that Redis Cluster clients read:
// every node answers the same table, the slots are covered once, each
// range names a member's RESP address, and any node serves any key.
func TestRESPCluster(t *testing.T) {
	nodes := kvCluster(t, 3, func(c *Config) { c.RESPAddr = "127.0.0.1:0" })
	var addrsRESP []string
	for _, n := range nodes {
		addrsRESP = append(addrsRESP, n.respAddr)
	}
	var first string
	for i, n := range nodes {
		c, err := net.Dial("tcp", n.respAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		text, ok := respCmd(t, c, r, "CLUSTER", "NODES").(string)
		if !ok {
			t.Fatalf("CLUSTER NODES is not a bulk string")
		}
		covered := make([]int, resp.HashSlots)
		myself := 0
		var addrs []string
		for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
			f := strings.Fields(line)
			if len(f) != 9 || len(f[0]) != 40 || f[3] != "-" || f[7] != "connected" {
				t.Fatalf("CLUSTER NODES line %q", line)
			}
			addr := strings.Split(f[1], "@")[0]
			addrs = append(addrs, addr)
			if strings.Contains(f[2], "myself") {
				myself++
				if addr != n.respAddr {
					t.Errorf("node %d: myself is %s, want %s", i, addr, n.respAddr)
				}
			}
			var from, to int
			if _, err := fmt.Sscanf(f[8], "%d-%d", &from, &to); err != nil {
				t.Fatalf("slots %q: %v", f[8], err)
			}
			for s := from; s <= to; s++ {
				covered[s]++
			}
		}
		slices.Sort(addrs)
		want := slices.Sorted(slices.Values(addrsRESP))
		if myself != 1 || !slices.Equal(addrs, want) {
			t.Fatalf("node %d: members %v (myself %d times), want %v", i, addrs, myself, want)
		}
		for s, k := range covered {
			if k != 1 {
				t.Fatalf("node %d: slot %d covered %d times", i, s, k)
			}
		}
		// CLUSTER SLOTS agrees with CLUSTER NODES, and every node
		// answers the same table.
		slots, ok := respCmd(t, c, r, "CLUSTER", "SLOTS").([]any)
		if !ok || len(slots) != 3 {
			t.Fatalf("CLUSTER SLOTS: %v", slots)
		}
		table := fmt.Sprint(slots)
		if first == "" {
			first = table
		} else if table != first {
			t.Errorf("node %d answers another slot table: %s, want %s", i, table, first)
		}
		for _, e := range slots {
			e := e.([]any)
			node := e[2].([]any)
			addr := net.JoinHostPort(node[0].(string), fmt.Sprint(node[1].(int64)))
			if !strings.Contains(text, node[2].(string)+" "+addr+"@") {
				t.Errorf("CLUSTER SLOTS range %v-%v at %s (%s) is not in CLUSTER NODES", e[0], e[1], addr, node[2])
			}
		}
		if got := respCmd(t, c, r, "CLUSTER", "KEYSLOT", "foo"); got != int64(12182) {
			t.Errorf("KEYSLOT foo = %v, want 12182", got)
		}
		if a, b := respCmd(t, c, r, "CLUSTER", "KEYSLOT", "{user1000}.following"), respCmd(t, c, r, "CLUSTER", "KEYSLOT", "{user1000}.followers"); a != b {
			t.Errorf("keys with one hash tag in slots %v and %v", a, b)
		}
		if got := respCmd(t, c, r, "CLUSTER", "FAILOVER"); !strings.HasPrefix(fmt.Sprint(got), "-ERR unknown subcommand") {
			t.Errorf("CLUSTER FAILOVER: %v", got)
		}
		// Any node serves any key: no MOVED.
		key := fmt.Sprintf("{tag%d}key", i)
		if got := respCmd(t, c, r, "SET", key, "v"); got != "+OK" {
			t.Fatalf("SET %s on node %d: %v", key, i, got)
		}
	}
	c, err := net.Dial("tcp", nodes[2].respAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for i := range nodes {
		if got := respCmd(t, c, r, "GET", fmt.Sprintf("{tag%d}key", i)); got != "v" {
			t.Errorf("GET {tag%d}key: %v", i, got)
		}
	}
}

// TestRESPOversizedValue sends values over the limit (1 MiB) on one
// connection: each is read to its end and answered with the clear error,
// and the connection goes on serving, alone or pipelined with other
// commands.
func TestRESPOversizedValue(t *testing.T) {
	n := kvCluster(t, 1, func(c *Config) { c.RESPAddr = "127.0.0.1:0" })[0]
	c, err := net.Dial("tcp", n.respAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got := respCmd(t, c, r, "SET", "k", "small"); got != "+OK" {
		t.Fatalf("SET k small = %v", got)
	}
	limit := n.cfg.KV.MaxValue
	for _, size := range []int{limit + 1, 1_500_000, 2 << 20, 3*limit + 12345} {
		big := strings.Repeat("x", size)
		req := fmt.Sprintf("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n", size, big)
		// The server may answer before it has read the whole request (it
		// did, then closed): write on the side, read the reply here.
		wrote := make(chan error, 1)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		go func() {
			_, err := io.WriteString(c, req+"*1\r\n$4\r\nPING\r\n")
			wrote <- err
		}()
		got, ok := respValue(t, r).(string)
		if !ok || !strings.HasPrefix(got, "-ERR ") || !strings.Contains(got, "larger than the limit") {
			t.Fatalf("SET of %d bytes answered %q, want an error saying it is larger than the limit", size, got)
		}
		if !strings.Contains(got, strconv.Itoa(size)) || !strings.Contains(got, strconv.Itoa(limit)) {
			t.Errorf("SET of %d bytes answered %q, want the size and the limit (%d) in it", size, got, limit)
		}
		if got := respValue(t, r); got != "+PONG" {
			t.Fatalf("PING pipelined after a SET of %d bytes = %v", size, got)
		}
		if err := <-wrote; err != nil {
			t.Fatalf("writing a SET of %d bytes: %v", size, err)
		}
		if got := respCmd(t, c, r, "GET", "k"); got != "small" {
			t.Fatalf("GET k after a refused SET of %d bytes = %v, want the value before it", size, got)
		}
	}
	// A value at the limit is still stored.
	atLimit := strings.Repeat("y", limit)
	if got := respCmd(t, c, r, "SET", "k", atLimit); got != "+OK" {
		t.Fatalf("SET of %d bytes (the limit) = %v", limit, got)
	}
	if got := respCmd(t, c, r, "GET", "k"); got != atLimit {
		t.Fatalf("GET k after a SET at the limit returned %d bytes", len(got.(string)))
	}
}

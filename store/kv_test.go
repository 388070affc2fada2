package store

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func kvCluster(t *testing.T, size int, mod func(*Config)) []*Node {
	t.Helper()
	nodes := []*Node{startTestNode(t, "", 3, mod)}
	for len(nodes) < size {
		nodes = append(nodes, startTestNode(t, nodes[0].ring.Self().Addr(), 3, mod))
	}
	waitFor(t, "ring to converge", func() bool { return ringConverged(nodes) })
	waitFor(t, "every node to see every member", func() bool {
		for _, n := range nodes {
			if len(n.kvRing.Load().members) != size {
				n.RefreshRing()
				return false
			}
		}
		return true
	})
	return nodes
}

func TestKVQuorumRoundTrip(t *testing.T) {
	nodes := kvCluster(t, 4, nil)
	ctx := context.Background()
	for i := range 50 {
		key := []byte(fmt.Sprintf("key-%d\xff", i)) // not UTF-8: allowed
		if _, err := nodes[i%4].kv.Put(ctx, key, []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		key := []byte(fmt.Sprintf("key-%d\xff", i))
		rec, found, err := nodes[(i+1)%4].kv.Get(ctx, key, 0)
		if err != nil || !found || string(rec.Value) != fmt.Sprint(i) {
			t.Fatalf("get %q = %q %v %v", key, rec.Value, found, err)
		}
	}
	// Every key is on exactly N=3 nodes.
	waitFor(t, "3 copies of every key", func() bool {
		for i := range 50 {
			key := []byte(fmt.Sprintf("key-%d\xff", i))
			k := 0
			for _, n := range nodes {
				if _, ok, _ := (n.eng.KV()).Get(key); ok {
					k++
				}
			}
			if k != 3 {
				return false
			}
		}
		return true
	})
	if _, err := nodes[0].kv.Delete(ctx, []byte("key-1\xff"), 0); err != nil {
		t.Fatal(err)
	}
	if _, found, err := nodes[2].kv.Get(ctx, []byte("key-1\xff"), 0); err != nil || found {
		t.Fatalf("deleted key: found=%v %v", found, err)
	}
}

func TestSeedRoutes(t *testing.T) {
	nodes := kvCluster(t, 3, nil)
	base := "http://" + nodes[1].HTTPAddr()
	resp, err := http.PostForm(base+"/route", url.Values{"key": {"bed"}, "val": {"sheets"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "OK" {
		t.Fatalf("POST /route: %d %q", resp.StatusCode, b)
	}
	if code, body := httpGet(t, "http://"+nodes[2].HTTPAddr()+"/route?key=bed"); code != 200 || body != "sheets" {
		t.Fatalf("GET /route: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/route?key=nothing"); code != 200 || body != "N/A" {
		t.Fatalf("GET /route unknown key: %d %q", code, body)
	}
	code, owner := httpGet(t, base+"/route_test?key=bed")
	if want, err := nodes[1].KVOwner([]byte("bed")); err != nil || code != 200 || owner != want.addrs["http"] {
		t.Fatalf("route_test: %d %q", code, owner)
	}
	code, ring := httpGet(t, base+"/hash_ring")
	if code != 200 || !strings.Contains(ring, `"_sorted_keys"`) || !strings.Contains(ring, nodes[0].HTTPAddr()) {
		t.Fatalf("hash_ring: %d %s", code, ring)
	}
	// Bad input.
	if code, _ := httpGet(t, base+"/remove_node/127.0.0.1:1"); code != 404 {
		t.Errorf("remove of an unknown node: %d, want 404", code)
	}
	if code, _ := httpGet(t, base+"/add_node/abc/127.0.0.1:1"); code != 400 {
		t.Errorf("add_node with a bad token: %d, want 400", code)
	}
	tok := nodes[0].ring.Self().ID
	if code, _ := httpGet(t, fmt.Sprintf("%s/add_node/%d/127.0.0.1:1", base, tok)); code != 409 {
		t.Errorf("add_node with a taken token: %d, want 409", code)
	}
	big := strings.Repeat("x", (1<<20)+1)
	req, _ := http.NewRequest(http.MethodPut, base+"/kv/big", strings.NewReader(big))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("oversized value: %d, want 413", resp.StatusCode)
	}
	// A quorum above N can never be met: refused, not reported as met.
	for _, u := range []string{"/kv/q?w=4", "/kv/q?w=0", "/kv/q?w=x"} {
		req, _ := http.NewRequest(http.MethodPut, base+u, strings.NewReader("v"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("PUT %s: %d %s, want 400", u, resp.StatusCode, b)
		}
	}
	if code, body := httpGet(t, base+"/kv/q?r=4"); code != 400 || !strings.Contains(body, "above the 3 replicas") {
		t.Errorf("GET ?r=4: %d %q, want 400 naming N", code, body)
	}
	if code, _ := httpGet(t, base+"/kv/nothing?r=3"); code != 404 {
		t.Errorf("GET ?r=3 of a missing key: %d, want 404", code)
	}
}

// respLine reads one reply line, failing the test on a read error (the
// connection's deadline is generous: see respPipeline).
func respLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read a reply: %v (after %q)", err, line)
	}
	return line
}

// respPipeline writes a pipeline of commands, with a read deadline for
// all its replies that a loaded machine does not reach.
func respPipeline(c net.Conn, cmds string) {
	c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	c.Write([]byte(cmds))
}

func respDo(t *testing.T, c net.Conn, r *bufio.Reader, cmd string) string {
	t.Helper()
	c.Write([]byte(cmd))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("%q: %v", cmd, err)
	}
	if line[0] == '$' && line != "$-1\r\n" {
		var n int
		fmt.Sscanf(line, "$%d", &n)
		b := make([]byte, n+2)
		io.ReadFull(r, b)
		return line + string(b)
	}
	return line
}

func TestRESP(t *testing.T) {
	var addr string
	nodes := kvCluster(t, 3, func(c *Config) { c.RESPAddr = "127.0.0.1:0" })
	addr = nodes[0].respAddr
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	cases := []struct{ cmd, want string }{
		{"PING\r\n", "+PONG\r\n"},
		{"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$5\r\nhello\r\n", "+OK\r\n"},
		{"*2\r\n$3\r\nGET\r\n$1\r\na\r\n", "$5\r\nhello\r\n"},
		{"*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n", "$-1\r\n"},
		{"*3\r\n$6\r\nEXISTS\r\n$1\r\na\r\n$7\r\nmissing\r\n", ":1\r\n"},
		{"*2\r\n$3\r\nDEL\r\n$1\r\na\r\n", ":1\r\n"},
		{"*2\r\n$3\r\nGET\r\n$1\r\na\r\n", "$-1\r\n"},
		{"*2\r\n$5\r\nFLUSH\r\n$1\r\nx\r\n", "-ERR unknown command 'FLUSH', with args beginning with: 'x'\r\n"},
		{"*1\r\n$3\r\nGET\r\n", "-ERR wrong number of arguments for 'get' command\r\n"},
		{"*4\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n$7\r\nappend*\r\n", "*6\r\n"},
		{"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$7\r\nnothing\r\n", "*0\r\n"},
		{"*2\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n", "-ERR CONFIG supports only GET in tide\r\n"},
	}
	for _, tc := range cases {
		if got := respDo(t, c, r, tc.cmd); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.cmd, got, tc.want)
		}
		if tc.want == "*6\r\n" {
			var got []string
			for range 6 {
				hdr := respLine(t, r)
				v := respLine(t, r)
				got = append(got, hdr+v)
			}
			want := []string{"$4\r\nsave\r\n", "$0\r\n\r\n", "$10\r\nappendonly\r\n", "$3\r\nyes\r\n", "$11\r\nappendfsync\r\n", "$6\r\nalways\r\n"}
			if !slices.Equal(got, want) {
				t.Errorf("CONFIG GET save append*: %q, want %q", got, want)
			}
		}
	}
	// Pipelining: many commands in one write, answered in order.
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "*3\r\n$3\r\nSET\r\n$4\r\nk%03d\r\n$3\r\n%03d\r\n", i, i)
	}
	for i := range 100 {
		fmt.Fprintf(&b, "*2\r\n$3\r\nGET\r\n$4\r\nk%03d\r\n", i)
	}
	respPipeline(c, b.String())
	for range 100 {
		if line := respLine(t, r); line != "+OK\r\n" {
			t.Fatalf("pipelined SET: %q", line)
		}
	}
	for i := range 100 {
		line := respLine(t, r)
		val := respLine(t, r)
		if line != "$3\r\n" || val != fmt.Sprintf("%03d\r\n", i) {
			t.Fatalf("pipelined GET %d: %q %q", i, line, val)
		}
	}
	// A pipeline takes effect in order also when its commands share a key:
	// batched GETs and SETs among themselves, and around the commands that
	// run on their own.
	bulk := func(args ...string) string {
		out := fmt.Sprintf("*%d\r\n", len(args))
		for _, a := range args {
			out += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
		}
		return out
	}
	for round := range 20 {
		b.Reset()
		var want []string
		for k := range 8 {
			key := fmt.Sprintf("same%d-%d", round, k)
			steps := []struct{ cmd, want string }{
				{bulk("SET", key, "v1"), "+OK\r\n"},
				{bulk("GET", key), "$2\r\nv1\r\n"},
				{bulk("SET", key, "v2"), "+OK\r\n"},
				{bulk("SET", key, "v3"), "+OK\r\n"},
				{bulk("GET", key), "$2\r\nv3\r\n"},
				{bulk("DEL", key), ":1\r\n"},
				{bulk("GET", key), "$-1\r\n"},
				{bulk("SET", key, "v4"), "+OK\r\n"},
				{bulk("EXISTS", key), ":1\r\n"},
				{bulk("MSET", key, "v5", key+"x", "y"), "+OK\r\n"},
				{bulk("GET", key), "$2\r\nv5\r\n"},
			}
			for _, st := range steps {
				b.WriteString(st.cmd)
				want = append(want, st.want)
			}
		}
		respPipeline(c, b.String())
		for i, w := range want {
			got := respLine(t, r)
			if got[0] == '$' && got != "$-1\r\n" {
				val := respLine(t, r)
				got += val
			}
			if got != w {
				t.Fatalf("round %d, reply %d of a same-key pipeline: %q, want %q", round, i, got, w)
			}
		}
	}
	// A wrong bulk length is a protocol error that closes the connection.
	if got := respDo(t, c, r, "*2\r\n$3\r\nGET\r\n$abc\r\n"); !strings.HasPrefix(got, "-ERR Protocol error") {
		t.Fatalf("bad bulk length: %q", got)
	}
}

// TestKVDriverMetrics checks that the KV driver's rounds and fsyncs show
// in /metrics: a node that coordinated writes committed rounds, stepped
// at least its clients' requests, and synced its log before answering.
func TestKVDriverMetrics(t *testing.T) {
	nodes := kvCluster(t, 3, nil)
	ctx := context.Background()
	const writes = 30
	for i := range writes {
		if _, err := nodes[0].kv.Put(ctx, []byte(fmt.Sprint("m", i)), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	fams, err := nodes[0].m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetHistogram() != nil:
				got[f.GetName()+"_count"] = float64(m.GetHistogram().GetSampleCount())
				got[f.GetName()+"_sum"] = m.GetHistogram().GetSampleSum()
			case m.GetCounter() != nil:
				got[f.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	if got["tide_kv_rounds_committed_total"] < 1 {
		t.Errorf("tide_kv_rounds_committed_total = %v after %d writes", got["tide_kv_rounds_committed_total"], writes)
	}
	if got["tide_kv_round_messages_sum"] < writes {
		t.Errorf("tide_kv_round_messages_sum = %v, want at least the %d requests", got["tide_kv_round_messages_sum"], writes)
	}
	if got["tide_kv_wal_sync_seconds_count"] < 1 || got["tide_kv_wal_sync_seconds_sum"] <= 0 {
		t.Errorf("no fsync timed: count %v, sum %v", got["tide_kv_wal_sync_seconds_count"], got["tide_kv_wal_sync_seconds_sum"])
	}
}

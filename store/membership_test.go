package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
)

// seedRing is a table as the seed's /hash_ring shows it: token -> node.
type seedRing map[int]string

func (sr seedRing) data() string {
	var toks []int
	for t := range sr {
		toks = append(toks, t)
	}
	sort.Ints(toks)
	var parts []string
	for _, t := range toks {
		parts = append(parts, fmt.Sprintf(`{"ip":%q,"key":%d}`, sr[t], t))
	}
	return `{"nodes":[` + strings.Join(parts, ",") + `]}`
}

// owner is the seed's rule: the first token >= the key's position,
// wrapping around.
func (sr seedRing) owner(pos uint32) string {
	var toks []int
	for t := range sr {
		toks = append(toks, t)
	}
	sort.Ints(toks)
	for _, t := range toks {
		if t >= int(pos) {
			return sr[t]
		}
	}
	return sr[toks[0]]
}

// checkSeedRing checks, on every node given, that /hash_ring shows want
// and that route_test names the seed's owner of every key: at once, with
// no waiting.
func checkSeedRing(t *testing.T, nodes []*Node, want seedRing, keys []string) {
	t.Helper()
	for _, n := range nodes {
		code, body := httpGet(t, "http://"+n.HTTPAddr()+"/hash_ring")
		var hr struct {
			Ring       map[string]string `json:"ring"`
			SortedKeys []int             `json:"_sorted_keys"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &hr) != nil {
			t.Fatalf("%s: hash_ring: %d %s", n.HTTPAddr(), code, body)
		}
		if len(hr.Ring) != len(want) || len(hr.SortedKeys) != len(want) || !sort.IntsAreSorted(hr.SortedKeys) {
			t.Fatalf("%s (%s): hash_ring %s, want %v", n.HTTPAddr(), n.state(), body, want)
		}
		for tok, addr := range want {
			if hr.Ring[fmt.Sprint(tok)] != addr {
				t.Fatalf("%s (%s): hash_ring %s, want %v", n.HTTPAddr(), n.state(), body, want)
			}
		}
		for _, k := range keys {
			code, owner := httpGet(t, "http://"+n.HTTPAddr()+"/route_test?key="+url.QueryEscape(k))
			if want := want.owner(n.pos([]byte(k))); code != 200 || owner != want {
				t.Fatalf("%s: route_test %s (position %d) = %d %s, want %s", n.HTTPAddr(), k, n.pos([]byte(k)), code, owner, want)
			}
		}
	}
}

// TestSeedReconfigure runs the Dynamo seed's deployment in one process:
// three standbys, reconfigure.sh (clear_cache, then POST /hash_ring on each
// node: two members at 3000 and 8000, the third left a standby), writes and
// reads through every node in turn, add_node of the standby at 5000, and
// remove_node of the 8000 node. After each change's OK every node routes
// by the new ring at once; the removed node stays up as a standby; every
// value is there; and no request through the two nodes left waits for a
// replica to be asked again.
func TestSeedReconfigure(t *testing.T) {
	var nodes []*Node
	for range 3 {
		nodes = append(nodes, startTestNode(t, "", 3, func(c *Config) {
			c.Standby = true
			c.Partitioner = "md5-mod10000"
		}))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		if code, body := httpGet(t, "http://"+n.HTTPAddr()+"/route_test?key=bed"); code != 503 || !strings.Contains(body, "not in a ring") {
			t.Fatalf("route_test on an idle node: %d %q, want 503 saying it is not in a ring", code, body)
		}
	}
	ring := seedRing{3000: a.HTTPAddr(), 8000: b.HTTPAddr()}
	for _, n := range nodes {
		if code, body := httpGet(t, "http://"+n.HTTPAddr()+"/clear_cache"); code != 200 || body != "OK" {
			t.Fatalf("clear_cache: %d %q", code, body)
		}
	}
	for _, n := range nodes {
		resp, err := http.PostForm("http://"+n.HTTPAddr()+"/hash_ring", url.Values{"data": {ring.data()}})
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(resp)
		if resp.StatusCode != 200 || body != "OK" {
			t.Fatalf("POST /hash_ring to %s: %d %q", n.HTTPAddr(), resp.StatusCode, body)
		}
	}
	keys := []string{"bed", "roof", "apple", "chair", "desk", "lamp", "rug", "sofa", "stool", "table", "vase", "clock", "shelf"}
	checkSeedRing(t, nodes, ring, keys)
	if a.state() != "member" || b.state() != "member" || c.state() != "standby" {
		t.Fatalf("states %s %s %s, want member member standby", a.state(), b.state(), c.state())
	}
	for i, k := range keys {
		via := nodes[i%3]
		resp, err := http.PostForm("http://"+via.HTTPAddr()+"/route", url.Values{"key": {k}, "val": {fmt.Sprint("v", i)}})
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(resp); body != "OK" {
			t.Fatalf("store %s through %s: %d %q", k, via.HTTPAddr(), resp.StatusCode, body)
		}
	}
	checkValues := func(via []*Node) {
		t.Helper()
		for _, n := range via {
			for i, k := range keys {
				if code, v := httpGet(t, "http://"+n.HTTPAddr()+"/route?key="+url.QueryEscape(k)); code != 200 || v != fmt.Sprint("v", i) {
					t.Fatalf("route %s through %s = %d %q, want v%d", k, n.HTTPAddr(), code, v, i)
				}
			}
		}
	}
	checkValues(nodes)
	// The standby owns nothing.
	waitFor(t, "the standby to hold nothing", func() bool { k, _ := c.eng.KVCount(); return k == 0 })

	if code, body := httpGet(t, "http://"+b.HTTPAddr()+"/add_node/5000/"+c.HTTPAddr()); code != 200 || body != "OK" {
		t.Fatalf("add_node: %d %q", code, body)
	}
	ring[5000] = c.HTTPAddr()
	checkSeedRing(t, nodes, ring, keys)
	checkValues(nodes)

	resends := func() int { return a.kv.Stats().Resends + c.kv.Stats().Resends }
	before := resends()
	if code, body := httpGet(t, "http://"+c.HTTPAddr()+"/remove_node/"+b.HTTPAddr()); code != 200 || body != "OK" {
		t.Fatalf("remove_node: %d %q", code, body)
	}
	delete(ring, 8000)
	checkSeedRing(t, nodes, ring, keys) // b included: up, out of the ring, routing by it
	if b.state() != "standby" {
		t.Fatalf("the removed node is %s, want standby", b.state())
	}
	checkValues([]*Node{a, c})
	checkValues(nodes)
	waitFor(t, "the removed node to hold nothing", func() bool { k, _ := b.eng.KVCount(); return k == 0 })
	// Shut down, the removed node answers nothing; still within the
	// transition window of the add, no request through the two nodes left
	// may wait for it.
	bCfg := restartConfig(b)
	b.Close()
	for i, k := range keys {
		resp, err := http.PostForm("http://"+nodes[i%2*2].HTTPAddr()+"/route", url.Values{"key": {k}, "val": {fmt.Sprint("v", i)}})
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(resp); body != "OK" {
			t.Fatalf("store %s after the removal: %d %q", k, resp.StatusCode, body)
		}
	}
	checkValues([]*Node{a, c})
	if r := resends() - before; r != 0 {
		t.Fatalf("requests through the two nodes left were sent to a replica again %d times: one waited for a node that left", r)
	}
	// Restarted, it is a standby again.
	bCfg.Standby = false
	b, err := Start(context.Background(), bCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	nodes[1] = b
	waitFor(t, "the restarted standby to know the ring", func() bool { r, ok := b.kv.Applied().(*kvRing); return ok && len(r.members) == 2 })
	if b.state() != "standby" {
		t.Fatalf("the restarted removed node is %s, want standby", b.state())
	}
	checkSeedRing(t, nodes, ring, keys)

	// Bad input is refused with a reason.
	for _, tc := range []struct{ data, want string }{
		{`{"nodes":[]}`, "no nodes"},
		{`{"nodes":[{"ip":"x","key":1}]}`, "want IP:PORT"},
		{`{"nodes":[{"ip":"127.0.0.1:1","key":12000}]}`, "out of range"},
		{`{"nodes":[{"ip":"127.0.0.1:1"}]}`, "missing key"},
		{`not json`, "want {"},
		{fmt.Sprintf(`{"nodes":[{"ip":%q,"key":1},{"ip":%q,"key":1}]}`, a.HTTPAddr(), c.HTTPAddr()), "given to both"},
	} {
		resp, err := http.PostForm("http://"+a.HTTPAddr()+"/hash_ring", url.Values{"data": {tc.data}})
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(resp); resp.StatusCode != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("POST /hash_ring data=%s: %d %q, want 400 saying %q", tc.data, resp.StatusCode, body, tc.want)
		}
	}
	resp, err := http.PostForm("http://"+a.HTTPAddr()+"/hash_ring", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(resp); resp.StatusCode != 400 || !strings.Contains(body, "missing form field data") {
		t.Errorf("POST /hash_ring without data: %d %q", resp.StatusCode, body)
	}

	// The removed node can be added again, at another token.
	if code, body := httpGet(t, "http://"+b.HTTPAddr()+"/add_node/9000/"+b.HTTPAddr()); code != 200 || body != "OK" {
		t.Fatalf("add_node of the removed node: %d %q", code, body)
	}
	ring[9000] = b.HTTPAddr()
	checkSeedRing(t, nodes, ring, keys)
	checkValues(nodes)
	if slices.ContainsFunc(nodes, func(n *Node) bool { return n.state() != "member" }) {
		t.Fatal("a node is not a member after the last add_node")
	}

	// Two removals leave a one-node ring, which still answers every
	// request at once, through every node.
	before = resends() + b.kv.Stats().Resends
	for _, x := range []*Node{b, c} {
		if code, body := httpGet(t, "http://"+a.HTTPAddr()+"/remove_node/"+x.HTTPAddr()); code != 200 || body != "OK" {
			t.Fatalf("remove_node %s: %d %q", x.HTTPAddr(), code, body)
		}
	}
	ring = seedRing{3000: a.HTTPAddr()}
	checkSeedRing(t, nodes, ring, keys)
	checkValues(nodes)
	if r := resends() + b.kv.Stats().Resends - before; r != 0 {
		t.Fatalf("requests on the one-node ring were sent to a replica again %d times", r)
	}
	if code, _ := httpGet(t, "http://"+c.HTTPAddr()+"/remove_node/"+a.HTTPAddr()); code != 400 {
		t.Fatalf("removing the last node: %d, want 400", code)
	}
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		k, err := resp.Body.Read(buf)
		b.Write(buf[:k])
		if err != nil {
			return b.String()
		}
	}
}

// TestSetRingFromLoneNodes posts the seed's ring to nodes started as plain
// `tide node`s, each a ring of its own at the token its address hashes to:
// the listed ones take their tokens and form one ring, the third becomes a
// standby, and a key it held in its own ring moves to the members.
func TestSetRingFromLoneNodes(t *testing.T) {
	var nodes []*Node
	for range 3 {
		nodes = append(nodes, startTestNode(t, "", 3, func(c *Config) { c.Partitioner = "md5-mod10000" }))
	}
	a, b, c := nodes[0], nodes[1], nodes[2]
	if _, err := c.kv.Put(context.Background(), []byte("before"), []byte("on c"), 0); err != nil {
		t.Fatal(err)
	}
	ring := seedRing{3000: a.HTTPAddr(), 8000: b.HTTPAddr()}
	for _, n := range []*Node{c, a, b} {
		resp, err := http.PostForm("http://"+n.HTTPAddr()+"/hash_ring", url.Values{"data": {ring.data()}})
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(resp); resp.StatusCode != 200 || body != "OK" {
			t.Fatalf("POST /hash_ring to %s: %d %q", n.HTTPAddr(), resp.StatusCode, body)
		}
	}
	checkSeedRing(t, nodes, ring, []string{"bed", "roof", "before"})
	if a.state() != "member" || b.state() != "member" || c.state() != "standby" {
		t.Fatalf("states %s %s %s, want member member standby", a.state(), b.state(), c.state())
	}
	waitFor(t, "c's key to move to the members", func() bool {
		rec, found, err := a.kv.Get(context.Background(), []byte("before"), 0)
		return err == nil && found && string(rec.Value) == "on c"
	})
	waitFor(t, "the standby to hold nothing", func() bool { k, _ := c.eng.KVCount(); return k == 0 })
}

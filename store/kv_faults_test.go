package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"tide/kv"
)

// TestKVTombstoneCollected deletes keys in a 3-node ring (N=3) with a short
// tombstone TTL and a fast anti-entropy period: each delete leaves a
// tombstone on every replica, every replica collects it once the TTL has
// passed, and the keys stay deleted afterwards, through further
// anti-entropy and hand-off passes; live keys are untouched.
func TestKVTombstoneCollected(t *testing.T) {
	const ttl = 3 * time.Second
	const syncTicks = 20 // 200ms digests; hand-off (and collection) every 2s
	nodes := kvCluster(t, 3, func(c *Config) {
		c.KV.TombstoneTTL = uint64(ttl.Nanoseconds())
		c.KV.SyncTicks = syncTicks
	})
	ctx := context.Background()
	const keys = 20
	key := func(i int) []byte { return []byte(fmt.Sprintf("tomb-%d", i)) }
	live := []byte("stays")
	for i := range keys {
		if _, err := nodes[i%3].KVPut(ctx, key(i), []byte(fmt.Sprint("v", i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nodes[0].KVPut(ctx, live, []byte("here"), 0); err != nil {
		t.Fatal(err)
	}
	// held reports what replica n holds of k: nothing, a value or a
	// tombstone.
	held := func(n *Node, k []byte) string {
		r, ok, err := kvStorage{n.eng}.Get(k)
		switch {
		case err != nil:
			return "error: " + err.Error()
		case !ok:
			return "nothing"
		case r.Tomb:
			return "tombstone"
		}
		return "value"
	}
	everywhere := func(want string) func() bool {
		return func() bool {
			for i := range keys {
				for _, n := range nodes {
					if held(n, key(i)) != want {
						return false
					}
				}
			}
			return true
		}
	}
	waitFor(t, "every key on every replica", everywhere("value"))
	deleted := time.Now()
	for i := range keys {
		if _, err := nodes[(i+1)%3].KVDelete(ctx, key(i), 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a tombstone of every key on every replica", everywhere("tombstone"))
	if since := time.Since(deleted); since >= ttl {
		t.Fatalf("tombstones seen on every replica only %s after the deletes, past the TTL of %s: raise the TTL", since, ttl)
	}
	for i := range keys {
		if _, found, err := nodes[i%3].KVGet(ctx, key(i), 0); err != nil || found {
			t.Fatalf("get deleted %s: found=%v err=%v", key(i), found, err)
		}
	}

	waitFor(t, "every tombstone collected on every replica", everywhere("nothing"))
	gone := time.Since(deleted)
	if gone < ttl {
		t.Fatalf("tombstones gone %s after the deletes, before the TTL of %s", gone, ttl)
	}
	// Each replica collected each tombstone once: none was handed back
	// to a replica that had collected it already.
	collected := 0
	for _, n := range nodes {
		collected += n.KVStats().TombstonesCollected
	}
	if collected != 3*keys {
		t.Fatalf("%d tombstones collected, want one per key and replica: %d", collected, 3*keys)
	}

	// Two more hand-off periods, with anti-entropy in between: no replica
	// gets a value or a tombstone back, and reads find nothing.
	until := time.Now().Add(2 * 10 * syncTicks * 10 * time.Millisecond)
	for time.Now().Before(until) {
		for i := range keys {
			for j, n := range nodes {
				if h := held(n, key(i)); h != "nothing" {
					t.Fatalf("%s came back on node %d after collection: %s", key(i), j, h)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range keys {
		if _, found, err := nodes[(i+2)%3].KVGet(ctx, key(i), 0); err != nil || found {
			t.Fatalf("get collected %s: found=%v err=%v", key(i), found, err)
		}
	}
	for j, n := range nodes {
		if h := held(n, live); h != "value" {
			t.Fatalf("live key on node %d: %s", j, h)
		}
	}
	// The record counts each node keeps as it writes match its records:
	// writes, tombstones and collections all counted.
	for j, n := range nodes {
		keys, bytes := n.eng.kvCount()
		sk, sb, err := n.eng.scanKVCount()
		if err != nil || int64(keys) != sk || bytes != sb || sk != 1 {
			t.Fatalf("node %d counts %d records of %d bytes; a scan finds %d of %d (%v), want the one live key", j, keys, bytes, sk, sb, err)
		}
	}
	t.Logf("%d tombstones collected; every replica clean %s after the deletes (TTL %s)", collected, gone.Round(time.Millisecond), ttl)
}

// The KV record counts follow puts, overwrites, tombstones and deletes,
// and survive a restart; a data directory without them is counted once.
func TestKVCountsKept(t *testing.T) {
	dir := t.TempDir()
	pos := kv.Partitioners["md5-low32"]
	e, err := OpenEngine(dir, pos)
	if err != nil {
		t.Fatal(err)
	}
	rec := func(k, v string, ver uint64, tomb bool) *kv.Record {
		return &kv.Record{Key: []byte(k), Value: []byte(v), Version: ver, Tomb: tomb}
	}
	steps := [][]kv.PersistOp{
		{{Put: rec("a", "1234", 1, false)}, {Put: rec("b", "56", 1, false)}},
		{{Put: rec("a", "7", 2, false), Had: true, HadBytes: 5}},
		{{Put: rec("b", "", 3, true), Had: true, HadBytes: 3}, {Put: rec("c", "xyz", 1, false)}},
		{{Delete: []byte("b"), Had: true, HadBytes: 1}},
	}
	for i, ops := range steps {
		if err := e.applyKV(ops, false); err != nil {
			t.Fatal(err)
		}
		keys, bytes := e.kvCount()
		sk, sb, err := e.scanKVCount()
		if err != nil || int64(keys) != sk || bytes != sb {
			t.Fatalf("after step %d: counted %d records of %d bytes, a scan finds %d of %d (%v)", i, keys, bytes, sk, sb, err)
		}
	}
	// ScanVersions sees what Scan sees, without the values.
	var full, meta []string
	kvStorage{e}.Scan(0, 0, func(p uint32, r kv.Record) bool {
		full = append(full, fmt.Sprint(p, string(r.Key), r.Version, r.Tomb))
		return true
	})
	kvStorage{e}.ScanVersions(0, 0, func(p uint32, r kv.Record) bool {
		if r.Value != nil {
			t.Errorf("ScanVersions passed the value of %s", r.Key)
		}
		meta = append(meta, fmt.Sprint(p, string(r.Key), r.Version, r.Tomb))
		return true
	})
	if len(full) != 2 || strings.Join(full, ";") != strings.Join(meta, ";") {
		t.Fatalf("Scan saw %q, ScanVersions %q", full, meta)
	}
	e.Close()
	e, err = OpenEngine(dir, pos)
	if err != nil {
		t.Fatal(err)
	}
	if keys, bytes := e.kvCount(); keys != 2 || bytes != 2+4 {
		t.Fatalf("after a restart: %d records of %d bytes, want 2 of 6", keys, bytes)
	}
	// Without the stored counts (a directory from before them), the
	// records are counted when the engine opens.
	if err := e.db.Delete([]byte(kvCountKey), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e, err = OpenEngine(dir, pos)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if keys, bytes := e.kvCount(); keys != 2 || bytes != 6 {
		t.Fatalf("counted on open: %d records of %d bytes, want 2 of 6", keys, bytes)
	}
}

func TestJoinsItself(t *testing.T) {
	ctx := context.Background()
	tcp := func(s string) net.Addr {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	cases := []struct {
		join, advertise, listen string
		want                    bool
	}{
		{"127.0.0.1:5057", "", "127.0.0.1:5057", true},
		{"127.0.0.1:5058", "", "127.0.0.1:5057", false}, // another port
		{"127.0.0.2:5057", "", "127.0.0.1:5057", false}, // another loopback host, same port
		{"localhost:5057", "", "127.0.0.1:5057", true},  // a name of the listen address
		{"localhost:5057", "", "0.0.0.0:5057", true},    // listening everywhere
		{"127.0.0.9:5057", "", "0.0.0.0:5057", true},    // any loopback address reaches 0.0.0.0
		{"tide-0.tide.ns.svc:5057", "tide-0.tide.ns.svc", "0.0.0.0:5057", true},
		{"TIDE-0.tide.ns.svc.:5057", "tide-0.tide.ns.svc", "0.0.0.0:5057", true},
		{"tide-0.tide.ns.svc:5057", "tide-1.tide.ns.svc", "0.0.0.0:5057", false}, // unresolvable, not advertised
		{"192.0.2.7:5057", "", "0.0.0.0:5057", false},                            // not an address of this machine
		{"no-port", "", "127.0.0.1:5057", false},
	}
	for _, c := range cases {
		if got := joinsItself(ctx, c.join, c.advertise, tcp(c.listen)); got != c.want {
			t.Errorf("joinsItself(join %s, advertise %q, listen %s) = %v, want %v", c.join, c.advertise, c.listen, got, c.want)
		}
	}
}

// TestJoinSelfCreatesOrRejoins starts a node whose Join is its own chord
// address: it creates a ring, a second node joins it, and after a restart
// with the same Join and data directory it rejoins that ring.
func TestJoinSelfCreatesOrRejoins(t *testing.T) {
	cfg := Config{
		ChordAddr: freeAddr(t), HTTPAddr: freeAddr(t), DataDir: t.TempDir(),
		Replicas: 2, TickInterval: 50 * time.Millisecond, RepairInterval: 50 * time.Millisecond,
		FullRepairInterval: time.Second, Log: testLog(),
	}
	cfg.Join = cfg.ChordAddr
	start := func() *Node {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := Start(ctx, cfg)
		if err != nil {
			t.Fatalf("start with --join at itself: %v", err)
		}
		return n
	}
	first := start()
	defer func() { first.Close() }()
	if first.ring.Successor(0) != first.ring.Self() {
		t.Fatalf("a node joining itself should be alone in a new ring, successor %s", first.ring.Successor(0))
	}
	second := startTestNode(t, cfg.ChordAddr, 2, nil)
	nodes := []*Node{first, second}
	waitFor(t, "ring of two", func() bool { return ringConverged(nodes) })
	waitKVMembers(t, nodes)
	if _, err := second.KVPut(context.Background(), []byte("k"), []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	first.Close()
	waitFor(t, "the second node to notice", func() bool { return second.ring.Successor(0) == second.ring.Self() })
	first = start()
	nodes[0] = first
	waitFor(t, "the restarted node to rejoin the remembered ring", func() bool { return ringConverged(nodes) })
	waitKVMembers(t, nodes)
	rec, found, err := first.KVGet(context.Background(), []byte("k"), 0)
	if err != nil || !found || string(rec.Value) != "v" {
		t.Fatalf("get after rejoin: %q found=%v err=%v", rec.Value, found, err)
	}
}

// TestLeftNodeRefusesToStart drains a node, then starts it again on the
// same data directory: Start fails with ErrLeft and says how to rejoin. On
// an empty data directory the same addresses join again.
func TestLeftNodeRefusesToStart(t *testing.T) {
	nodes := kvCluster(t, 3, nil)
	ctx := context.Background()
	for i := range 30 {
		if _, err := nodes[i%3].KVPut(ctx, []byte(fmt.Sprint("left-", i)), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	leaver := nodes[2]
	cfg := leaver.cfg
	cfg.Join = nodes[0].ring.Self().Addr()
	cfg.ID = nil // as the command line gives it: the token comes from the data directory
	c := NewClient()
	defer c.Close()
	if _, err := c.Leave(ctx, leaver.ring.Self().Addr()); err != nil {
		t.Fatal(err)
	}
	<-leaver.Stopped()
	leaver.Close()
	n, err := Start(ctx, cfg)
	if err == nil {
		n.Close()
		t.Fatal("a node that left started again on its data directory")
	}
	if !errors.Is(err, ErrLeft) || !strings.Contains(err.Error(), "start it with an empty --data-dir") {
		t.Fatalf("start after leave: %v, want ErrLeft with advice", err)
	}
	// Start released the data directory and the addresses it took.
	if _, err := Start(ctx, cfg); !errors.Is(err, ErrLeft) {
		t.Fatalf("second start after leave: %v, want ErrLeft", err)
	}
	cfg.DataDir = t.TempDir()
	n, err = Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start on an empty data directory: %v", err)
	}
	defer n.Close()
	rest := []*Node{nodes[0], nodes[1], n}
	waitFor(t, "the fresh node to join", func() bool { return ringConverged(rest) })
	waitKVMembers(t, rest)
	for i := range 30 {
		rec, found, err := n.KVGet(ctx, []byte(fmt.Sprint("left-", i)), 0)
		if err != nil || !found || string(rec.Value) != "v" {
			t.Fatalf("get left-%d: %q found=%v err=%v", i, rec.Value, found, err)
		}
	}
}

// waitKVMembers waits until the KV layer of every node counts every node.
func waitKVMembers(t *testing.T, nodes []*Node) {
	t.Helper()
	waitFor(t, "every node to see every member", func() bool {
		for _, n := range nodes {
			if len(n.kv.ring.Load().members) != len(nodes) {
				n.RefreshRing()
				return false
			}
		}
		return true
	})
}

// TestKVLargeValuesKeptApart drives the engine with random puts,
// overwrites, tombstones and deletes of values on both sides of
// sepValueBytes, and checks Get, Scan and ScanVersions against a model
// after each batch, and that no value kept apart outlives its record.
func TestKVLargeValuesKeptApart(t *testing.T) {
	pos := kv.Partitioners["md5-low32"]
	e, err := OpenEngine(t.TempDir(), pos)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	st := kvStorage{e}
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[string]kv.Record{}
	keys := []string{"a", "b", "c", "d", "e\x00\xff", "f"}
	// A record stored whole before values were kept apart: a large value
	// inline, which later writes must replace cleanly.
	old := kv.Record{Key: []byte("f"), Value: bytes.Repeat([]byte("o"), 1000), Version: 1}
	if err := e.db.Set(kvKey(pos(old.Key), old.Key), kv.AppendRecord(nil, &old), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	model["f"] = old
	e.kvKeys.Add(1)
	e.kvBytes.Add(old.Size())
	ver := uint64(10)
	for round := range 300 {
		var ops []kv.PersistOp
		touched := map[string]bool{}
		for range 1 + rng.IntN(4) {
			k := keys[rng.IntN(len(keys))]
			if touched[k] {
				continue
			}
			touched[k] = true
			cur, had := model[k]
			op := kv.PersistOp{Had: had, HadBytes: cur.Size()}
			ver++
			switch rng.IntN(6) {
			case 0:
				if !had {
					continue
				}
				op.Delete = []byte(k)
				delete(model, k)
			case 1:
				r := kv.Record{Key: []byte(k), Version: ver, Tomb: true}
				op.Put = &r
				model[k] = r
			default:
				n := []int{0, 3, sepValueBytes - 1, sepValueBytes, 600, 70000}[rng.IntN(6)]
				r := kv.Record{Key: []byte(k), Value: bytes.Repeat([]byte{byte('a' + round%26)}, n), Version: ver}
				op.Put = &r
				model[k] = r
			}
			ops = append(ops, op)
		}
		if err := e.applyKV(ops, false); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			got, ok, err := st.Get([]byte(k))
			want, wok := model[k]
			if err != nil || ok != wok || (ok && (got.Version != want.Version || got.Tomb != want.Tomb || !bytes.Equal(got.Value, want.Value))) {
				t.Fatalf("round %d: Get(%q) = %v %d bytes %v, want %v %d bytes", round, k, ok, len(got.Value), err, wok, len(want.Value))
			}
		}
		var seen, versions int
		if err := st.Scan(0, 0, func(_ uint32, r kv.Record) bool {
			seen++
			want := model[string(r.Key)]
			if r.Version != want.Version || !bytes.Equal(r.Value, want.Value) {
				t.Fatalf("round %d: Scan gave %q version %d with %d bytes, want %d with %d", round, r.Key, r.Version, len(r.Value), want.Version, len(want.Value))
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
		st.ScanVersions(0, 0, func(_ uint32, r kv.Record) bool {
			versions++
			if r.Value != nil || r.Version != model[string(r.Key)].Version {
				t.Fatalf("round %d: ScanVersions gave %q version %d with a value of %d bytes", round, r.Key, r.Version, len(r.Value))
			}
			return true
		})
		if seen != len(model) || versions != len(model) {
			t.Fatalf("round %d: Scan saw %d records, ScanVersions %d, want %d", round, seen, versions, len(model))
		}
		apart := 0
		for _, r := range model {
			if len(r.Value) >= sepValueBytes && (string(r.Key) != "f" || r.Version != 1) {
				apart++
			}
		}
		it, _ := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte("v/"), UpperBound: []byte("v0")})
		n := 0
		for it.First(); it.Valid(); it.Next() {
			n++
		}
		it.Close()
		if n != apart {
			t.Fatalf("round %d: %d values kept apart, %d records have one", round, n, apart)
		}
		keys, size := e.kvCount()
		sk, sb, err := e.scanKVCount()
		if err != nil || int64(keys) != sk || size != sb {
			t.Fatalf("round %d: counted %d records of %d bytes, a scan finds %d of %d (%v)", round, keys, size, sk, sb, err)
		}
	}
}

// TestKVBulkIngested applies rounds of bulk records (as range streams
// bring them) mixed with ordinary writes to the same keys, and checks
// that the bulk ones were ingested and every key reads its last write of
// the round; then that counts an ingestion left behind are taken again
// after a crash.
func TestKVBulkIngested(t *testing.T) {
	dir := t.TempDir()
	pos := kv.Partitioners["md5-low32"]
	e, err := OpenEngine(dir, pos)
	if err != nil {
		t.Fatal(err)
	}
	st := kvStorage{e}
	model := map[string]kv.Record{}
	ver := uint64(1)
	put := func(key string, n int, bulk string, had bool) kv.PersistOp {
		ver++
		r := &kv.Record{Key: []byte(key), Value: bytes.Repeat([]byte{byte(ver)}, n), Version: ver}
		op := kv.PersistOp{Put: r, Bulk: bulk, Had: had}
		if cur, ok := model[key]; ok {
			op.Had, op.HadBytes = true, cur.Size()
		}
		model[key] = *r
		return op
	}
	for round := range 4 {
		var ops []kv.PersistOp
		// Two senders with spans apart, one whose keys spread over the
		// whole ring (as a hand-off's do), and small values among them.
		for i := range 200 {
			ops = append(ops, put(fmt.Sprintf("r%d-a-%03d", round, i), 8000, "10.0.0.1:1", false))
			ops = append(ops, put(fmt.Sprintf("r%d-b-%03d", round, i), 100, "10.0.0.2:1", false))
		}
		for i := range 50 {
			ops = append(ops, put(fmt.Sprintf("r%d-c-%03d", round, i), 9000, "10.0.0.3:1", false))
		}
		// Later writes of the round to keys a bulk record brought, and a
		// delete: these must win over the ingested files.
		ops = append(ops, put(fmt.Sprintf("r%d-a-007", round), 3, "", false))
		ops = append(ops, put(fmt.Sprintf("r%d-c-009", round), 5000, "", false))
		k := fmt.Sprintf("r%d-b-011", round)
		ops = append(ops, kv.PersistOp{Delete: []byte(k), Had: true, HadBytes: model[k].Size()})
		delete(model, k)
		if round > 0 {
			// A key handed off (deleted) and then brought back by a
			// stream in the same round: the stream's record wins.
			k := fmt.Sprintf("r%d-a-%03d", round-1, 50)
			ops = append(ops, kv.PersistOp{Delete: []byte(k), Had: true, HadBytes: model[k].Size()})
			delete(model, k)
			ops = append(ops, put(k, 8000, "10.0.0.1:1", false))
		}
		if err := e.applyKV(ops, false); err != nil {
			t.Fatal(err)
		}
	}
	if e.ingested.Load() == 0 {
		t.Fatal("no bulk record was ingested")
	}
	check := func(when string) {
		t.Helper()
		for k, want := range model {
			got, ok, err := st.Get([]byte(k))
			if err != nil || !ok || got.Version != want.Version || !bytes.Equal(got.Value, want.Value) {
				t.Fatalf("%s: Get(%q) = %v version %d (%v), want version %d", when, k, ok, got.Version, err, want.Version)
			}
		}
		n := 0
		st.Scan(0, 0, func(_ uint32, r kv.Record) bool {
			n++
			if want, ok := model[string(r.Key)]; !ok || want.Version != r.Version {
				t.Fatalf("%s: Scan found %q version %d, want %v %d", when, r.Key, r.Version, ok, want.Version)
			}
			return true
		})
		keys, size := e.kvCount()
		sk, sb, err := e.scanKVCount()
		if n != len(model) || err != nil || int64(keys) != sk || size != sb || keys != len(model) {
			t.Fatalf("%s: %d records scanned, %d counted (%d bytes), a count scan finds %d (%d bytes), the model has %d", when, n, keys, size, sk, sb, len(model))
		}
	}
	check("after ingesting")
	// A crash after an ingestion, before its round's batch: the stored
	// counts lag. The mark makes the next open count again.
	if err := e.db.Set([]byte(kvCountKey), kvCountValue(1, 1), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Close(); err != nil { // no clean Close: the mark stays
		t.Fatal(err)
	}
	if e, err = OpenEngine(dir, pos); err != nil {
		t.Fatal(err)
	}
	st = kvStorage{e}
	check("after a crash")
	if need, err := e.recountNeeded(); need || err != nil {
		t.Fatalf("the recount mark is still set after counting (%v)", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestKVJoinIngestsStreams loads a 3-node ring with large values, adds a
// 4th node, and checks that the ranges it now replicates arrive whole,
// through ingested files, with every value intact.
func TestKVJoinIngestsStreams(t *testing.T) {
	nodes := kvCluster(t, 3, nil)
	ctx := context.Background()
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 5000) }
	const keys = 600
	for i := range keys {
		if _, err := nodes[i%3].KVPut(ctx, []byte(fmt.Sprintf("big-%04d", i)), value(i), 0); err != nil {
			t.Fatal(err)
		}
	}
	n4 := startTestNode(t, nodes[0].ring.Self().Addr(), 3, nil)
	all := append(nodes, n4)
	waitFor(t, "every node to see 4 members", func() bool {
		for _, n := range all {
			if len(n.kv.ring.Load().members) != 4 {
				n.RefreshRing()
				return false
			}
		}
		return true
	})
	var mine []int
	ring := n4.kv.ring.Load()
	for i := range keys {
		key := []byte(fmt.Sprintf("big-%04d", i))
		if slices.Contains(ring.Preference(n4.pos(key), 3), n4.peerAddr) {
			mine = append(mine, i)
		}
	}
	if len(mine) < keys/2 {
		t.Fatalf("the 4th node replicates %d of %d keys", len(mine), keys)
	}
	st := kvStorage{n4.eng}
	deadline := time.Now().Add(60 * time.Second)
	for {
		missing := 0
		for _, i := range mine {
			r, ok, err := st.Get([]byte(fmt.Sprintf("big-%04d", i)))
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				missing++
				continue
			}
			if !bytes.Equal(r.Value, value(i)) {
				t.Fatalf("big-%04d arrived with %d bytes, not its value", i, len(r.Value))
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d keys the 4th node replicates have not arrived", missing, len(mine))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n4.eng.ingested.Load() == 0 {
		t.Error("the ranges arrived, but none through an ingested file")
	}
	t.Logf("the 4th node received %d keys, %d bytes of them ingested", len(mine), n4.eng.ingested.Load())
}

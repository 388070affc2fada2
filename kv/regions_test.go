package kv

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// regionNet is two regions, A (a1..a3) and B (b1..b3), each a ring of
// its own with N=3, W=2, R=2, whose messages tests deliver by hand. Each
// node's outbox is kept as a driver persists it, so that restarts reload
// it.
type regionNet struct {
	t      *testing.T
	now    uint64 // the clock, in nanoseconds
	cfg    map[string]Config
	rings  map[string]*StaticRing // by region
	region map[string]string      // node -> region
	nodes  map[string]*Node
	st     map[string]*MemStorage
	outbox map[string]map[string]Hint // node -> region+key -> held write
	// origin is each node's current incarnation (Config.Origin), a new
	// one at every start; onMarks, if set, sees the watermarks each
	// node's round hands its driver.
	origin  map[string]uint64
	origins uint64
	onMarks func(node string, ms []RegionMark)
}

func newRegionNet(t *testing.T, delay uint64) *regionNet {
	pos := Partitioners["md5-low32"]
	rn := &regionNet{t: t, now: 1 << 40, cfg: map[string]Config{}, rings: map[string]*StaticRing{}, region: map[string]string{},
		nodes: map[string]*Node{}, st: map[string]*MemStorage{}, outbox: map[string]map[string]Hint{}, origin: map[string]uint64{}}
	for ri, region := range []string{"A", "B"} {
		other := "B"
		if region == "B" {
			other = "A"
		}
		var ms []Member
		for i := 1; i <= 3; i++ {
			// The regions' tokens differ, so a key's owner in A and in B
			// are different nodes.
			ms = append(ms, Member{Addr: fmt.Sprintf("%s%d", string(rune('a'+ri)), i), Token: uint32(i)<<30 + uint32(ri)<<28})
		}
		rn.rings[region] = NewStaticRing(pos, ms)
		for _, m := range ms {
			rn.region[m.Addr] = region
			rn.cfg[m.Addr] = Config{N: 3, W: 2, R: 2, Regions: []string{other}, RegionDelay: delay}
			rn.st[m.Addr] = NewMemStorage(pos)
			rn.outbox[m.Addr] = map[string]Hint{}
		}
	}
	for a := range rn.region {
		rn.start(a)
	}
	return rn
}

// start (re)starts a node from its storage and persisted outbox.
func (rn *regionNet) start(a string) {
	var held []Hint
	for _, h := range rn.outbox[a] {
		held = append(held, h)
	}
	rn.origins++
	rn.origin[a] = rn.origins
	cfg := rn.cfg[a]
	cfg.Origin = rn.origins
	n := NewNode(cfg, a, rn.rings[rn.region[a]], rn.st[a], func() uint64 { return rn.now }, nil)
	n.RestoreOutbox(held)
	for region, r := range rn.rings {
		if region != rn.region[a] {
			n.SetRegionRing(region, r)
		}
	}
	rn.nodes[a] = n
}

// deliver runs rounds of every node, persisting what each asks and
// stepping what it sends, until nothing moves. Messages for which pass
// returns false are dropped. It returns the answers to "client".
func (rn *regionNet) deliver(pass func(Message) bool) (answers []Message) {
	names := slices.Sorted(func(yield func(string) bool) {
		for a := range rn.nodes {
			if !yield(a) {
				return
			}
		}
	})
	for moved := true; moved; {
		moved = false
		for _, a := range names {
			rd := rn.nodes[a].Ready()
			rn.st[a].Apply(rd.Persist)
			if rn.onMarks != nil && len(rd.Marks) > 0 {
				rn.onMarks(a, rd.Marks)
			}
			for _, op := range rd.Persist {
				switch {
				case op.Outbox != nil:
					rn.outbox[a][op.Outbox.Target+"/"+string(op.Outbox.Rec.Key)] = *op.Outbox
				case op.DoneOutbox != nil:
					delete(rn.outbox[a], op.DoneOutbox.Target+"/"+string(op.DoneOutbox.Rec.Key))
				}
			}
			for _, m := range rd.Messages {
				switch {
				case m.To == "client":
					answers = append(answers, m)
				case pass == nil || pass(m):
					if rn.nodes[m.To] != nil {
						rn.nodes[m.To].Step(m)
						moved = true
					}
				}
			}
		}
	}
	return answers
}

// tick advances the clock by d nanoseconds and ticks every node once.
// crashOrRestart restarts a if it is down, or else crashes it unless
// another node of its region is down already.
func (rn *regionNet) crashOrRestart(a string, all []string, down map[string]bool) {
	if down[a] {
		delete(down, a)
		rn.start(a)
	} else if !slices.ContainsFunc(all, func(b string) bool { return down[b] && rn.region[b] == rn.region[a] }) {
		down[a] = true
		delete(rn.nodes, a)
	}
}

func (rn *regionNet) tick(d uint64) {
	rn.now += d
	for _, n := range rn.nodes {
		n.Tick()
	}
}

// holders lists the nodes whose storage holds key at version v or newer.
func (rn *regionNet) holders(key string, v uint64) []string {
	var out []string
	for a, st := range rn.st {
		if r, ok, _ := st.Get([]byte(key)); ok && r.Version >= v {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

func inRegion(rn *regionNet, region string) func(Message) bool {
	return func(m Message) bool { return rn.region[m.To] == region && rn.region[m.From] == region }
}

// put writes key at coordinator a and returns the acknowledged version.
func (rn *regionNet) put(a, key, val string, pass func(Message) bool) uint64 {
	rn.t.Helper()
	rn.nodes[a].Step(Message{Kind: KindClientPut, From: "client", ID: 1, Rec: Record{Key: []byte(key), Value: []byte(val)}})
	ans := rn.deliver(pass)
	if len(ans) != 1 || ans[0].Err != "" || ans[0].Rec.Version == 0 {
		rn.t.Fatalf("put %s at %s: answers %+v", key, a, ans)
	}
	return ans[0].Rec.Version
}

// TestRegionPlacement: a write is acknowledged by its own region's
// quorum with no message to the other region; it is then replicated to
// the other region's own preference list (its N replicas there, not
// the nodes of the first region's list), once, and not sent back.
func TestRegionPlacement(t *testing.T) {
	rn := newRegionNet(t, 0)
	key := "post-1"
	v := rn.put("a2", key, "hello", inRegion(rn, "A"))
	pos := rn.rings["A"].Position([]byte(key))
	prefA := rn.rings["A"].Preference(pos, 3)
	prefB := rn.rings["B"].Preference(pos, 3)
	got := rn.holders(key, v)
	for _, a := range got {
		if rn.region[a] != "A" {
			t.Fatalf("%s (region B) holds the write before any cross-region message: %v", a, got)
		}
	}
	if len(got) < 2 {
		t.Fatalf("acknowledged with %d holders in A: %v", len(got), got)
	}
	if len(rn.nodes["a2"].Outbox()) != 1 {
		t.Fatalf("a2's outbox: %+v, want the write for B", rn.nodes["a2"].Outbox())
	}
	if len(rn.outbox["a2"]) != 1 {
		t.Fatalf("a2 persisted %d outbox entries, want 1", len(rn.outbox["a2"]))
	}

	// Replication: ticks send it to B, which writes it with its version
	// through B's quorum.
	var regionPuts []Message
	count := func(m Message) bool {
		if m.Kind == KindRegionPut {
			regionPuts = append(regionPuts, m)
		}
		return true
	}
	for range 5 {
		rn.tick(1e6)
		rn.deliver(count)
	}
	var inB []string
	for _, a := range rn.holders(key, v) {
		if rn.region[a] == "B" {
			inB = append(inB, a)
			if !slices.Contains(prefB, a) {
				t.Errorf("%s holds the key but is not in B's preference list %v", a, prefB)
			}
		}
	}
	if len(inB) < 2 {
		t.Fatalf("B holds the write on %v, want a write quorum of B's preference list %v (A's is %v)", inB, prefB, prefA)
	}
	r, _, _ := rn.st[inB[0]].Get([]byte(key))
	if r.Version != v || string(r.Value) != "hello" {
		t.Fatalf("B holds %+v, want version %d", r, v)
	}
	if len(regionPuts) != 1 || rn.region[regionPuts[0].From] != "A" {
		t.Fatalf("cross-region puts: %+v, want one from A to B", regionPuts)
	}
	if len(rn.nodes["a2"].Outbox()) != 0 || len(rn.outbox["a2"]) != 0 {
		t.Fatalf("outbox not emptied after B acknowledged: %+v", rn.nodes["a2"].Outbox())
	}
	for _, a := range []string{"b1", "b2", "b3"} {
		if len(rn.nodes[a].Outbox()) != 0 {
			t.Fatalf("%s holds a write from A for another region: it would send it back", a)
		}
	}
	st := rn.nodes["a2"].RegionStatus()
	if len(st) != 1 || st[0].Region != "B" || st[0].Pending != 0 || st[0].Acked != 1 || !st[0].Known {
		t.Fatalf("region status %+v", st)
	}
}

// TestRegionDelayAndRestart: with a delay, nothing leaves before the
// write is that old; the coordinator restarts (its outbox reloaded from
// what it persisted) and B is down for a while; B still ends with the
// write, and the lag is reported.
func TestRegionDelayAndRestart(t *testing.T) {
	const delay = 200e6 // 200 ms
	rn := newRegionNet(t, delay)
	key := "k"
	sentToB := 0
	noB := func(m Message) bool {
		if rn.region[m.To] == "B" {
			if m.Kind != KindRegionMark {
				sentToB++
			}
			return false
		}
		return true
	}
	v := rn.put("a1", key, "v1", noB)
	for range 10 {
		rn.tick(10e6) // 100 ms in all: not due yet
		rn.deliver(noB)
	}
	if sentToB != 0 {
		t.Fatalf("%d messages to B within the delay", sentToB)
	}
	if st := rn.nodes["a1"].RegionStatus()[0]; st.Pending != 1 || st.Oldest != v {
		t.Fatalf("status %+v, want 1 pending at version %d", st, v)
	}
	// Due now, but B drops everything; then a1 crashes and restarts.
	for range 15 {
		rn.tick(10e6)
		rn.deliver(noB)
	}
	if sentToB == 0 {
		t.Fatal("nothing sent to B after the delay")
	}
	rn.start("a1")
	if len(rn.nodes["a1"].Outbox()) != 1 {
		t.Fatalf("restarted a1 lost its outbox: %+v", rn.nodes["a1"].Outbox())
	}
	for range 40 {
		rn.tick(10e6)
		rn.deliver(nil)
	}
	inB := 0
	for _, a := range rn.holders(key, v) {
		if rn.region[a] == "B" {
			inB++
		}
	}
	if inB < 2 {
		t.Fatalf("B holds the write on %d nodes after the restart, want 2 or more", inB)
	}
	st := rn.nodes["a1"].RegionStatus()[0]
	if st.Pending != 0 || st.LastLag < delay {
		t.Fatalf("status %+v: want nothing pending and a lag of at least the delay", st)
	}
}

// TestRegionNewerWins: a newer write of a key replaces an older one not
// yet sent; B ends with the newest, and an older write arriving late
// (a resend) changes nothing there.
func TestRegionNewerWins(t *testing.T) {
	rn := newRegionNet(t, 0)
	noB := func(m Message) bool { return rn.region[m.To] != "B" }
	v1 := rn.put("a1", "k", "old", noB)
	rn.now += 1e6
	v2 := rn.put("a3", "k", "new", noB)
	if v2 <= v1 {
		t.Fatalf("versions %d then %d", v1, v2)
	}
	for range 5 {
		rn.tick(1e6)
		rn.deliver(nil)
	}
	for _, a := range rn.holders("k", v2) {
		if r, _, _ := rn.st[a].Get([]byte("k")); string(r.Value) != "new" {
			t.Fatalf("%s holds %q", a, r.Value)
		}
	}
	n := 0
	for _, a := range []string{"b1", "b2", "b3"} {
		if r, ok, _ := rn.st[a].Get([]byte("k")); ok {
			if string(r.Value) != "new" {
				t.Fatalf("%s holds %q, want the newest write", a, r.Value)
			}
			n++
		}
	}
	if n < 2 {
		t.Fatalf("B holds the key on %d nodes", n)
	}
	// A late copy of the old write (a resend from before a restart).
	rn.nodes["b1"].Step(Message{Kind: KindRegionPut, From: "a1", ID: 99, Rec: Record{Key: []byte("k"), Value: []byte("old"), Version: v1}})
	rn.deliver(nil)
	for _, a := range []string{"b1", "b2", "b3"} {
		if r, ok, _ := rn.st[a].Get([]byte("k")); ok && string(r.Value) != "new" {
			t.Fatalf("%s went back to %q", a, r.Value)
		}
	}
}

// TestRegionChaos: both regions write to a few keys through random
// coordinators while messages are dropped and duplicated and nodes crash
// and restart (keeping their storage and persisted outbox, losing the
// rest). Once the faults stop, every region must hold, on a write quorum
// of its nodes, the newest write acknowledged in either region, and every
// outbox must be empty.
func TestRegionChaos(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { regionChaos(t, seed) })
	}
}

func regionChaos(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	rn := newRegionNet(t, 0)
	for a := range rn.cfg {
		c := rn.cfg[a]
		c.Regions = []string{"A", "B"}[:0]
		for _, r := range []string{"A", "B"} {
			if r != rn.region[a] {
				c.Regions = append(c.Regions, r)
			}
		}
		c.RegionDelay = uint64(rng.IntN(4)) * 50e6 // 0 to 150 ms: writes wait in outboxes while nodes crash
		rn.cfg[a] = c
		rn.start(a)
	}
	all := slices.Sorted(maps.Keys(rn.region))
	down := map[string]bool{}
	faults := true
	pass := func(m Message) bool {
		if down[m.To] || down[m.From] {
			return false
		}
		if faults && rng.Float64() < 0.2 {
			return false
		}
		if faults && rng.Float64() < 0.05 && rn.nodes[m.To] != nil {
			rn.nodes[m.To].Step(m) // duplicated
		}
		return true
	}
	type pending struct {
		key string
	}
	sent := map[uint64]pending{}
	newest := map[string]uint64{} // key -> newest acknowledged version
	nextID := uint64(0)
	collect := func(ans []Message) {
		for _, m := range ans {
			p, ok := sent[m.ID]
			if !ok {
				continue
			}
			delete(sent, m.ID)
			if m.Err == "" && m.Rec.Version > newest[p.key] {
				newest[p.key] = m.Rec.Version
			}
		}
	}
	for step := range 300 {
		// Crash or restart a node now and then, never more than one per
		// region at a time.
		if rng.IntN(4) == 0 {
			rn.crashOrRestart(all[rng.IntN(len(all))], all, down)
		}
		for range 1 + rng.IntN(3) {
			a := all[rng.IntN(len(all))]
			if down[a] {
				continue
			}
			nextID++
			key := fmt.Sprintf("k%d", rng.IntN(5))
			sent[nextID] = pending{key}
			rn.nodes[a].Step(Message{Kind: KindClientPut, From: "client", ID: nextID,
				Rec: Record{Key: []byte(key), Value: []byte(fmt.Sprintf("%s-%d", a, step))}})
		}
		collect(rn.deliver(pass))
		rn.tick(5e6)
		collect(rn.deliver(pass))
	}
	// A last write of every key, each acknowledged and its coordinator
	// crashed at once: the write is then only in its region and in the
	// coordinator's persisted outbox.
	faults = false
	for i := range 5 {
		for _, a := range all {
			if down[a] {
				delete(down, a)
				rn.start(a)
			}
		}
		a := all[rng.IntN(len(all))]
		nextID++
		key := fmt.Sprintf("k%d", i)
		sent[nextID] = pending{key}
		rn.nodes[a].Step(Message{Kind: KindClientPut, From: "client", ID: nextID, Rec: Record{Key: []byte(key), Value: []byte("last")}})
		before := newest[key]
		collect(rn.deliver(func(m Message) bool { return pass(m) && rn.region[m.To] == rn.region[a] }))
		if newest[key] == before {
			t.Fatalf("the last write of %s was not acknowledged", key)
		}
		down[a] = true
		delete(rn.nodes, a)
	}
	for _, a := range all {
		if down[a] {
			delete(down, a)
			rn.start(a)
		}
	}
	for range 2000 {
		rn.tick(5e6)
		collect(rn.deliver(pass))
	}
	if len(newest) == 0 {
		t.Fatal("no write was acknowledged")
	}
	for key, v := range newest {
		for _, region := range []string{"A", "B"} {
			n := 0
			for _, a := range rn.holders(key, v) {
				if rn.region[a] == region {
					n++
				}
			}
			if n < 2 {
				t.Errorf("region %s holds the newest acknowledged write of %s (version %d) on %d nodes, want a write quorum", region, key, v, n)
			}
		}
	}
	for _, a := range all {
		if ob := rn.nodes[a].Outbox(); len(ob) != 0 {
			t.Errorf("%s still holds %d writes for another region", a, len(ob))
		}
	}
}

// TestRegionMarkChaos: both regions write to a few keys (so that the
// outbox often replaces a key's write before the other region holds it)
// through random coordinators while messages are dropped and duplicated
// and nodes crash and restart (a new incarnation, a new origin). No
// watermark a node receives may pass an acknowledged write of its origin
// that fewer than a write quorum of the node's region hold; and once the
// faults stop, every live incarnation's mark passes its last write in
// the other region.
func TestRegionMarkChaos(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { regionMarkChaos(t, seed) })
	}
}

func regionMarkChaos(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 29))
	rn := newRegionNet(t, 0)
	for a := range rn.cfg {
		c := rn.cfg[a]
		c.RegionDelay = uint64(rng.IntN(4)) * 20e6 // 0 to 60 ms
		rn.cfg[a] = c
		rn.start(a)
	}
	all := slices.Sorted(maps.Keys(rn.region))
	type write struct {
		key    string
		origin uint64
		v      uint64
	}
	var acked []write
	// marks: the highest watermark each region's nodes received, by
	// origin.
	marks := map[string]map[uint64]uint64{"A": {}, "B": {}}
	rn.onMarks = func(a string, ms []RegionMark) {
		for _, m := range ms {
			marks[rn.region[a]][m.Origin] = max(marks[rn.region[a]][m.Origin], m.Version)
		}
	}
	origins := map[uint64]string{} // origin -> region
	passed := 0
	check := func(when string) {
		t.Helper()
		passed = 0
		for _, w := range acked {
			other := "A"
			if origins[w.origin] == "A" {
				other = "B"
			}
			if marks[other][w.origin] < w.v {
				continue
			}
			passed++
			n := 0
			for _, a := range rn.holders(w.key, w.v) {
				if rn.region[a] == other {
					n++
				}
			}
			if n < 2 {
				t.Fatalf("%s: region %s's mark of origin %d is %d, past write %s@%d, which %d of its nodes hold (want a write quorum)",
					when, other, w.origin, marks[other][w.origin], w.key, w.v, n)
			}
		}
	}
	down := map[string]bool{}
	faults := true
	pass := func(m Message) bool {
		if down[m.To] || down[m.From] {
			return false
		}
		if faults && rng.Float64() < 0.2 {
			return false
		}
		if faults && rng.Float64() < 0.05 && rn.nodes[m.To] != nil {
			rn.nodes[m.To].Step(m) // duplicated
		}
		return true
	}
	sent := map[uint64]write{}
	nextID := uint64(0)
	collect := func(ans []Message) {
		for _, m := range ans {
			w, ok := sent[m.ID]
			if !ok {
				continue
			}
			delete(sent, m.ID)
			if m.Err == "" {
				w.v = m.Rec.Version
				acked = append(acked, w)
			}
		}
	}
	for step := range 300 {
		if rng.IntN(5) == 0 {
			rn.crashOrRestart(all[rng.IntN(len(all))], all, down)
		}
		for range 1 + rng.IntN(3) {
			a := all[rng.IntN(len(all))]
			if down[a] {
				continue
			}
			nextID++
			key := fmt.Sprintf("k%d", rng.IntN(4))
			sent[nextID] = write{key: key, origin: rn.origin[a]}
			origins[rn.origin[a]] = rn.region[a]
			rn.nodes[a].Step(Message{Kind: KindClientPut, From: "client", ID: nextID,
				Rec: Record{Key: []byte(key), Value: []byte(fmt.Sprintf("%s-%d", a, step))}})
		}
		collect(rn.deliver(pass))
		check(fmt.Sprintf("step %d", step))
		rn.tick(5e6)
		collect(rn.deliver(pass))
		check(fmt.Sprintf("step %d tick", step))
	}
	faults = false
	for _, a := range all {
		if down[a] {
			delete(down, a)
			rn.start(a)
		}
	}
	for range markTicks + 100 {
		rn.tick(5e6)
		collect(rn.deliver(pass))
	}
	check("settled")
	if passed == 0 {
		t.Fatal("no watermark passed any write")
	}
	// Every live incarnation's last write is passed everywhere.
	last := map[uint64]write{}
	for _, w := range acked {
		last[w.origin] = w
	}
	for _, a := range all {
		w, ok := last[rn.origin[a]]
		if !ok {
			continue
		}
		other := "A"
		if rn.region[a] == "A" {
			other = "B"
		}
		if marks[other][w.origin] < w.v {
			t.Errorf("%s's last write %s@%d: region %s's mark of it is %d once settled", a, w.key, w.v, other, marks[other][w.origin])
		}
	}
}

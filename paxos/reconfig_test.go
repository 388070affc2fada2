package paxos

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func baseConfig() Config {
	return Config{
		Matchmakers:  []string{"m0", "m1", "m2"},
		Batchers:     []string{"b0"},
		Leaders:      []string{"l0", "l1"},
		ProxyLeaders: []string{"p0", "p1"},
		Groups:       []Group{{Acceptors: []string{"a0", "a1", "a2"}}},
		Replicas:     []string{"r0", "r1", "r2"},
		Unbatchers:   []string{"u0"},
	}
}

func TestValidateChange(t *testing.T) {
	cur := baseConfig()
	ok := cur.Next()
	ok.ProxyLeaders = append(ok.ProxyLeaders, "p2")
	if err := cur.ValidateChange(ok); err != nil {
		t.Fatalf("adding a proxy leader: %v", err)
	}
	stale := cur.Next()
	stale.Epoch = cur.Epoch + 2
	if err := cur.ValidateChange(stale); err == nil || !strings.Contains(err.Error(), ErrStaleConfig.Error()) {
		t.Fatalf("epoch +2: %v, want a stale configuration", err)
	}
	mm := cur.Next()
	mm.Matchmakers = []string{"m0", "m1"}
	if err := cur.ValidateChange(mm); err == nil {
		t.Fatal("matchmakers changed: no error")
	}
	static := baseConfig()
	static.Matchmakers = nil
	groups := static.Next()
	groups.Groups = []Group{{Acceptors: []string{"a0", "a1", "a9"}}}
	if err := static.ValidateChange(groups); err == nil {
		t.Fatal("acceptor groups changed without matchmakers: no error")
	}
	// A leader removed and a new one added never share a ballot id.
	n := cur.Next().WithLeaders([]string{"l1"})
	n2 := n.Next().WithLeaders([]string{"l1", "l9"})
	if err := n.ValidateChange(n2); err != nil {
		t.Fatal(err)
	}
	if id := n2.LeaderID(1); id == cur.LeaderID(0) || id == cur.LeaderID(1) {
		t.Fatalf("new leader l9 got id %d, used before", id)
	}
	reuse := n2.Next()
	reuse.LeaderIDs[1] = 0
	if err := n2.ValidateChange(reuse); err == nil {
		t.Fatal("a changed leader id passed")
	}
	dup := cur.Next()
	dup.Replicas = append(dup.Replicas, "p0")
	if err := cur.ValidateChange(dup); err == nil {
		t.Fatal("an address serving two roles passed")
	}
}

// A proxy leader the configuration leaves out finishes the slot it holds
// before it reports drained.
func TestProxyLeaderDrains(t *testing.T) {
	cfg := baseConfig()
	p := NewProxyLeaderAt(cfg, "p1")
	g := cfg.Groups[0]
	p.Step(Message{Kind: KindPhase2a, From: "l0", Ballot: Ballot{1, 0}, Slot: 7, Value: Value{Noop: true}, Group: &g})
	p.Ready()
	next := cfg.Next()
	next.ProxyLeaders = []string{"p0"}
	p.Step(Message{Kind: KindConfigReply, From: "l0", Config: &next})
	if p.Drained() {
		t.Fatal("drained with slot 7 in flight")
	}
	p.Step(Message{Kind: KindPhase2b, From: "a0", Ballot: Ballot{1, 0}, Slot: 7})
	p.Step(Message{Kind: KindPhase2b, From: "a2", Ballot: Ballot{1, 0}, Slot: 7})
	var chosen []string
	for _, m := range p.Ready().Messages {
		if m.Kind == KindChosen {
			chosen = append(chosen, m.To)
		}
	}
	slices.Sort(chosen)
	if want := []string{"l0", "r0", "r1", "r2"}; !slices.Equal(chosen, want) {
		t.Fatalf("chosen sent to %v, want %v", chosen, want)
	}
	if !p.Drained() {
		t.Fatal("not drained once nothing is in flight")
	}
}

// A batcher the configuration leaves out still forwards what reaches it,
// and reports drained only once idle.
func TestBatcherDrains(t *testing.T) {
	cfg := baseConfig()
	cfg.BatchSize = 10
	b := NewBatcherAt(cfg, "b0")
	b.Step(Message{Kind: KindRequest, From: "c", Command: Command{Client: 1, Seq: 1}})
	next := cfg.Next()
	next.Batchers = nil
	b.Step(Message{Kind: KindConfigReply, From: "l0", Config: &next})
	if b.Drained() {
		t.Fatal("drained holding a command")
	}
	b.Flush()
	rd := b.Ready()
	if len(rd.Messages) != 1 || rd.Messages[0].Kind != KindBatch || len(rd.Messages[0].Batch) != 1 {
		t.Fatalf("flush sent %v", rd.Messages)
	}
	for range 10*cfg.withDefaults().ResendTicks + 1 {
		b.Tick()
	}
	if !b.Drained() {
		t.Fatal("not drained after being idle")
	}
}

// Roles learn a newer configuration from any message's epoch.
func TestConfigGossip(t *testing.T) {
	cfg := baseConfig()
	u := NewUnbatcherAt(cfg, "u0")
	u.Step(Message{Kind: KindReplyBatch, From: "r0", Epoch: 3})
	var asked bool
	for _, m := range u.Ready().Messages {
		asked = asked || (m.Kind == KindConfigQuery && m.To == "r0")
	}
	if !asked {
		t.Fatal("a message from epoch 3 did not make the unbatcher ask for it")
	}
	next := cfg.Next()
	next.Epoch = 3
	u.Step(Message{Kind: KindConfigReply, From: "r0", Config: &next})
	if u.Config().Epoch != 3 {
		t.Fatalf("epoch %d after the reply, want 3", u.Config().Epoch)
	}
	old := cfg
	u.Step(Message{Kind: KindConfigReply, From: "r0", Config: &old})
	if u.Config().Epoch != 3 {
		t.Fatal("an older configuration replaced a newer one")
	}
}

func TestAcceptorConflictIsLoud(t *testing.T) {
	a := NewAcceptor("a0", AcceptorState{})
	var got []string
	a.SetInvariantHandler(func(msg string) { got = append(got, msg) })
	b := Ballot{2, 1}
	a.Step(Message{Kind: KindPhase2a, From: "p0", Ballot: b, Slot: 4, Value: Value{Commands: []Command{{Client: 1, Seq: 1}}}})
	a.Ready()
	a.Step(Message{Kind: KindPhase2a, From: "p0", Ballot: b, Slot: 4, Value: Value{Commands: []Command{{Client: 1, Seq: 1}}}})
	if rd := a.Ready(); len(rd.Messages) != 1 || rd.Messages[0].Kind != KindPhase2b || len(got) != 0 {
		t.Fatalf("a retransmission was not re-acknowledged quietly: %v %v", rd.Messages, got)
	}
	a.Step(Message{Kind: KindPhase2a, From: "p1", Ballot: b, Slot: 4, Value: Value{Noop: true}})
	rd := a.Ready()
	if len(got) != 1 || !strings.Contains(got[0], "slot 4 ballot 2.1") {
		t.Fatalf("second value in one ballot reported %v", got)
	}
	if len(rd.Messages) != 0 || len(rd.Persist) != 0 {
		t.Fatalf("second value in one ballot was acknowledged or persisted: %v", rd)
	}
	if v := a.State().Accepted[4].Value; v.Noop {
		t.Fatal("the second value replaced the first")
	}
	// Without a handler it panics.
	a.SetInvariantHandler(nil)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	a.Step(Message{Kind: KindPhase2a, From: "p1", Ballot: b, Slot: 4, Value: Value{Noop: true}})
}

func TestReplicaConflictIsLoud(t *testing.T) {
	r, err := NewReplicaAt(baseConfig(), "r0", NewKV(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	r.SetInvariantHandler(func(msg string) { got = append(got, msg) })
	r.Step(Message{Kind: KindChosen, Slot: 3, Value: Value{Noop: true}})
	r.Step(Message{Kind: KindChosen, Slot: 3, Value: Value{Noop: true}})
	if len(got) != 0 {
		t.Fatalf("the same value twice reported: %v", got)
	}
	r.Step(Message{Kind: KindChosen, Slot: 3, Value: Value{Commands: []Command{{Client: 9, Seq: 1}}}})
	if len(got) != 1 || !strings.Contains(got[0], "slot 3") {
		t.Fatalf("two values for slot 3 reported %v", got)
	}
}

// Replicas forget sessions silent for SessionSlots, and refuse (never
// apply) their later commands.
func TestSessionsExpire(t *testing.T) {
	cfg := baseConfig()
	cfg.SessionSlots, cfg.SnapshotEvery = 4, 2
	r, err := NewReplicaAt(cfg, "r0", NewKV(), nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(client, seq uint64, first bool) Command {
		return Command{Client: client, Seq: seq, First: first, ReplyTo: "c", Op: EncodeKV(KVOp{Op: "put", Key: "k", Value: []byte("v")})}
	}
	r.Step(Message{Kind: KindChosen, Slot: 0, Value: Value{Commands: []Command{put(1, 1, true)}}})
	for s := uint64(1); s < 12; s++ {
		r.Step(Message{Kind: KindChosen, Slot: s, Value: Value{Commands: []Command{put(2, s, s == 1)}}})
	}
	if n := r.Sessions(); n != 1 {
		t.Fatalf("%d sessions remembered, want 1 (client 1 silent for 11 slots)", n)
	}
	r.Ready()
	r.Step(Message{Kind: KindChosen, Slot: 12, Value: Value{Commands: []Command{put(1, 2, false)}}})
	var errs []string
	for _, m := range r.Ready().Messages {
		for _, rep := range m.Replies {
			if rep.Client == 1 {
				errs = append(errs, rep.Err)
			}
		}
		if m.Kind == KindReply && m.Reply.Client == 1 {
			errs = append(errs, m.Reply.Err)
		}
	}
	if r.Sessions() != 1 {
		t.Fatal("an expired session's command started it again")
	}
	for _, e := range errs {
		if !strings.Contains(e, "session expired") {
			t.Fatalf("reply %q, want session expired", e)
		}
	}
}

// A candidate leader holds at most MaxWaiting commands.
func TestLeaderWaitingIsBounded(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxWaiting = 5
	l := NewLeaderAt(cfg, "l0", 1, Ballot{})
	l.Tick() // campaigns: matching
	l.Ready()
	for i := range 20 {
		l.Step(Message{Kind: KindRequest, From: "c", Command: Command{Client: 1, Seq: uint64(i)}})
	}
	if len(l.waiting) != 5 || l.Status().Dropped != 15 {
		t.Fatalf("waiting %d, dropped %d; want 5 and 15", len(l.waiting), l.Status().Dropped)
	}
}

// On an idle log, a slot only one acceptor accepted under an old leader
// is filled once a read waits on it, so the read completes.
func TestLeaderFillsSlotAReadWaitsFor(t *testing.T) {
	cfg := baseConfig()
	cfg.Matchmakers = nil
	l := NewLeaderAt(cfg, "l0", 1, Ballot{})
	l.Tick()
	for _, a := range []string{"a0", "a1"} {
		l.Step(Message{Kind: KindPhase1b, From: a, Ballot: l.Ballot()})
	}
	if !l.Active() || l.NextSlot() != 0 {
		t.Fatalf("active %v next %d", l.Active(), l.NextSlot())
	}
	l.Ready()
	// a2 accepted slot 3 under an older leader; a read saw it and waits
	// for the slots below 4.
	l.Step(Message{Kind: KindRecover, From: "r0", Slot: 0, Upto: 4})
	var slots []uint64
	for _, m := range l.Ready().Messages {
		if m.Kind == KindPhase2a {
			slots = append(slots, m.Slot)
		}
	}
	if !slices.Equal(slots, []uint64{0, 1, 2, 3}) || l.NextSlot() != 4 {
		t.Fatalf("filled %v (next %d), want 0-3", slots, l.NextSlot())
	}
	// A late phase 1 answer that reports slot 6 fills up to it too.
	l.Step(Message{Kind: KindPhase1b, From: "a2", Ballot: l.Ballot(), Entries: []Entry{{Slot: 6, Ballot: Ballot{0, 1}, Value: Value{Noop: true}}}})
	if l.NextSlot() != 7 {
		t.Fatalf("next %d after a late report of slot 6, want 7", l.NextSlot())
	}
}

func TestMatchmaker(t *testing.T) {
	mm := NewMatchmaker("m0", MatchmakerState{})
	reg := func(b Ballot, epoch uint64, acc ...string) Message {
		mm.Step(Message{Kind: KindMatchA, From: "l", Ballot: b, Rounds: []RoundConfig{{Ballot: b, Epoch: epoch, Groups: []Group{{Acceptors: acc}}}}})
		rd := mm.Ready()
		if len(rd.Messages) != 1 {
			t.Fatalf("register %s: %d answers", b, len(rd.Messages))
		}
		return rd.Messages[0]
	}
	if m := reg(Ballot{1, 0}, 0, "a"); m.Kind != KindMatchB || len(m.Rounds) != 0 {
		t.Fatalf("first round: %v", m)
	}
	if m := reg(Ballot{2, 0}, 1, "b"); m.Kind != KindMatchB || len(m.Rounds) != 1 || m.Rounds[0].Ballot != (Ballot{1, 0}) {
		t.Fatalf("second round: %v", m)
	}
	if m := reg(Ballot{1, 5}, 1, "b"); m.Kind != KindNack || m.Ballot != (Ballot{2, 0}) {
		t.Fatalf("an older round was not refused: %v", m)
	}
	if m := reg(Ballot{3, 0}, 0, "a"); m.Kind != KindNack || m.Epoch != 1 {
		t.Fatalf("a round of an older configuration was not refused: %v", m)
	}
	mm.Step(Message{Kind: KindGarbageA, From: "l", Ballot: Ballot{2, 0}, Slot: 40, Rounds: []RoundConfig{{Ballot: Ballot{2, 0}, Epoch: 1}}})
	mm.Ready()
	if st := mm.State(); len(st.Rounds) != 1 || st.Floor != 40 || st.Retired != (Ballot{2, 0}) || st.RetiredEpoch != 1 {
		t.Fatalf("after retirement: %+v", st)
	}
	if m := reg(Ballot{4, 1}, 1, "b"); m.Kind != KindMatchB || m.Slot != 40 || len(m.Rounds) != 1 {
		t.Fatalf("round after retirement: %v", m)
	}
	// Replaying what it persisted rebuilds the same state.
	var st MatchmakerState
	for _, op := range []PersistOp{
		{Match: &RoundConfig{Ballot: Ballot{1, 0}}}, {Match: &RoundConfig{Ballot: Ballot{2, 0}, Epoch: 1}},
		{Retire: &Ballot{2, 0}, Floor: 40, RetireEpoch: 1}, {Match: &RoundConfig{Ballot: Ballot{4, 1}, Epoch: 1}},
	} {
		st.Apply(op)
	}
	if got := mm.State(); len(got.Rounds) != len(st.Rounds) || got.Floor != st.Floor || got.Retired != st.Retired {
		t.Fatalf("replayed %+v, live %+v", st, got)
	}
}

// Acceptors may forget a slot only once a quorum of replicas holds it in
// a durable snapshot: one replica far ahead is not enough.
func TestGCNeedsReplicaQuorum(t *testing.T) {
	cfg := baseConfig()
	cfg.Matchmakers = nil
	l := NewLeaderAt(cfg, "l0", 1, Ballot{})
	l.Tick()
	for _, a := range []string{"a0", "a1"} {
		l.Step(Message{Kind: KindPhase1b, From: a, Ballot: l.Ballot()})
	}
	l.Ready()
	gcs := func() []uint64 {
		var out []uint64
		for _, m := range l.Ready().Messages {
			if m.Kind == KindGC {
				out = append(out, m.Slot)
			}
		}
		return out
	}
	l.Step(Message{Kind: KindWatermark, From: "r0", Slot: 100, Durable: 100})
	l.Step(Message{Kind: KindWatermark, From: "r1", Slot: 10, Durable: 0})
	l.Step(Message{Kind: KindWatermark, From: "r2", Slot: 10, Durable: 0})
	if got := gcs(); len(got) != 0 {
		t.Fatalf("GC to %v with one replica of three durable past it", got)
	}
	l.Step(Message{Kind: KindWatermark, From: "r1", Slot: 60, Durable: 50})
	if got := gcs(); len(got) != 3 || got[0] != 50 {
		t.Fatalf("GC messages %v, want slot 50 to each of 3 acceptors", got)
	}
	// A replica outside the configuration does not count.
	l.Step(Message{Kind: KindWatermark, From: "r9", Slot: 200, Durable: 200})
	l.Step(Message{Kind: KindWatermark, From: "r2", Slot: 60, Durable: 60})
	if got := gcs(); len(got) != 3 || got[0] != 60 {
		t.Fatalf("GC messages %v, want slot 60", got)
	}
}

// A leader recovers votes that do not fit one phase 1b page by asking for
// the next page, and counts an acceptor only once it has all of them.
func TestPhase1bPages(t *testing.T) {
	defer func(n int) { phase1bBytes = n }(phase1bBytes)
	phase1bBytes = 300 // a few entries a page
	st := AcceptorState{Accepted: map[uint64]Entry{}}
	for s := range uint64(40) {
		st.Accepted[s] = Entry{Slot: s, Ballot: Ballot{1, 1}, Value: Value{Commands: []Command{{Client: 7, Seq: s + 1, Op: []byte("0123456789")}}}}
	}
	accs := map[string]*Acceptor{}
	for _, a := range []string{"a0", "a1", "a2"} {
		accs[a] = NewAcceptor(a, AcceptorState{Accepted: map[uint64]Entry{}})
	}
	accs["a0"] = NewAcceptor("a0", st)
	cfg := baseConfig()
	cfg.Matchmakers = nil
	l := NewLeaderAt(cfg, "l0", 1, Ballot{5, 0})
	var queue []Message
	for range 100 { // restarted, it campaigns after an election timeout
		l.Tick()
		if queue = l.Ready().Messages; len(queue) > 0 {
			break
		}
	}
	pages := 0
	for len(queue) > 0 {
		m := queue[0]
		queue = queue[1:]
		switch {
		case m.Kind == KindPhase1a && (m.To == "a0" || m.To == "a1"):
			accs[m.To].Step(m)
			for _, r := range accs[m.To].Ready().Messages {
				if r.To == "l0" && r.Kind == KindPhase1b && r.From == "a0" {
					pages++
					if len(r.Entries) > 4 {
						t.Fatalf("a page of %d entries, over the byte bound", len(r.Entries))
					}
				}
				l.Step(r)
				queue = append(queue, l.Ready().Messages...)
			}
		}
	}
	if pages < 10 {
		t.Fatalf("%d pages for 40 votes", pages)
	}
	if !l.Active() || l.NextSlot() != 40 {
		t.Fatalf("active %v, next slot %d: want active with every recovered slot re-proposed", l.Active(), l.NextSlot())
	}
}

// A snapshot travels in chunks, each asked for in turn; lost and
// duplicated chunks only delay it.
func TestSnapshotChunks(t *testing.T) {
	defer func(n int) { snapshotChunk = n }(snapshotChunk)
	snapshotChunk = 64
	cfg := baseConfig()
	cfg.SnapshotEvery = 50
	src, _ := NewReplicaAt(cfg, "r0", NewKV(), nil)
	for s := range uint64(50) {
		src.Step(Message{Kind: KindChosen, Slot: s, Value: Value{Commands: []Command{{Client: 1, Seq: s + 1, First: s == 0,
			Op: EncodeKV(KVOp{Op: "put", Key: fmt.Sprint("key", s), Value: []byte("a value of some length")})}}}})
	}
	src.Ready()
	if src.Durable() != 50 {
		t.Fatalf("source snapshot at %d", src.Durable())
	}
	dst, _ := NewReplicaAt(cfg, "r1", NewKV(), nil)
	queue := []Message{{Kind: KindRecover, From: "r1", To: "r0", Slot: 0}}
	chunks, n := 0, 0
	for n < 10000 {
		if len(queue) == 0 {
			if dst.ExecutedThrough() >= 50 {
				break
			}
			for range 20 { // nothing in flight: time passes
				dst.Tick()
			}
			queue = append(queue, dst.Ready().Messages...)
			continue
		}
		n++
		m := queue[0]
		queue = queue[1:]
		if n%7 == 0 {
			continue // lost
		}
		if n%5 == 0 {
			queue = append(queue, m) // duplicated
		}
		var r *Replica
		switch m.To {
		case "r0":
			r = src
		case "r1":
			r = dst
			if m.Kind == KindSnapshot {
				chunks++
			}
		default:
			continue
		}
		r.Step(m)
		queue = append(queue, r.Ready().Messages...)
	}
	if dst.ExecutedThrough() != 50 {
		t.Fatalf("destination executed through %d after %d messages, want 50", dst.ExecutedThrough(), n)
	}
	if chunks < 10 {
		t.Fatalf("%d chunks", chunks)
	}
	if kv := dst.sm.(*KV); kv.Len() != 50 {
		t.Fatalf("%d keys restored", kv.Len())
	}
}

// A leader whose configuration is older than the matchmakers' rounds is
// refused, and learns the newer configuration from the refusal: the roles
// that followed the log to it may all be gone or behind (simulation seed
// 714: the leader of epochs 4-6 was removed, replicas were at epoch 2,
// and the standbys at epoch 3 were refused forever). The matchmaker keeps
// that configuration across restarts.
func TestStaleLeaderLearnsConfigFromMatchmaker(t *testing.T) {
	old := baseConfig().withDefaults()
	next := old.Clone()
	next.Epoch = 1
	next.Groups = []Group{{Acceptors: []string{"a3", "a4", "a5"}}}
	mm := NewMatchmaker("m0", MatchmakerState{})
	b := Ballot{5, 1}
	mm.Step(Message{Kind: KindMatchA, From: "l1", Ballot: b, Rounds: []RoundConfig{{Ballot: b, Epoch: 1, Groups: next.Groups}}, Config: &next})
	rd := mm.Ready()
	if len(rd.Persist) != 1 || rd.Persist[0].Config == nil || rd.Persist[0].Config.Epoch != 1 {
		t.Fatalf("registering a round of epoch 1 persisted %+v, want the configuration with it", rd.Persist)
	}
	var replayed MatchmakerState
	for _, op := range rd.Persist {
		replayed.Apply(op)
	}

	l := NewLeaderAt(old, "l0", 0, Ballot{})
	mm = NewMatchmaker("m0", replayed) // restarted from what it persisted
	var refusals int
	for range 50 {
		l.Tick()
		for _, m := range l.Ready().Messages {
			if m.To != "m0" {
				continue
			}
			m.From = "l0"
			mm.Step(m)
			for _, r := range mm.Ready().Messages {
				if r.Kind == KindNack {
					refusals++
				}
				r.From = "m0"
				l.Step(r)
			}
		}
		if l.Config().Epoch == 1 {
			break
		}
	}
	if refusals == 0 {
		t.Fatalf("the matchmaker never refused the stale leader")
	}
	if got := l.Config(); got.Epoch != 1 || !groupsEqual(got.Groups, next.Groups) {
		t.Fatalf("leader at epoch %d with groups %v after the refusal, want epoch 1 with %v", got.Epoch, got.Groups, next.Groups)
	}
	// Asked directly, the matchmaker answers with it too.
	mm.Step(Message{Kind: KindConfigQuery, From: "r0", Epoch: 0})
	if ms := mm.Ready().Messages; len(ms) != 1 || ms[0].Kind != KindConfigReply || ms[0].Config.Epoch != 1 {
		t.Fatalf("config query answered with %v", ms)
	}
}

// A leader that learns a newer configuration while its round, registered
// under the older one, is being refused registers a new round under the
// newer one rather than resending the refused one forever (simulation
// seed 1324 with client backoff).
func TestMatchingLeaderRematchesUnderNewerConfig(t *testing.T) {
	old := baseConfig().withDefaults()
	next := old.Clone()
	next.Epoch = 1
	next.Groups = []Group{{Acceptors: []string{"a3", "a4", "a5"}}}
	mm := NewMatchmaker("m0", MatchmakerState{})
	b := Ballot{0, 1} // below the leader's first ballot
	mm.Step(Message{Kind: KindMatchA, From: "l1", Ballot: b, Rounds: []RoundConfig{{Ballot: b, Epoch: 1, Groups: next.Groups}}, Config: &next})
	mm.Ready()

	l := NewLeaderAt(old, "l0", 0, Ballot{})
	var matchA []Message
	for range 50 {
		l.Tick()
		for _, m := range l.Ready().Messages {
			if m.Kind == KindMatchA && m.To == "m0" {
				matchA = append(matchA, m)
			}
		}
		if len(matchA) > 0 {
			break
		}
	}
	if len(matchA) == 0 || matchA[0].Rounds[0].Epoch != 0 {
		t.Fatalf("leader did not register a round of epoch 0: %v", matchA)
	}
	// The newer configuration reaches the leader from elsewhere first.
	l.Step(Message{Kind: KindConfigReply, From: "r0", Config: &next})
	l.Ready()
	m := matchA[0]
	m.From = "l0"
	mm.Step(m)
	ms := mm.Ready().Messages
	if len(ms) != 1 || ms[0].Kind != KindNack {
		t.Fatalf("matchmaker answered the stale round with %v", ms)
	}
	ms[0].From = "m0"
	l.Step(ms[0])
	var again *Message
	for _, m := range l.Ready().Messages {
		if m.Kind == KindMatchA && m.To == "m0" {
			again = &m
		}
	}
	if again == nil || again.Rounds[0].Epoch != 1 || !b.Less(again.Ballot) {
		t.Fatalf("after the refusal the leader sent %v, want a round above %s under epoch 1", again, b)
	}
	again.From = "l0"
	mm.Step(*again)
	if ms := mm.Ready().Messages; len(ms) != 1 || ms[0].Kind != KindMatchB {
		t.Fatalf("matchmaker answered the new round with %v", ms)
	}
}

// A candidate whose phase 1 hears from no acceptor for phase1Stall resend
// periods matches again: the rounds the matchmakers named may have lost
// all their acceptors, and been retired since by a newer leader
// (simulation seed 1519 with client backoff, where the leader resent
// phase 1a to removed acceptors forever).
func TestStalledPhase1MatchesAgain(t *testing.T) {
	cfg := baseConfig().withDefaults()
	l := NewLeaderAt(cfg, "l0", 0, Ballot{})
	var first Ballot
	for range 100 {
		l.Tick()
		for _, m := range l.Ready().Messages {
			if m.Kind == KindMatchA {
				first = m.Ballot
			}
		}
		if first != (Ballot{}) {
			break
		}
	}
	if first == (Ballot{}) {
		t.Fatal("the leader never matched")
	}
	gone := RoundConfig{Ballot: Ballot{0, 1}, Epoch: 0, Groups: []Group{{Acceptors: []string{"x0", "x1", "x2"}}}}
	for _, mm := range []string{"m0", "m1"} {
		l.Step(Message{Kind: KindMatchB, From: mm, Ballot: first, Rounds: []RoundConfig{gone}})
	}
	var phase1a int
	for _, m := range l.Ready().Messages {
		if m.Kind == KindPhase1a {
			phase1a++
		}
	}
	if phase1a == 0 {
		t.Fatal("the leader did not start phase 1")
	}
	var again Ballot
	for i := 0; i < phase1Stall*cfg.ResendTicks+1 && again == (Ballot{}); i++ {
		l.Tick()
		for _, m := range l.Ready().Messages {
			if m.Kind == KindMatchA {
				again = m.Ballot
			}
		}
	}
	if !first.Less(again) {
		t.Fatalf("phase 1 unanswered for %d resend periods: matched again at %v, want above %v", phase1Stall, again, first)
	}
}

// The first leader campaigns at once only when the log is new: restarted
// (it has campaigned before), it waits for an election timeout, during
// which the active leader's heartbeats keep it a follower.
func TestRestartedFirstLeaderDoesNotCampaign(t *testing.T) {
	cfg := baseConfig().withDefaults()
	campaigns := func(l *Leader, beat bool) int {
		n := 0
		for i := range 3 * cfg.ElectionTicks {
			if beat && i%cfg.HeartbeatTicks == 0 {
				l.Step(Message{Kind: KindHeartbeat, From: "l1", Ballot: Ballot{7, 1}})
			}
			l.Tick()
			for _, m := range l.Ready().Messages {
				if m.Kind == KindMatchA {
					n++
				}
			}
		}
		return n
	}
	if n := campaigns(NewLeaderAt(cfg, "l0", 0, Ballot{}), false); n == 0 {
		t.Fatal("the first leader of a new log did not campaign")
	}
	if n := campaigns(NewLeaderAt(cfg, "l0", 0, Ballot{6, 0}), true); n != 0 {
		t.Fatalf("the first leader, restarted while l1 leads, sent %d match requests", n)
	}
}

// A standby leader hands a batch back with its hint, and the batcher sends
// it on to the hinted leader at once (a bounded number of times) instead
// of dropping it for its clients to resend two resend periods later.
func TestBatchHandedBackGoesOn(t *testing.T) {
	cfg := baseConfig().withDefaults()
	l := NewLeaderAt(cfg, "l0", 0, Ballot{6, 0}) // restarted: a follower
	l.Step(Message{Kind: KindHeartbeat, From: "l1", Ballot: Ballot{7, 1}})
	l.Ready()
	batch := []Command{{Client: 1, Seq: 1, Op: []byte("x")}}
	l.Step(Message{Kind: KindBatch, From: "b0", Batch: batch})
	ms := l.Ready().Messages
	if len(ms) != 1 || ms[0].Kind != KindNotLeader || ms[0].Leader != "l1" || len(ms[0].Batch) != 1 {
		t.Fatalf("a standby leader answered a batch with %v, want not_leader naming l1 with the batch", ms)
	}
	b := NewBatcherAt(cfg, "b0")
	back := ms[0]
	back.From = "l0"
	b.Step(back)
	sent := b.Ready().Messages
	if len(sent) != 1 || sent[0].Kind != KindBatch || sent[0].To != "l1" || sent[0].Hops != 1 || len(sent[0].Batch) != 1 {
		t.Fatalf("the batcher did %v with the batch handed back, want it sent on to l1", sent)
	}
	back.Hops = maxBatchHops
	b.Step(back)
	if sent := b.Ready().Messages; len(sent) != 0 {
		t.Fatalf("a batch handed back %d times was sent on again: %v", maxBatchHops, sent)
	}
}

// A role that hears a heartbeat from a leader of an older configuration
// sends it the newer one (once per resend period): a leader the newer
// configuration removed, and whom no one told, would otherwise lead under
// the old one forever, its heartbeats holding off every other leader
// (simulation seed 1341, once a restarted first leader stopped forcing a
// failover).
func TestHeartbeatOfOlderEpochIsAnswered(t *testing.T) {
	old := baseConfig().withDefaults()
	next := old.Clone()
	next.Epoch = 2
	next.Leaders, next.LeaderIDs = []string{"l0"}, []uint32{0}
	l0 := NewLeaderAt(next, "l0", 0, Ballot{1, 0})
	l0.Ready()
	var told []Message
	for i := range 3 * old.ResendTicks {
		l0.Step(Message{Kind: KindHeartbeat, From: "l1", Ballot: Ballot{2, 1}, Epoch: 1})
		if i%2 == 0 {
			l0.Tick()
		}
		for _, m := range l0.Ready().Messages {
			if m.Kind == KindConfigReply && m.To == "l1" {
				told = append(told, m)
			}
		}
	}
	if len(told) == 0 || told[0].Config.Epoch != 2 {
		t.Fatalf("a heartbeat of epoch 1 was answered with %v, want epoch 2's configuration", told)
	}
	if len(told) > 3 {
		t.Fatalf("%d configuration replies to %d heartbeats in %d ticks: not once per resend period", len(told), 3*old.ResendTicks, 3*old.ResendTicks/2)
	}
}

// A client whose batcher has left keeps asking for a newer configuration
// at the base resend pace while its command backs off, and sends the
// command again at once on the new configuration's route (simulation seed
// 2322: with the backoff, a client asked once in 640 ticks, mostly roles
// gone too, and its command waited past the end of the run).
func TestClientFindsNewRouteDespiteBackoff(t *testing.T) {
	old := baseConfig().withDefaults()
	next := old.Clone()
	next.Epoch = 1
	next.Batchers = nil // b0 removed: clients send to the leader
	c := NewClient(old, "c0", 1)
	c.Propose([]byte("x"))
	if ms := c.Ready().Messages; len(ms) != 1 || ms[0].To != "b0" {
		t.Fatalf("first send %v, want the request to b0", ms)
	}
	base := 2 * old.ResendTicks
	queries, requests := 0, 0
	for range 10 * base {
		c.Tick()
		for _, m := range c.Ready().Messages {
			switch m.Kind {
			case KindConfigQuery:
				queries++
			case KindRequest:
				requests++
			}
		}
	}
	if queries < 8 {
		t.Fatalf("%d configuration queries in %d base resend periods while a call was overdue, want one a period", queries, 10)
	}
	if requests >= queries {
		t.Fatalf("%d resends and %d queries: the command's resends did not back off", requests, queries)
	}
	c.Step(Message{Kind: KindConfigReply, From: "r0", Config: &next})
	ms := c.Ready().Messages
	if len(ms) != 1 || ms[0].Kind != KindRequest || !slices.Contains(next.Leaders, ms[0].To) {
		t.Fatalf("on the new configuration the client sent %v, want the request to a leader at once", ms)
	}
}

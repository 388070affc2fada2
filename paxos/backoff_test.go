package paxos

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

// A proxy leader whose acceptors stay silent resends phase 2a with a
// backoff, not every resend period: a saturated group (or proxy leader
// behind it) gets fewer copies the longer it takes, instead of a steady
// stream that adds to its load.
func TestProxyLeaderBacksOffResends(t *testing.T) {
	in := newInteraction(1, 3)
	p := in.roles["p0"].(*ProxyLeader)
	g := in.cfg.Groups[0]
	p.Step(Message{Kind: KindPhase2a, From: "l0", To: "p0", Ballot: Ballot{Round: 1, ID: 0}, Slot: 7, Value: Value{Noop: true}, Group: &g})
	sends := func() int {
		n := 0
		for _, m := range p.Ready().Messages {
			if m.Kind == KindPhase2a && m.To == "a0" {
				n++
			}
		}
		return n
	}
	total := sends()
	if total != 1 {
		t.Fatalf("%d phase 2a to a0 on the first step, want 1", total)
	}
	// ResendTicks is 3: resends at ticks 3, 9, 21 and 45 (each wait twice
	// the last), not every 3 ticks (20 resends).
	for range 60 {
		p.Tick()
		total += sends()
	}
	if total != 5 {
		t.Fatalf("%d phase 2a to a0 over 60 ticks, want 5 (the first and 4 resends backing off)", total)
	}
	if got := backoff(3, 10); got != 3<<maxBackoff {
		t.Errorf("backoff(3, 10) = %d, want the cap %d", got, 3<<maxBackoff)
	}
}

// TestLeaderResendsToAnotherProxy: with one of two proxy leaders silent
// (frozen, or cut off), a slot the leader handed it is resent to the
// other one, never to the silent one again: every later slot waits for
// it to be chosen, and alternating proxy leaders for new slots would
// otherwise send some resends back to the silent one, each time waiting
// twice as long.
func TestLeaderResendsToAnotherProxy(t *testing.T) {
	cfg := Config{
		Leaders: []string{"l0"}, ProxyLeaders: []string{"p0", "p1"},
		Groups: []Group{{Acceptors: []string{"a0", "a1", "a2"}}}, Replicas: []string{"r0"},
		HeartbeatTicks: 2, ElectionTicks: 5, ResendTicks: 3, SnapshotEvery: 1000,
	}
	roles := map[string]Role{"l0": NewLeader(cfg, 0, 1, Ballot{}), "p1": NewProxyLeader(cfg, 1)}
	for _, a := range cfg.Groups[0].Acceptors {
		roles[a] = NewAcceptor(a, AcceptorState{Accepted: map[uint64]Entry{}})
	}
	r, err := NewReplica(cfg, 0, NewKV(), nil)
	if err != nil {
		t.Fatal(err)
	}
	roles["r0"] = r
	var clients []*Client
	for i := range 4 {
		c := NewClient(cfg, fmt.Sprintf("c%d", i), uint64(i+1))
		clients = append(clients, c)
		roles[c.self] = c
	}
	last := map[uint64]string{} // slot -> the proxy leader its last phase 2a went to
	repeats, toSilent, done := 0, 0, 0
	var queue []Message
	for tick := range 2000 {
		for _, c := range clients {
			if c.Pending() == 0 {
				c.Propose(EncodeKV(KVOp{Op: "put", Key: "k", Value: []byte(c.self)}))
			}
		}
		for _, name := range slices.Sorted(maps.Keys(roles)) {
			if tick%2 == 0 {
				roles[name].Tick()
			}
			queue = append(queue, roles[name].Ready().Messages...)
		}
		for len(queue) > 0 {
			m := queue[0]
			queue = queue[1:]
			if m.Kind == KindPhase2a && m.From == "l0" {
				if last[m.Slot] == "p0" && m.To == "p0" {
					repeats++
				}
				last[m.Slot] = m.To
				if m.To == "p0" {
					toSilent++
				}
			}
			if m.Kind == KindReply {
				done++
			}
			if to := roles[m.To]; to != nil { // p0 answers nothing
				to.Step(m)
				queue = append(queue, to.Ready().Messages...)
			}
		}
	}
	if toSilent == 0 || done == 0 {
		t.Fatalf("%d phase 2a to the silent proxy leader, %d commands done: the test exercised nothing", toSilent, done)
	}
	if repeats > 0 {
		t.Fatalf("%d resends went to the silent proxy leader again (of %d phase 2a to it; %d commands done)", repeats, toSilent, done)
	}
}

// TestEveryReplicaAnswersARepeat: a replica answers the commands of its
// own slots, so with the other one frozen, a command chosen in the frozen
// one's slot waits for it; the client's retry is chosen again, and if its
// slot is the frozen one's too, it waited again. A repeat of a command
// already applied is now answered by every replica, from the session's
// remembered result.
func TestEveryReplicaAnswersARepeat(t *testing.T) {
	cfg := Config{
		Leaders: []string{"l0"}, ProxyLeaders: []string{"p0"},
		Groups: []Group{{Acceptors: []string{"a0"}}}, Replicas: []string{"r0", "r1"},
		HeartbeatTicks: 2, ElectionTicks: 5, ResendTicks: 3, SnapshotEvery: 1000,
	}
	r1, err := NewReplica(cfg, 1, NewKV(), nil)
	if err != nil {
		t.Fatal(err)
	}
	put := Command{Client: 7, Seq: 1, First: true, ReplyTo: "c7", Op: EncodeKV(KVOp{Op: "put", Key: "k", Value: []byte("v")})}
	other := Command{Client: 8, Seq: 1, First: true, ReplyTo: "c8", Op: EncodeKV(KVOp{Op: "put", Key: "k", Value: []byte("w")})}
	replies := func() map[string]int {
		got := map[string]int{}
		for _, m := range r1.Ready().Messages {
			switch m.Kind {
			case KindReply:
				got[m.To]++
			case KindReplyBatch:
				for _, rep := range m.Replies {
					got[rep.ReplyTo]++
				}
			}
		}
		return got
	}
	// Slots 0 and 2 are r0's; r1 answers slot 1 only, the first time.
	r1.Step(Message{Kind: KindChosen, From: "p0", To: "r1", Entries: []Entry{
		{Slot: 0, Value: Value{Commands: []Command{put}}}, {Slot: 1, Value: Value{Commands: []Command{other}}}}})
	if got := replies(); got["c7"] != 0 || got["c8"] != 1 {
		t.Fatalf("replies %v, want one to c8 (slot 1) and none to c7 (slot 0 is r0's)", got)
	}
	r1.Step(Message{Kind: KindChosen, From: "p0", To: "r1", Slot: 2, Value: Value{Commands: []Command{put}}})
	if got := replies(); got["c7"] != 1 {
		t.Fatalf("replies %v to the repeat of c7's command in r0's slot 2, want one to c7", got)
	}
}

// TestClientResendsToAnotherRole: a quorum read that the replica it
// chose did not answer is resent to another replica, and a write to
// another batcher: the one asked may be paused, and a random choice
// would go back to it half the time with two, each time waiting twice
// as long (the chaos suite's log-reconfig scenario: a read timed out
// after 3 s with one of two replicas paused).
func TestClientResendsToAnotherRole(t *testing.T) {
	cfg := Config{
		Leaders: []string{"l0"}, Batchers: []string{"b0", "b1"},
		Groups: []Group{{Acceptors: []string{"a0", "a1", "a2"}}}, Replicas: []string{"r0", "r1"},
		HeartbeatTicks: 2, ElectionTicks: 5, ResendTicks: 3, SnapshotEvery: 1000,
	}
	for id := range uint64(20) {
		c := NewClient(cfg, "c0", id+1)
		c.Read(EncodeKV(KVOp{Op: "get", Key: "k"}), ReadQuorum)
		c.Propose(EncodeKV(KVOp{Op: "put", Key: "k", Value: []byte("v")}))
		var reads, writes []string
		for range 100 {
			for _, m := range c.Ready().Messages {
				switch m.Kind {
				case KindMaxSlotRequest:
					c.Step(Message{Kind: KindMaxSlotReply, From: m.To, To: "c0", Command: m.Command})
				case KindRead:
					reads = append(reads, m.To)
				case KindRequest:
					writes = append(writes, m.To)
				}
			}
			c.Tick()
		}
		for what, tos := range map[string][]string{"read": reads, "write": writes} {
			if len(tos) < 3 {
				t.Fatalf("client %d: %s sent %d times over 100 ticks unanswered: %v", id+1, what, len(tos), tos)
			}
			for i := 1; i < len(tos); i++ {
				if tos[i] == tos[i-1] {
					t.Fatalf("client %d: %s resent to %s, the role it went to before and which did not answer: %v", id+1, what, tos[i], tos)
				}
			}
		}
	}
}

// TestRepliesToOneAddressSkipTheUnbatcher: an unbatcher takes a batch's
// fan-out of replies to several client addresses; replies that all go to
// one address (one client process's sessions) go straight to it.
func TestRepliesToOneAddressSkipTheUnbatcher(t *testing.T) {
	cfg := Config{
		Leaders: []string{"l0"}, ProxyLeaders: []string{"p0"},
		Groups: []Group{{Acceptors: []string{"a0"}}}, Replicas: []string{"r0"}, Unbatchers: []string{"u0"},
		HeartbeatTicks: 2, ElectionTicks: 5, ResendTicks: 3, SnapshotEvery: 1000,
	}
	r0, err := NewReplica(cfg, 0, NewKV(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := func(client uint64, to string) Command {
		return Command{Client: client, Seq: 1, First: true, ReplyTo: to, Op: EncodeKV(KVOp{Op: "put", Key: "k", Value: []byte("v")})}
	}
	for slot, c := range []struct {
		cmds   []Command
		direct map[string]int // replies straight to each address
		relay  int            // replies through the unbatcher
	}{
		{[]Command{cmd(1, "c"), cmd(2, "c"), cmd(3, "c")}, map[string]int{"c": 3}, 0},
		{[]Command{cmd(4, "c"), cmd(5, "d")}, map[string]int{}, 2},
		{[]Command{cmd(6, "d")}, map[string]int{"d": 1}, 0},
	} {
		r0.Step(Message{Kind: KindChosen, From: "p0", To: "r0", Slot: uint64(slot), Value: Value{Commands: c.cmds}})
		direct, relay := map[string]int{}, 0
		for _, m := range r0.Ready().Messages {
			switch {
			case m.Kind == KindReply:
				direct[m.To]++
			case m.Kind == KindReplyBatch && m.To == "u0":
				relay += len(m.Replies)
			}
		}
		if !maps.Equal(direct, c.direct) || relay != c.relay {
			t.Errorf("slot %d: replies straight %v and %d through the unbatcher, want %v and %d", slot, direct, relay, c.direct, c.relay)
		}
	}
}

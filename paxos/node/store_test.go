package node

import (
	"testing"

	"tide/paxos"
)

// What a matchmaker, a leader and an acceptor persist survives closing
// and reopening the pebble store.
func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	g := []paxos.Group{{Acceptors: []string{"a", "b", "c"}}}
	r := func(round uint64, epoch uint64) *paxos.RoundConfig {
		return &paxos.RoundConfig{Ballot: paxos.Ballot{Round: round, ID: 1}, Epoch: epoch, Groups: g}
	}
	retire := paxos.Ballot{Round: 3, ID: 1}
	ops := []paxos.PersistOp{
		{Match: r(1, 0)}, {Match: r(2, 0)}, {Match: r(3, 2)}, {Match: r(4, 1)},
		{Retire: &retire, Floor: 77, RetireEpoch: 2},
		{Match: r(5, 2)},
	}
	var want paxos.MatchmakerState
	for _, op := range ops {
		want.Apply(op)
	}
	cfg := paxos.Config{Epoch: 4, Leaders: []string{"l"}, ProxyLeaders: []string{"p"}, Groups: g, Replicas: []string{"r"}}
	b := paxos.Ballot{Round: 9, ID: 2}
	if err := s.Save(append(ops, paxos.PersistOp{Config: &cfg, Promised: &b}), nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.MatchmakerState()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Rounds) != 2 || got.Rounds[0].Ballot != retire || got.Rounds[1].Ballot.Round != 5 {
		t.Fatalf("rounds after reopening: %+v (want rounds 3 and 5: 4 has an older configuration than the retirement's)", got.Rounds)
	}
	if got.Floor != want.Floor || got.Retired != want.Retired || got.RetiredEpoch != want.RetiredEpoch || len(got.Rounds) != len(want.Rounds) {
		t.Fatalf("reopened %+v, in memory %+v", got, want)
	}
	c, err := s.Config()
	if err != nil || c == nil || c.Epoch != 4 {
		t.Fatalf("configuration after reopening: %+v %v", c, err)
	}
	if lb, err := s.Ballot(); err != nil || lb != b {
		t.Fatalf("ballot after reopening: %v %v", lb, err)
	}
	if got.Config == nil || got.Config.Epoch != 4 {
		t.Fatalf("the matchmaker's newest configuration after reopening: %+v", got.Config)
	}
}

// An acceptor restarted from its pebble store still reports every vote it
// gave above its GC point.
func TestStoreKeepsVotes(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := paxos.Ballot{Round: 2, ID: 1}
	var ops []paxos.PersistOp
	for slot := range uint64(10) {
		ops = append(ops, paxos.PersistOp{Accept: &paxos.Entry{Slot: slot, Ballot: b, Value: paxos.Value{Noop: slot%2 == 0}}})
	}
	ops = append(ops, paxos.PersistOp{GCBelow: 4, Promised: &b})
	if err := s.Save(ops, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.AcceptorState()
	if err != nil {
		t.Fatal(err)
	}
	if st.GCBelow != 4 || st.Promised != b || len(st.Accepted) != 6 {
		t.Fatalf("reopened: GC below %d, promised %v, %d votes; want 4, %v, the 6 votes of slots 4-9", st.GCBelow, st.Promised, len(st.Accepted), b)
	}
	for slot := uint64(4); slot < 10; slot++ {
		if e, ok := st.Accepted[slot]; !ok || e.Ballot != b || e.Value.Noop != (slot%2 == 0) {
			t.Errorf("slot %d after reopening: %+v %v", slot, e, ok)
		}
	}
}

package paxos

import "slices"

// MatchmakerState is a matchmaker's durable state: the acceptor groups of
// every round not yet retired, in ballot order.
type MatchmakerState struct {
	Rounds  []RoundConfig
	Retired Ballot
	// Floor is the slot below which every slot is durable on a quorum of
	// replicas, as of the last retirement: a new leader recovers slots
	// from there, since the rounds that chose the slots below may be gone.
	Floor uint64
	// RetiredEpoch is the configuration epoch of the round that retired
	// the older ones. That round completed matchmaking, so a round of an
	// older configuration registered above it cannot have (a matchmaker
	// of both quorums would have refused one of them): such rounds are
	// dropped, and refused from then on.
	RetiredEpoch uint64
	// Config is the newest configuration a leader registered a round
	// under. A leader whose configuration is older than the matchmakers'
	// rounds is refused; it learns the newer one here, even when every
	// role that followed the log to it is gone or behind.
	Config *Config
}

// Apply replays one persisted change onto s, as a driver does on restart.
func (s *MatchmakerState) Apply(op PersistOp) {
	if op.Match != nil && !op.Match.Ballot.Less(s.Retired) && op.Match.Epoch >= s.RetiredEpoch {
		i, found := slices.BinarySearchFunc(s.Rounds, op.Match.Ballot, cmpRound)
		if !found {
			s.Rounds = slices.Insert(s.Rounds, i, *op.Match)
		}
	}
	if op.Config != nil && (s.Config == nil || op.Config.Epoch > s.Config.Epoch) {
		c := op.Config.Clone()
		s.Config = &c
	}
	s.Floor = max(s.Floor, op.Floor)
	if op.Retire != nil && s.Retired.Less(*op.Retire) {
		s.Retired = *op.Retire
		i, _ := slices.BinarySearchFunc(s.Rounds, s.Retired, cmpRound)
		s.Rounds = slices.Clone(s.Rounds[i:])
	}
	if op.RetireEpoch > s.RetiredEpoch {
		s.RetiredEpoch = op.RetireEpoch
		s.Rounds = slices.DeleteFunc(s.Rounds, func(r RoundConfig) bool { return r.Epoch < s.RetiredEpoch })
	}
}

// newer returns a copy of the newest configuration registered here if it
// is newer than epoch, or nil.
func (mm *Matchmaker) newer(epoch uint64) *Config {
	if mm.st.Config == nil || mm.st.Config.Epoch <= epoch {
		return nil
	}
	c := mm.st.Config.Clone()
	return &c
}

// maxEpoch is the newest configuration epoch any round registered.
func (mm *Matchmaker) maxEpoch() uint64 {
	var e uint64
	for _, r := range mm.st.Rounds {
		e = max(e, r.Epoch)
	}
	return e
}

func cmpRound(r RoundConfig, b Ballot) int {
	switch {
	case r.Ballot.Less(b):
		return -1
	case b.Less(r.Ballot):
		return 1
	}
	return 0
}

// Matchmaker records which acceptor groups each leader round uses
// (Matchmaker Paxos, Whittaker et al. 2021). A leader registers its round
// with a majority of matchmakers before phase 1, and each answers with the
// older rounds it holds. A matchmaker refuses a round once it has seen a
// newer one, so of two rounds, the later to register always learns of the
// earlier, or the earlier cannot register at all: phase 1 of round i then
// covers every configuration any round below i may have chosen a value in.
type Matchmaker struct {
	outbox
	st MatchmakerState
}

// NewMatchmaker returns a matchmaker at self with recovered state st.
func NewMatchmaker(self string, st MatchmakerState) *Matchmaker {
	return &Matchmaker{outbox: outbox{self: self}, st: st}
}

// State returns the matchmaker's state (for tests and status).
func (mm *Matchmaker) State() MatchmakerState { return mm.st }

func (mm *Matchmaker) persist(op PersistOp) {
	mm.st.Apply(op)
	mm.rd.Persist = append(mm.rd.Persist, op)
}

// Tick does nothing: matchmakers only answer.
func (mm *Matchmaker) Tick() {}

// Step handles one message.
func (mm *Matchmaker) Step(m Message) {
	switch m.Kind {
	case KindMatchA:
		if len(m.Rounds) != 1 || m.Rounds[0].Ballot != m.Ballot || len(m.Rounds[0].Groups) == 0 {
			return
		}
		for _, g := range m.Rounds[0].Groups {
			if g.Validate() != nil {
				return
			}
		}
		if m.Ballot.Less(mm.st.Retired) {
			mm.send(Message{Kind: KindNack, To: m.From, Ballot: mm.st.Retired})
			return
		}
		if n := len(mm.st.Rounds); n > 0 && m.Ballot.Less(mm.st.Rounds[n-1].Ballot) {
			mm.send(Message{Kind: KindNack, To: m.From, Ballot: mm.st.Rounds[n-1].Ballot})
			return
		}
		if e := max(mm.maxEpoch(), mm.st.RetiredEpoch); m.Rounds[0].Epoch < e {
			// A leader with a stale configuration: its acceptor groups may
			// be retired already. Rounds use ever newer configurations, so
			// once older rounds are retired no round uses their groups.
			// The refusal carries the newest configuration known here.
			mm.send(Message{Kind: KindNack, To: m.From, Ballot: m.Ballot, Epoch: e, Config: mm.newer(m.Rounds[0].Epoch)})
			return
		}
		var cfg *Config
		if c := m.Config; c != nil && c.Epoch == m.Rounds[0].Epoch && (mm.st.Config == nil || c.Epoch > mm.st.Config.Epoch) && c.Validate() == nil {
			cfg = c
		}
		i, found := slices.BinarySearchFunc(mm.st.Rounds, m.Ballot, cmpRound)
		if found {
			if !groupsEqual(mm.st.Rounds[i].Groups, m.Rounds[0].Groups) {
				mm.violated("round %s registered twice with different acceptor groups", m.Ballot)
				return
			}
			if cfg != nil {
				mm.persist(PersistOp{Config: cfg})
			}
		} else {
			rc := m.Rounds[0]
			rc.Groups = cloneGroups(rc.Groups)
			mm.persist(PersistOp{Match: &rc, Config: cfg})
			i, _ = slices.BinarySearchFunc(mm.st.Rounds, m.Ballot, cmpRound)
		}
		mm.send(Message{Kind: KindMatchB, To: m.From, Ballot: m.Ballot, Rounds: slices.Clone(mm.st.Rounds[:i]), Retired: mm.st.Retired, RetiredEpoch: mm.st.RetiredEpoch, Slot: mm.st.Floor})
	case KindGarbageA:
		var epoch uint64
		if len(m.Rounds) == 1 && m.Rounds[0].Ballot == m.Ballot {
			epoch = m.Rounds[0].Epoch
		}
		if mm.st.Retired.Less(m.Ballot) || m.Slot > mm.st.Floor || epoch > mm.st.RetiredEpoch {
			b := m.Ballot
			mm.persist(PersistOp{Retire: &b, Floor: m.Slot, RetireEpoch: epoch})
		}
		mm.send(Message{Kind: KindGarbageB, To: m.From, Ballot: m.Ballot})
	case KindConfigQuery:
		if c := mm.newer(m.Epoch); c != nil {
			mm.send(Message{Kind: KindConfigReply, To: m.From, Config: c})
		}
	case KindMatchQuery:
		mm.send(Message{Kind: KindMatchReply, To: m.From, Command: m.Command, Rounds: slices.Clone(mm.st.Rounds), Retired: mm.st.Retired, RetiredEpoch: mm.st.RetiredEpoch, Slot: mm.st.Floor})
	}
}

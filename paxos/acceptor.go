package paxos

// AcceptorState is an acceptor's durable state.
type AcceptorState struct {
	Promised Ballot
	Accepted map[uint64]Entry
	GCBelow  uint64
	// Config is the newest configuration persisted; only leaders persist
	// one, so that a restarted leader knows the acceptor groups rounds use.
	Config *Config
}

// Apply replays one persisted change onto s, as a driver does on restart.
func (s *AcceptorState) Apply(op PersistOp) {
	if s.Accepted == nil {
		s.Accepted = map[uint64]Entry{}
	}
	if op.Promised != nil && s.Promised.Less(*op.Promised) {
		s.Promised = *op.Promised
	}
	if op.Accept != nil && op.Accept.Slot >= s.GCBelow {
		s.Accepted[op.Accept.Slot] = *op.Accept
	}
	if op.Config != nil && (s.Config == nil || s.Config.Epoch < op.Config.Epoch) {
		c := op.Config.Clone()
		s.Config = &c
	}
	if op.GCBelow > s.GCBelow {
		s.GCBelow = op.GCBelow
		for slot := range s.Accepted {
			if slot < op.GCBelow {
				delete(s.Accepted, slot)
			}
		}
	}
}

// Acceptor votes in one acceptor group. Every vote is persisted before the
// reply that announces it is sent.
type Acceptor struct {
	outbox
	st AcceptorState
	// top is one past the highest slot ever accepted here (0: none), so a
	// leaderless read's max-slot request need not scan every vote.
	top uint64
}

// NewAcceptor returns an acceptor at self with recovered state st (the zero
// value for a fresh one).
func NewAcceptor(self string, st AcceptorState) *Acceptor {
	if st.Accepted == nil {
		st.Accepted = map[uint64]Entry{}
	}
	a := &Acceptor{outbox: outbox{self: self}, st: st}
	for slot := range st.Accepted {
		a.top = max(a.top, slot+1)
	}
	return a
}

// State returns the acceptor's state (for tests and status).
func (a *Acceptor) State() AcceptorState { return a.st }

func (a *Acceptor) persist(op PersistOp) {
	a.st.Apply(op)
	if op.Accept != nil && op.Accept.Slot >= a.st.GCBelow {
		a.top = max(a.top, op.Accept.Slot+1)
	}
	a.rd.Persist = append(a.rd.Persist, op)
}

// Tick does nothing: acceptors only answer.
func (a *Acceptor) Tick() {}

// Step handles one message.
func (a *Acceptor) Step(m Message) {
	switch m.Kind {
	case KindPhase1a:
		if m.Ballot.Less(a.st.Promised) {
			a.send(Message{Kind: KindNack, To: m.From, Ballot: a.st.Promised})
			return
		}
		if a.st.Promised != m.Ballot {
			b := m.Ballot
			a.persist(PersistOp{Promised: &b})
		}
		// Votes from slot m.Slot on, a page at a time: Upto, if set, is
		// where the leader asks again.
		var entries []Entry
		var more uint64
		size := 0
		for _, slot := range sortedKeys(a.st.Accepted) {
			if slot < m.Slot {
				continue
			}
			e := a.st.Accepted[slot]
			if size += entrySize(&e); size > phase1bBytes && len(entries) > 0 {
				more = slot
				break
			}
			entries = append(entries, e)
		}
		a.send(Message{Kind: KindPhase1b, To: m.From, Ballot: m.Ballot, Slot: a.st.GCBelow, Entries: entries, Upto: more})
	case KindPhase2a:
		if m.Ballot.Less(a.st.Promised) {
			a.send(Message{Kind: KindNack, To: m.From, Ballot: a.st.Promised, Slot: m.Slot})
			return
		}
		if m.Slot < a.st.GCBelow {
			// Executed by a quorum of replicas already: the vote no longer
			// matters, but the proxy leader is owed an answer.
			a.send(Message{Kind: KindPhase2b, To: m.From, Ballot: m.Ballot, Slot: m.Slot})
			return
		}
		cur, ok := a.st.Accepted[m.Slot]
		if ok && cur.Ballot == m.Ballot && !sameValue(cur.Value, m.Value) {
			// One ballot proposes one value per slot: a second value means
			// two leaders share a ballot, or a message was corrupted.
			a.violated("slot %d ballot %s: accepted %s, now asked to accept %s", m.Slot, m.Ballot, describe(cur.Value), describe(m.Value))
			return
		}
		if !ok || cur.Ballot != m.Ballot || a.st.Promised != m.Ballot {
			op := PersistOp{Accept: &Entry{Slot: m.Slot, Ballot: m.Ballot, Value: m.Value}}
			if a.st.Promised != m.Ballot {
				b := m.Ballot
				op.Promised = &b
			}
			a.persist(op)
		}
		a.send(Message{Kind: KindPhase2b, To: m.From, Ballot: m.Ballot, Slot: m.Slot})
	case KindGC:
		if m.Slot > a.st.GCBelow {
			a.persist(PersistOp{GCBelow: m.Slot})
		}
	case KindMaxSlotRequest:
		// One past the highest slot accepted, or the GC point if higher
		// (every slot below it was chosen).
		top := max(a.top, a.st.GCBelow)
		// The promise tells a reading client whether a round newer than
		// the configurations it read from has started.
		reply := Message{Kind: KindMaxSlotReply, To: m.From, Command: m.Command, Ballot: a.st.Promised}
		reply.Slot = top // 0 means "none"

		a.send(reply)
	}
}

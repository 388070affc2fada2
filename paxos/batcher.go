package paxos

// Batcher groups client commands into batches, flushed to the leader when
// BatchSize commands are waiting or BatchTicks have passed.
type Batcher struct {
	outbox
	cfg     Config
	now     int
	buf     []Command
	firstAt int
	leader  int
	ballot  Ballot // of the leader followed
	// Batches counts batches sent, for metrics.
	Batches int
}

// NewBatcher returns batcher number id of cfg.Batchers.
func NewBatcher(cfg Config, id int) *Batcher {
	cfg = cfg.withDefaults()
	return &Batcher{outbox: outbox{self: cfg.Batchers[id]}, cfg: cfg}
}

// Step handles one message.
func (b *Batcher) Step(m Message) {
	switch m.Kind {
	case KindRequest:
		if len(b.buf) == 0 {
			b.firstAt = b.now
		}
		b.buf = append(b.buf, m.Command)
		if len(b.buf) >= b.cfg.BatchSize {
			b.flush()
		}
	case KindNotLeader:
		b.leader = hintIndex(b.cfg.Leaders, m.Leader, b.leader)
	case KindHeartbeat:
		// Follow the newest active leader.
		if !m.Ballot.Less(b.ballot) {
			b.ballot = m.Ballot
			for i, l := range b.cfg.Leaders {
				if l == m.From {
					b.leader = i
				}
			}
		}
	}
}

// hintIndex returns the index of hint among leaders, or the leader after
// cur when there is no usable hint.
func hintIndex(leaders []string, hint string, cur int) int {
	for i, l := range leaders {
		if l == hint {
			return i
		}
	}
	return (cur + 1) % len(leaders)
}

func (b *Batcher) flush() {
	b.Batches++
	b.send(Message{Kind: KindBatch, To: b.cfg.Leaders[b.leader], Batch: b.buf})
	b.buf = nil
}

// Flush sends whatever is waiting (see Flusher).
func (b *Batcher) Flush() {
	if len(b.buf) > 0 {
		b.flush()
	}
}

// Tick flushes a batch that has waited BatchTicks.
func (b *Batcher) Tick() {
	b.now++
	if len(b.buf) > 0 && b.now-b.firstAt >= b.cfg.BatchTicks {
		b.flush()
	}
}

// Unbatcher splits a replica's batch of replies and returns each to its
// client.
type Unbatcher struct {
	outbox
}

// NewUnbatcher returns unbatcher number id of cfg.Unbatchers.
func NewUnbatcher(cfg Config, id int) *Unbatcher {
	return &Unbatcher{outbox: outbox{self: cfg.Unbatchers[id]}}
}

// Step handles one message.
func (u *Unbatcher) Step(m Message) {
	if m.Kind != KindReplyBatch {
		return
	}
	for _, r := range m.Replies {
		u.send(Message{Kind: KindReply, To: r.ReplyTo, Reply: r})
	}
}

// Tick does nothing.
func (u *Unbatcher) Tick() {}

package paxos

import "slices"

// Batcher groups client commands into batches, flushed to the leader when
// BatchSize commands are waiting, when the driver's input runs dry (Flush)
// unless its clients' load says more are due soon, or when BatchTicks have
// passed. A batcher the
// configuration leaves out keeps forwarding what still reaches it until
// its clients have moved on; Drained reports when it has been idle for a
// while.
type Batcher struct {
	outbox
	membership
	now      int
	buf      []Command
	firstAt  int
	leader   string
	ballot   Ballot // of the leader followed
	lastSeen int    // tick of the last request
	// The clients' outstanding commands (Message.Pending) by session,
	// heard this tick and the one before, and their sum as of the last
	// tick: how many commands are in the log's pipeline or due here.
	pendingNow, pendingPrev map[uint64]uint32
	inflight                int
	held                    bool // the last Flush kept a batch back
	// Batches counts batches sent, for metrics.
	Batches int
}

// NewBatcher returns batcher number id of cfg.Batchers.
func NewBatcher(cfg Config, id int) *Batcher {
	return NewBatcherAt(cfg, cfg.Batchers[id])
}

// NewBatcherAt returns the batcher at self.
func NewBatcherAt(cfg Config, self string) *Batcher {
	b := &Batcher{outbox: outbox{self: self}}
	b.adopt(&b.outbox, cfg)
	b.leader = b.cfg.Leaders[0]
	return b
}

// Drained reports whether the batcher is out of the configuration, holds
// nothing, and has had no request for 10 resend periods.
func (b *Batcher) Drained() bool {
	return len(b.buf) == 0 && !slices.Contains(b.cfg.Batchers, b.self) && b.now-b.lastSeen > 10*b.cfg.ResendTicks
}

// Step handles one message.
func (b *Batcher) Step(m Message) {
	if next, handled := b.gossip(&b.outbox, b.now, m); handled {
		if next != nil && b.adopt(&b.outbox, *next) && !slices.Contains(b.cfg.Leaders, b.leader) {
			b.leader = b.cfg.Leaders[0]
		}
		return
	}
	switch m.Kind {
	case KindRequest:
		b.lastSeen = b.now
		if m.Pending > 0 {
			if b.pendingNow == nil {
				b.pendingNow, b.pendingPrev = map[uint64]uint32{}, map[uint64]uint32{}
			}
			b.pendingNow[m.Command.Client] = m.Pending
		}
		if len(b.buf) == 0 {
			b.firstAt = b.now
		}
		b.buf = append(b.buf, m.Command)
		if len(b.buf) >= b.cfg.BatchSize {
			b.flush()
		}
	case KindNotLeader:
		b.leader = nextLeader(b.cfg.Leaders, m.Leader, b.leader)
		if len(m.Batch) > 0 && m.Hops < maxBatchHops && slices.Contains(b.cfg.Leaders, m.Leader) && m.Leader != m.From {
			// A batch a standby leader handed back: on to the leader it
			// named (clients resend what is lost past maxBatchHops).
			b.send(Message{Kind: KindBatch, To: b.leader, Batch: m.Batch, Hops: m.Hops + 1})
		}
	case KindHeartbeat:
		// Follow the newest active leader.
		if !m.Ballot.Less(b.ballot) {
			b.ballot = m.Ballot
			b.leader = m.From
		}
	}
}

// maxBatchHops bounds how often a batch handed back by a standby leader
// is sent on, should standbys name each other.
const maxBatchHops = 2

// nextLeader returns hint if it is a leader, or else the leader after cur.
func nextLeader(leaders []string, hint, cur string) string {
	if slices.Contains(leaders, hint) {
		return hint
	}
	i := slices.Index(leaders, cur)
	return leaders[(i+1)%len(leaders)]
}

func (b *Batcher) flush() {
	b.Batches++
	b.send(Message{Kind: KindBatch, To: b.leader, Batch: b.buf})
	b.buf = nil
}

// batchDepth is how many batches the clients' outstanding commands are
// spread over under load: a batch waits for a batchDepth-th of them.
const batchDepth = 2

// want is how many commands a batch waits for under load: a batchDepth-th
// of the clients' outstanding commands, at most BatchSize. One client, or
// a few, make it 0 or 1, and every command leaves at once.
func (b *Batcher) want() int {
	return min(b.cfg.BatchSize, b.inflight/batchDepth)
}

// Flush sends whatever is waiting (see Flusher), unless fewer commands
// wait than the clients' load says will come soon (see want): it then
// holds them (see Holder) until more come, the driver releases them, or a
// tick passes.
func (b *Batcher) Flush() {
	b.held = false
	if len(b.buf) == 0 {
		return
	}
	if len(b.buf) < b.want() {
		b.held = true
		return
	}
	b.flush()
}

// Held reports whether the last Flush kept a batch back (see Holder).
func (b *Batcher) Held() bool { return b.held && len(b.buf) > 0 }

// Release sends a batch Flush held back.
func (b *Batcher) Release() {
	b.held = false
	if len(b.buf) > 0 {
		b.flush()
	}
}

// Tick flushes a batch that has waited BatchTicks, and sums the clients'
// outstanding commands heard this tick and the last.
func (b *Batcher) Tick() {
	b.now++
	if len(b.buf) > 0 && b.now-b.firstAt >= b.cfg.BatchTicks {
		b.flush()
	}
	b.inflight = 0
	for s, p := range b.pendingPrev {
		if _, ok := b.pendingNow[s]; !ok {
			b.inflight += int(p)
		}
	}
	for _, p := range b.pendingNow {
		b.inflight += int(p)
	}
	b.pendingPrev, b.pendingNow = b.pendingNow, b.pendingPrev
	clear(b.pendingNow)
}

// Unbatcher splits a replica's batch of replies and returns each to its
// client.
type Unbatcher struct {
	outbox
	membership
	now      int
	lastSeen int
}

// NewUnbatcher returns unbatcher number id of cfg.Unbatchers.
func NewUnbatcher(cfg Config, id int) *Unbatcher {
	return NewUnbatcherAt(cfg, cfg.Unbatchers[id])
}

// NewUnbatcherAt returns the unbatcher at self.
func NewUnbatcherAt(cfg Config, self string) *Unbatcher {
	u := &Unbatcher{outbox: outbox{self: self}}
	u.adopt(&u.outbox, cfg)
	return u
}

// Drained reports whether the unbatcher is out of the configuration and
// has had nothing to relay for 10 resend periods. It holds nothing: each
// batch is relayed as it arrives.
func (u *Unbatcher) Drained() bool {
	return !slices.Contains(u.cfg.Unbatchers, u.self) && u.now-u.lastSeen > 10*u.cfg.ResendTicks
}

// Step handles one message.
func (u *Unbatcher) Step(m Message) {
	if next, handled := u.gossip(&u.outbox, u.now, m); handled {
		if next != nil {
			u.adopt(&u.outbox, *next)
		}
		return
	}
	if m.Kind != KindReplyBatch {
		return
	}
	u.lastSeen = u.now
	for _, r := range m.Replies {
		u.send(Message{Kind: KindReply, To: r.ReplyTo, Reply: r})
	}
}

// Tick counts time for Drained.
func (u *Unbatcher) Tick() { u.now++ }

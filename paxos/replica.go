package paxos

import (
	"bytes"
	"fmt"
	"slices"
	"sort"

	"github.com/vmihailenco/msgpack/v5"

	"tide/wire"
)

// StateMachine is what replicas run. Apply and Read must be deterministic:
// every replica applies the same commands in the same order and must reach
// the same state.
type StateMachine interface {
	// Apply executes a command and returns its result.
	Apply(op []byte) []byte
	// Read executes a read-only command.
	Read(op []byte) []byte
	// Snapshot serializes the state; Restore replaces the state with one.
	Snapshot() []byte
	Restore([]byte) error
}

type clientRecord struct {
	Seq    uint64 `msgpack:"s"`
	Result []byte `msgpack:"r"`
	Slot   uint64 `msgpack:"l"` // the slot of the session's last command
}

type replicaSnapshot struct {
	Slot    uint64                  `msgpack:"s"`
	State   []byte                  `msgpack:"st"`
	Clients map[uint64]clientRecord `msgpack:"c"`
	Config  *Config                 `msgpack:"cf,omitempty"`
}

// errSessionExpired is the reply to a command of a session the replicas
// have forgotten: applying it could apply it twice.
const errSessionExpired = "session expired: its last command was too long ago; start a new session"

type pendingRead struct {
	slot uint64
	cmd  Command
}

// Replica learns chosen slots, executes them in slot order on its state
// machine, and answers the commands of the slots it is responsible for
// (slot mod replicas, in the configuration of that slot). A client's
// retried command is applied once: the replica remembers each session's
// last sequence number and result, and forgets sessions silent for
// SessionSlots slots. Its configuration changes only as the log it
// executes does, so every replica agrees on it at every slot.
type Replica struct {
	outbox
	membership
	idx int // in cfg.Replicas, or -1 when not a member
	now int
	sm  StateMachine

	log        map[uint64]Value
	exec       uint64 // next slot to execute
	clients    map[uint64]clientRecord
	snap       []byte // latest snapshot, encoded
	snapSlot   uint64
	lastExec   int // tick of the last progress
	lastAsk    int
	lastReport int
	reads      []pendingRead
	peer       int
	pulling    *pull
	// latest is the newest configuration heard of, ahead of the log the
	// replica has executed: whom to report to and recover from. A replica
	// that fell behind several changes would otherwise ask only roles
	// that have left.
	latest        Config
	lastConfigAsk int
	// logEpoch is the epoch of the newest configuration the executed log
	// (or the snapshot restored) holds; a replica that joined starts at 0
	// whatever configuration it was given.
	logEpoch uint64
	// Executed records every executed slot's value when non-nil (tests).
	Executed func(slot uint64, v Value)
}

// NewReplica returns replica number idx of cfg.Replicas running sm,
// restored from snapshot (a Ready.Snapshot it persisted earlier) if that is
// not nil.
func NewReplica(cfg Config, idx int, sm StateMachine, snapshot []byte) (*Replica, error) {
	return NewReplicaAt(cfg, cfg.Replicas[idx], sm, snapshot)
}

// NewReplicaAt returns the replica at self; see NewReplica.
func NewReplicaAt(cfg Config, self string, sm StateMachine, snapshot []byte) (*Replica, error) {
	r := &Replica{outbox: outbox{self: self}, sm: sm, log: map[uint64]Value{}, clients: map[uint64]clientRecord{}}
	r.setConfig(cfg)
	if snapshot != nil {
		if err := r.restore(snapshot); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// setConfig makes c the replica's configuration, whatever its epoch.
func (r *Replica) setConfig(c Config) {
	r.cfg = c.withDefaults()
	r.epoch = r.cfg.Epoch
	r.idx = slices.Index(r.cfg.Replicas, r.self)
	if r.cfg.Epoch >= r.latest.Epoch || r.latest.Leaders == nil {
		r.latest = r.cfg
	}
}

// ExecutedThrough returns the next slot to execute: every slot below it
// has run.
func (r *Replica) ExecutedThrough() uint64 { return r.exec }

// LogEpoch returns the epoch of the newest configuration in the log the
// replica has executed (or restored from a snapshot): once a replica's
// LogEpoch reaches e, it holds durably everything up to the change to e.
func (r *Replica) LogEpoch() uint64 { return r.logEpoch }

// Durable returns the slot of the replica's latest snapshot.
func (r *Replica) Durable() uint64 { return r.snapSlot }

// Sessions returns how many client sessions the replica remembers.
func (r *Replica) Sessions() int { return len(r.clients) }

// Step handles one message.
func (r *Replica) Step(m Message) {
	switch {
	case m.Kind == KindConfigQuery:
		c := r.latest.Clone()
		r.send(Message{Kind: KindConfigReply, To: m.From, Config: &c})
		return
	case m.Kind == KindConfigReply:
		if m.Config != nil && m.Config.Epoch > r.latest.Epoch && m.Config.Validate() == nil {
			r.latest = m.Config.Clone().withDefaults()
		}
		return
	case m.Epoch > r.latest.Epoch && r.now-r.lastConfigAsk >= r.cfg.ResendTicks:
		r.lastConfigAsk = r.now
		r.send(Message{Kind: KindConfigQuery, To: m.From})
	}
	switch m.Kind {
	case KindChosen:
		if len(m.Entries) == 0 {
			r.learn(m.Slot, m.Value)
		}
		for _, e := range m.Entries {
			r.learn(e.Slot, e.Value)
		}
		r.execute()
	case KindRecover:
		to := m.From
		if m.Leader != "" {
			to = m.Leader // the leader asks this replica to serve another
		}
		r.serveRecover(to, m.Slot)
	case KindSnapshot:
		r.onSnapshotChunk(m)
	case KindSnapshotPull:
		r.sendSnapshotChunk(m.From, m.Slot, m.Upto)
	case KindRead:
		if r.exec >= m.Slot {
			r.answerRead(m.Command)
		} else {
			r.reads = append(r.reads, pendingRead{slot: m.Slot, cmd: m.Command})
		}
	}
}

func (r *Replica) learn(slot uint64, v Value) {
	if slot < r.exec {
		return
	}
	if cur, ok := r.log[slot]; ok {
		if !sameValue(cur, v) {
			r.violated("slot %d learned as %s and as %s", slot, describe(cur), describe(v))
		}
		return
	}
	r.log[slot] = v
}

func (r *Replica) execute() {
	var replies []Reply
	for {
		v, ok := r.log[r.exec]
		if !ok {
			break
		}
		slot := r.exec
		if r.Executed != nil {
			r.Executed(slot, v)
		}
		mine := r.idx >= 0 && int(slot%uint64(len(r.cfg.Replicas))) == r.idx
		for _, c := range v.Commands {
			rec, seen := r.clients[c.Client]
			reply := Reply{Client: c.Client, Seq: c.Seq, ReplyTo: c.ReplyTo}
			answer := mine
			switch {
			case seen && c.Seq < rec.Seq:
				continue // an old retry; its client has moved on
			case seen && c.Seq == rec.Seq:
				// A repeat: its client has not heard back, perhaps because
				// the replica that answers the slot it was applied in is
				// down or frozen. Every replica answers it.
				reply.Result = rec.Result
				answer = r.idx >= 0
			case !seen && !c.First:
				// A session this replica forgot (or never saw start):
				// its command may have been applied before.
				reply.Err = errSessionExpired
			default:
				reply.Result = r.sm.Apply(c.Op)
				r.clients[c.Client] = clientRecord{Seq: c.Seq, Result: reply.Result, Slot: slot}
			}
			if answer {
				replies = append(replies, reply)
			}
		}
		if v.Config != nil {
			r.logEpoch = max(r.logEpoch, v.Config.Epoch)
		}
		if v.Config != nil && v.Config.Epoch > r.cfg.Epoch {
			// Takes effect from the next slot on. Unbatchers are picked
			// from the newest configuration known: any unbatcher can
			// relay any reply.
			r.setConfig(*v.Config)
		}
		r.exec++
		r.lastExec = r.now
		// A configuration change snapshots too: a replica that leaves may
		// stop once a quorum of those that stay hold the log through it.
		if r.exec%r.cfg.SnapshotEvery == 0 && r.snapshotDue() || v.Config != nil {
			r.snapshot()
		}
		if v.Config != nil {
			r.lastReport = r.now - 2*r.cfg.ResendTicks // report the new snapshot at the next tick
		}
	}
	if len(replies) > 0 {
		// Unbatchers take the fan-out of replies to clients off the
		// replicas. Replies that all go to one client address (a lone
		// reply, or the sessions of one client process) have none: they
		// go straight to it, in one write, a hop sooner.
		if len(r.latest.Unbatchers) > 0 && !oneAddress(replies) {
			u := r.latest.Unbatchers[int(r.exec)%len(r.latest.Unbatchers)]
			r.send(Message{Kind: KindReplyBatch, To: u, Replies: replies, Unsynced: true})
		} else {
			for _, rep := range replies {
				r.send(Message{Kind: KindReply, To: rep.ReplyTo, Reply: rep, Unsynced: true})
			}
		}
	}
	if len(r.reads) > 0 {
		kept := r.reads[:0]
		for _, rd := range r.reads {
			if r.exec >= rd.slot {
				r.answerRead(rd.cmd)
			} else {
				kept = append(kept, rd)
			}
		}
		r.reads = kept
	}
}

// oneAddress reports whether every reply goes to the same client address.
func oneAddress(replies []Reply) bool {
	for i := 1; i < len(replies); i++ {
		if replies[i].ReplyTo != replies[0].ReplyTo {
			return false
		}
	}
	return true
}

func (r *Replica) answerRead(c Command) {
	res := r.sm.Read(c.Op)
	r.send(Message{Kind: KindReply, To: c.ReplyTo, Reply: Reply{Client: c.Client, Seq: c.Seq, Result: res, ReplyTo: c.ReplyTo}, Unsynced: true})
}

// snapshotKeys is how many keys of state one more SnapshotEvery slots
// between snapshots is worth.
const snapshotKeys = 50_000

// snapshotDue says whether the replica snapshots at r.exec, a multiple of
// SnapshotEvery: at every one while the state is small, at every m-th for
// a large one (m = 1 + keys/snapshotKeys), so that the work of snapshots,
// each a copy of the whole state, grows with the commands executed rather
// than with the state's size times the slots. It depends only on the slot
// and the state, so every replica snapshots, and forgets silent sessions,
// at the same slots.
func (r *Replica) snapshotDue() bool {
	sized, ok := r.sm.(interface{ Len() int })
	if !ok {
		return true
	}
	m := 1 + uint64(sized.Len())/snapshotKeys
	return (r.exec/r.cfg.SnapshotEvery)%m == 0
}

// snapshot saves the state machine and client table at r.exec and drops
// the log below it.
func (r *Replica) snapshot() {
	// Forget sessions silent for SessionSlots: every replica does so at the
	// same slot, so their tables agree.
	for id, rec := range r.clients {
		if rec.Slot+r.cfg.SessionSlots < r.exec {
			delete(r.clients, id)
		}
	}
	cfg := r.cfg.Clone()
	s := replicaSnapshot{Slot: r.exec, State: r.sm.Snapshot(), Clients: r.clients, Config: &cfg}
	// One buffer big enough for all of it: the state, copied once, is
	// most of a snapshot.
	size := len(s.State) + 64<<10
	for _, c := range r.clients {
		size += 64 + len(c.Result)
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(buf)
	if err := enc.Encode(&s); err != nil {
		return
	}
	b := buf.Bytes()
	r.snap, r.snapSlot = b, r.exec
	r.rd.Snapshot = b
	for slot := range r.log {
		if slot < r.exec {
			delete(r.log, slot)
		}
	}
}

func (r *Replica) restore(data []byte) error {
	var s replicaSnapshot
	if err := wire.Check(data); err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	if err := msgpack.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	if err := r.sm.Restore(s.State); err != nil {
		return err
	}
	if s.Clients == nil {
		s.Clients = map[uint64]clientRecord{}
	}
	r.clients = s.Clients
	r.exec = s.Slot
	if s.Config != nil && s.Config.Validate() == nil {
		r.setConfig(*s.Config)
		r.logEpoch = max(r.logEpoch, s.Config.Epoch)
	}
	r.snap, r.snapSlot = data, s.Slot
	for slot := range r.log {
		if slot < r.exec {
			delete(r.log, slot)
		}
	}
	r.lastExec = r.now
	return nil
}

// pull is a snapshot being received chunk by chunk.
type pull struct {
	from  string
	slot  uint64
	total uint64
	buf   []byte
	at    int // tick of the last chunk
	tries int // asks for the same chunk
}

// sendSnapshotChunk sends the chunk at offset off of the snapshot at slot,
// or, if this replica's snapshot is another by now, its first chunk.
func (r *Replica) sendSnapshotChunk(to string, slot, off uint64) {
	if r.snap == nil {
		return
	}
	if slot != r.snapSlot || off >= uint64(len(r.snap)) {
		off = 0
	}
	end := min(off+uint64(snapshotChunk), uint64(len(r.snap)))
	r.send(Message{Kind: KindSnapshot, To: to, Slot: r.snapSlot, Upto: off, Durable: uint64(len(r.snap)), Data: r.snap[off:end]})
}

// onSnapshotChunk assembles a peer's snapshot, asking for each next chunk
// in turn (so at most one is in flight), and restores it once complete.
func (r *Replica) onSnapshotChunk(m Message) {
	if m.Slot <= r.exec || m.Durable == 0 || m.Durable > 1<<40 {
		return
	}
	p := r.pulling
	if m.Upto == 0 && (p == nil || p.slot != m.Slot || p.from != m.From || len(p.buf) == 0 || m.Slot > p.slot) {
		p = &pull{from: m.From, slot: m.Slot, total: m.Durable}
		r.pulling = p
	}
	if p == nil || p.from != m.From || p.slot != m.Slot || p.total != m.Durable || m.Upto != uint64(len(p.buf)) {
		return // not the chunk expected next
	}
	p.buf = append(p.buf, m.Data...)
	p.at, p.tries = r.now, 0
	if uint64(len(p.buf)) < p.total {
		r.send(Message{Kind: KindSnapshotPull, To: p.from, Slot: p.slot, Upto: uint64(len(p.buf))})
		return
	}
	r.pulling = nil
	if uint64(len(p.buf)) == p.total {
		if err := r.restore(p.buf); err == nil {
			r.rd.Snapshot = p.buf
			r.execute()
			// and the slots chosen after it
			r.send(Message{Kind: KindRecover, To: p.from, Slot: r.exec})
		}
	}
}

// serveRecover sends a lagging peer what it is missing: the snapshot if
// the slots it asks for are truncated here, then chosen slots in order.
func (r *Replica) serveRecover(to string, from uint64) {
	if from < r.snapSlot && r.snap != nil {
		r.sendSnapshotChunk(to, r.snapSlot, 0)
		return // the chosen slots after it, once the peer has it
	}
	var slots []uint64
	for s := range r.log {
		if s >= from {
			slots = append(slots, s)
		}
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i] < slots[j] })
	if len(slots) > 256 {
		slots = slots[:256]
	}
	if len(slots) == 0 {
		return
	}
	entries := make([]Entry, len(slots))
	for i, s := range slots {
		entries[i] = Entry{Slot: s, Value: r.log[s]}
	}
	r.send(Message{Kind: KindChosen, To: to, Entries: entries})
}

// Tick reports progress to the leaders now and then, and asks for missing
// slots when the replica is stuck behind a hole.
func (r *Replica) Tick() {
	r.now++
	if r.now-r.lastReport >= 2*r.cfg.ResendTicks {
		r.lastReport = r.now
		for _, l := range r.latest.Leaders {
			r.send(Message{Kind: KindWatermark, To: l, Slot: r.exec, Durable: r.snapSlot})
		}
	}
	if p := r.pulling; p != nil && r.now-p.at >= r.cfg.ResendTicks {
		// A chunk went missing: ask for it again, a few times, then give
		// up on this peer.
		if p.tries++; p.tries > 3 {
			r.pulling = nil
		} else {
			p.at = r.now
			r.send(Message{Kind: KindSnapshotPull, To: p.from, Slot: p.slot, Upto: uint64(len(p.buf))})
			return
		}
	}
	behind := len(r.log) > int(r.exec-min(r.exec, r.snapSlot)) || len(r.reads) > 0
	if behind && r.now-r.lastExec >= r.cfg.ResendTicks && r.now-r.lastAsk >= r.cfg.ResendTicks {
		r.lastAsk = r.now
		var upto uint64
		for _, rd := range r.reads {
			upto = max(upto, rd.slot) // a read at slot s waits for the slots below s
		}
		peers := r.latest.Replicas
		if n := len(peers); n > 1 || (n == 1 && peers[0] != r.self) {
			r.peer = (r.peer + 1) % n
			if peers[r.peer] == r.self {
				r.peer = (r.peer + 1) % n
			}
			r.send(Message{Kind: KindRecover, To: peers[r.peer], Slot: r.exec})
		}
		for _, l := range r.latest.Leaders {
			r.send(Message{Kind: KindRecover, To: l, Slot: r.exec, Upto: upto})
		}
	}
}

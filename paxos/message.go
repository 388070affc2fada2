// Package paxos implements compartmentalized MultiPaxos (Whittaker et al.,
// "Scaling Replicated State Machines with Compartmentalization", VLDB 2021)
// as pure state machines, one per role: batcher, leader, proxy leader,
// acceptor, replica, unbatcher and client.
//
// Each role is a value with Step (a message arrives), Tick (a unit of time
// passes) and Ready (what to persist, then what to send). Roles never touch
// sockets, clocks, goroutines or disks; package paxos/node drives them over
// the network and durable storage, and package sim drives them over a
// seeded, faulty in-memory network. Of tide it imports only package wire
// (bounds-checked decoding).
package paxos

import (
	"cmp"
	"fmt"
	"slices"
)

// Kind says what a message is.
type Kind uint8

// Message kinds, in the order a command meets them.
const (
	KindInvalid        Kind = iota
	KindRequest             // client -> batcher or leader: one command
	KindBatch               // batcher -> leader: commands to order
	KindNotLeader           // standby leader -> sender: try Leader
	KindPhase1a             // leader -> acceptors
	KindPhase1b             // acceptor -> leader; Upto != 0: more votes from slot Upto, ask again
	KindPhase2a             // leader -> proxy leader -> acceptors
	KindPhase2b             // acceptor -> proxy leader
	KindNack                // acceptor -> proxy leader/leader: a higher ballot exists
	KindChosen              // proxy leader -> replicas and leader; leader -> replica (recovery)
	KindReplyBatch          // replica -> unbatcher
	KindReply               // unbatcher or replica -> client
	KindHeartbeat           // leader -> leaders
	KindRecover             // replica -> leader or replica: send me (or Leader, if set) slots from Slot
	KindSnapshot            // replica -> replica: a chunk (at offset Upto, of Durable bytes) of the state up to Slot
	KindWatermark           // replica -> leaders: executed up to Slot
	KindGC                  // leader -> acceptors: slots below Slot are executed by f+1 replicas
	KindMaxSlotRequest      // client -> acceptors: largest slot you accepted?
	KindMaxSlotReply        // acceptor -> client
	KindRead                // client -> replica: execute this read after slot Slot
	KindMatchA              // leader -> matchmakers: register Ballot's acceptor groups
	KindMatchB              // matchmaker -> leader: the older rounds' groups still live, and the floor (Slot)
	KindGarbageA            // leader -> matchmakers: rounds below Ballot are retired; slots below Slot are durable on replicas
	KindGarbageB            // matchmaker -> leader: retired
	KindMatchQuery          // client -> matchmakers: every live round's groups
	KindMatchReply          // matchmaker -> client
	KindConfigQuery         // any -> any: send me your configuration
	KindConfigReply         // any -> any: my configuration
	KindReconfigure         // operator -> leader: propose Config as the next epoch
	KindReconfigured        // leader -> operator: Config is chosen, or Note says why not
	KindTakeover            // leaving leader -> leader: campaign now
	KindSnapshotPull        // replica -> replica: send the chunk of snapshot Slot at offset Upto
	kindCount
)

var kindNames = [...]string{"invalid", "request", "batch", "not_leader", "phase1a", "phase1b", "phase2a", "phase2b",
	"nack", "chosen", "reply_batch", "reply", "heartbeat", "recover", "snapshot", "watermark", "gc",
	"max_slot_request", "max_slot_reply", "read", "match_a", "match_b", "garbage_a", "garbage_b",
	"match_query", "match_reply", "config_query", "config_reply", "reconfigure", "reconfigured", "takeover", "snapshot_pull"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Ballot orders leaders: higher Round wins, ties broken by leader ID.
type Ballot struct {
	Round uint64 `msgpack:"r"`
	ID    uint32 `msgpack:"i"`
}

// Less reports whether b is older than o.
func (b Ballot) Less(o Ballot) bool {
	return b.Round < o.Round || (b.Round == o.Round && b.ID < o.ID)
}

func (b Ballot) String() string { return fmt.Sprintf("%d.%d", b.Round, b.ID) }

// Command is one client operation, identified by (Client, Seq) so that a
// retried command takes effect once.
type Command struct {
	Client  uint64 `msgpack:"c"`
	Seq     uint64 `msgpack:"s"`
	Op      []byte `msgpack:"o"`
	ReplyTo string `msgpack:"t"` // the client's address
	// First marks a session's first command through the log: replicas
	// start a session on it, and refuse any other command of a session
	// they do not know (one they forgot), which may have been applied.
	First bool `msgpack:"1,omitempty"`
}

// Value is what a slot holds: a batch of commands, a no-op that fills a
// hole, or a reconfiguration: the configuration of the next epoch, which
// takes effect at this slot.
type Value struct {
	Noop     bool      `msgpack:"n,omitempty"`
	Commands []Command `msgpack:"c,omitempty"`
	Config   *Config   `msgpack:"cf,omitempty"`
}

// RoundConfig is the acceptor groups one leader round (ballot) uses for
// phase 2, as the matchmakers record it.
type RoundConfig struct {
	Ballot Ballot  `msgpack:"b"`
	Epoch  uint64  `msgpack:"e"`
	Groups []Group `msgpack:"g"`
}

// Entry is an accepted or chosen slot.
type Entry struct {
	Slot   uint64 `msgpack:"s"`
	Ballot Ballot `msgpack:"b"`
	Value  Value  `msgpack:"v"`
}

// Reply answers one command.
type Reply struct {
	Client  uint64 `msgpack:"c"`
	Seq     uint64 `msgpack:"s"`
	Result  []byte `msgpack:"r"`
	ReplyTo string `msgpack:"t"`
	// Err, if set, says the replicas refused the command without applying
	// it (its session was forgotten).
	Err string `msgpack:"e,omitempty"`
}

// Message is every message of the protocol; Kind says which fields matter.
type Message struct {
	Kind    Kind      `msgpack:"k"`
	From    string    `msgpack:"f"`
	To      string    `msgpack:"-"` // not sent: the transport's destination
	Ballot  Ballot    `msgpack:"b,omitempty"`
	Slot    uint64    `msgpack:"s,omitempty"`
	Value   Value     `msgpack:"v,omitempty"`
	Entries []Entry   `msgpack:"e,omitempty"`
	Command Command   `msgpack:"c,omitempty"`
	Batch   []Command `msgpack:"bt,omitempty"`
	Replies []Reply   `msgpack:"rp,omitempty"`
	Reply   Reply     `msgpack:"r,omitempty"`
	Leader  string    `msgpack:"l,omitempty"`
	Data    []byte    `msgpack:"d,omitempty"`  // snapshot bytes
	Durable uint64    `msgpack:"du,omitempty"` // watermark: the replica's durable snapshot slot
	// Epoch is the sender's configuration epoch: a receiver that is behind
	// asks the sender for its configuration.
	Epoch  uint64        `msgpack:"ep,omitempty"`
	Config *Config       `msgpack:"cf,omitempty"` // config_reply, reconfigure, reconfigured
	Group  *Group        `msgpack:"g,omitempty"`  // leader -> proxy leader phase2a: the slot's acceptors
	Rounds []RoundConfig `msgpack:"rc,omitempty"` // match_a (one), match_b, match_reply
	Upto   uint64        `msgpack:"u,omitempty"`  // recover: a pending read waits for the slots below
	Note   string        `msgpack:"nt,omitempty"` // reconfigured: why not
	// Retired is a matchmaker's retirement point: rounds below it need no
	// phase 1 any longer.
	Retired Ballot `msgpack:"rb,omitempty"`
	// RetiredEpoch is the configuration epoch of the round that retired
	// the older ones: no round of an older configuration can have started
	// phase 1 after it, so such rounds are not live either.
	RetiredEpoch uint64 `msgpack:"re,omitempty"`
	// Hops counts how often a batch was handed back by a leader that was
	// not active (not_leader carries the batch back to its batcher, which
	// sends it on to the hinted leader, a bounded number of times).
	Hops uint8 `msgpack:"hp,omitempty"`
	// Pending is, on a client's request, how many commands the client has
	// outstanding, this one included: a batcher under load sizes its
	// batches from its clients' sum (see Batcher.Flush).
	Pending uint32 `msgpack:"pn,omitempty"`

	// SameAsPrevious marks a fan-out (not sent): the message is the one
	// before it in Ready.Messages but for To, so a driver may encode it
	// once for every recipient.
	SameAsPrevious bool `msgpack:"-"`
	// Unsynced marks a message (not sent) that announces nothing its
	// sender persists: a driver may send it before the sender's earlier
	// writes are on disk. A replica's replies are such: they follow from
	// the chosen log, which the acceptors hold, and a replica restarted
	// from an older snapshot computes the same ones again.
	Unsynced bool `msgpack:"-"`
}

func (m Message) String() string {
	return fmt.Sprintf("%s %s->%s b=%s s=%d", m.Kind, m.From, m.To, m.Ballot, m.Slot)
}

// Ready is what a role needs done after Step or Tick: persist Persist (and
// sync it), then send Messages. Messages must not leave before the state
// they depend on is durable.
type Ready struct {
	Persist []PersistOp
	// Snapshot, from a replica, is its latest state to store durably; the
	// replica restarts from it.
	Snapshot []byte
	Messages []Message
}

// PersistOp is one change to an acceptor's or matchmaker's durable state
// (a leader persists only Promised, its last ballot).
type PersistOp struct {
	Promised *Ballot `msgpack:"p,omitempty"`
	Accept   *Entry  `msgpack:"a,omitempty"`
	GCBelow  uint64  `msgpack:"g,omitempty"`
	// Match records a round's acceptor groups at a matchmaker.
	Match *RoundConfig `msgpack:"m,omitempty"`
	// Retire drops a matchmaker's rounds below this ballot.
	Retire *Ballot `msgpack:"rb,omitempty"`
	// Floor raises a matchmaker's floor: slots below it are durable on a
	// quorum of replicas, so no leader need recover them.
	Floor uint64 `msgpack:"fl,omitempty"`
	// Config is a leader's newest configuration.
	Config *Config `msgpack:"cf,omitempty"`
	// RetireEpoch is the configuration epoch of the round retiring the
	// older ones (with Retire).
	RetireEpoch uint64 `msgpack:"re,omitempty"`
}

// Role is the interface every role state machine implements.
type Role interface {
	Step(m Message)
	Tick()
	Ready() Ready
}

// Flusher is implemented by roles that hold input back to batch it. A
// driver calls Flush whenever no more input is waiting, so a batch holds
// whatever arrived while the last one was being handled: small batches and
// low latency under light load, full batches under heavy load.
type Flusher interface {
	Flush()
}

// Holder is implemented by a Flusher whose Flush may keep a batch back
// while more commands are due soon (a batcher under load). Held reports
// whether the last Flush did; the driver then calls Release after a short
// wait (a millisecond or two) unless more input has come and a Flush sent
// it. A driver that never calls Release leaves it to the next Tick.
type Holder interface {
	Held() bool
	Release()
}

// Recycler is implemented by roles that can reuse the message slice of a
// Ready the driver is done with. A driver that copies every message out
// before it next calls the role (the simulator does) hands the slice
// back with Recycle; one that keeps messages longer never calls it.
type Recycler interface {
	Recycle(msgs []Message)
}

// outbox collects a role's pending output.
type outbox struct {
	self  string
	epoch uint64 // stamped on every message sent
	rd    Ready
	// spare is a message slice handed back by Recycle, reused for the
	// next Ready's messages.
	spare []Message
	// Invariant is called when a state that should be impossible is seen
	// (two values for one slot, a ballot re-acknowledged with another
	// value): the role refuses the input and reports the evidence. Nil
	// panics, which is what tests want; a driver may log and count instead.
	Invariant func(msg string)
}

func (o *outbox) send(m Message) {
	m.From = o.self
	m.Epoch = max(m.Epoch, o.epoch)
	if o.rd.Messages == nil && o.spare != nil {
		o.rd.Messages, o.spare = o.spare, nil
	}
	o.rd.Messages = append(o.rd.Messages, m)
}

// sendAll sends m to each of to; a driver encodes it once.
func (o *outbox) sendAll(m Message, to []string) {
	for i, a := range to {
		m.To, m.SameAsPrevious = a, i > 0
		o.send(m)
	}
}

// violated reports a broken invariant.
func (o *outbox) violated(format string, args ...any) {
	msg := fmt.Sprintf("%s: invariant violated: ", o.self) + fmt.Sprintf(format, args...)
	if o.Invariant == nil {
		panic(msg)
	}
	o.Invariant(msg)
}

// SetInvariantHandler replaces the panic on a broken invariant (see
// outbox.Invariant).
func (o *outbox) SetInvariantHandler(f func(string)) { o.Invariant = f }

// Ready returns and clears the pending output.
func (o *outbox) Ready() Ready {
	rd := o.rd
	o.rd = Ready{}
	return rd
}

// Recycle takes back the messages of a Ready the driver has copied out.
// A slice of more than 1,024 (a burst) is left to the collector rather
// than kept for every later round.
func (o *outbox) Recycle(msgs []Message) {
	if cap(msgs) > 0 && cap(msgs) <= 1024 {
		clear(msgs[:cap(msgs)])
		o.spare = msgs[:0]
	}
}

// sortedKeys returns a map's keys in order, so that roles emit messages in
// an order that does not depend on map iteration: a simulation run must be
// a pure function of its seed.
func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// keysWhere returns, in order, the keys of m whose values satisfy due: a
// tick sorts only what it acts on, not everything in flight.
func keysWhere[K cmp.Ordered, V any](m map[K]V, due func(V) bool) []K {
	var keys []K
	for k, v := range m {
		if due(v) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// sameValue reports whether two values are the same proposal.
func sameValue(a, b Value) bool {
	if a.Noop != b.Noop || len(a.Commands) != len(b.Commands) || (a.Config == nil) != (b.Config == nil) {
		return false
	}
	if a.Config != nil && a.Config.Epoch != b.Config.Epoch {
		return false
	}
	for i := range a.Commands {
		x, y := &a.Commands[i], &b.Commands[i]
		if x.Client != y.Client || x.Seq != y.Seq || string(x.Op) != string(y.Op) {
			return false
		}
	}
	return true
}

// describe is a short form of a value for invariant reports.
func describe(v Value) string {
	switch {
	case v.Noop:
		return "noop"
	case v.Config != nil:
		return fmt.Sprintf("config epoch %d", v.Config.Epoch)
	}
	s := "["
	for i, c := range v.Commands {
		if i > 0 {
			s += " "
		}
		if i == 8 {
			s += fmt.Sprintf("... %d more", len(v.Commands)-8)
			break
		}
		s += fmt.Sprintf("%d.%d", c.Client, c.Seq)
	}
	return s + "]"
}

// Frames must stay well below the transport's 64 MiB limit: a phase 1b
// carries at most phase1bBytes of votes (the leader asks for the rest), and
// a snapshot travels in chunks of snapshotChunk bytes. Variables so that
// tests can make them small.
var (
	phase1bBytes  = 8 << 20
	snapshotChunk = 4 << 20
)

// entrySize estimates an entry's encoded size.
func entrySize(e *Entry) int {
	n := 32
	for i := range e.Value.Commands {
		c := &e.Value.Commands[i]
		n += 24 + len(c.Op) + len(c.ReplyTo)
	}
	if e.Value.Config != nil {
		n += 256 * len(e.Value.Config.All())
	}
	return n
}

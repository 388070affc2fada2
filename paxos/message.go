// Package paxos implements compartmentalized MultiPaxos (Whittaker et al.,
// "Scaling Replicated State Machines with Compartmentalization", VLDB 2021)
// as pure state machines, one per role: batcher, leader, proxy leader,
// acceptor, replica, unbatcher and client.
//
// Each role is a value with Step (a message arrives), Tick (a unit of time
// passes) and Ready (what to persist, then what to send). Roles never touch
// sockets, clocks, goroutines or disks; package paxos/node drives them over
// the network and durable storage, and package sim drives them over a
// seeded, faulty in-memory network.
package paxos

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/vmihailenco/msgpack/v5"

	"tide/wire"
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
	KindPhase1b             // acceptor -> leader
	KindPhase2a             // leader -> proxy leader -> acceptors
	KindPhase2b             // acceptor -> proxy leader
	KindNack                // acceptor -> proxy leader/leader: a higher ballot exists
	KindChosen              // proxy leader -> replicas and leader; leader -> replica (recovery)
	KindReplyBatch          // replica -> unbatcher
	KindReply               // unbatcher or replica -> client
	KindHeartbeat           // leader -> leaders
	KindRecover             // replica -> leader or replica: send me slots from Slot
	KindSnapshot            // replica -> replica: state up to Slot
	KindWatermark           // replica -> leaders: executed up to Slot
	KindGC                  // leader -> acceptors: slots below Slot are executed by f+1 replicas
	KindMaxSlotRequest      // client -> acceptors: largest slot you accepted?
	KindMaxSlotReply        // acceptor -> client
	KindRead                // client -> replica: execute this read after slot Slot
	kindCount
)

var kindNames = [...]string{"invalid", "request", "batch", "not_leader", "phase1a", "phase1b", "phase2a", "phase2b",
	"nack", "chosen", "reply_batch", "reply", "heartbeat", "recover", "snapshot", "watermark", "gc",
	"max_slot_request", "max_slot_reply", "read"}

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
}

// Value is what a slot holds: a batch of commands, or a no-op that fills a
// hole.
type Value struct {
	Noop     bool      `msgpack:"n,omitempty"`
	Commands []Command `msgpack:"c,omitempty"`
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
}

// Message is every message of the protocol; Kind says which fields matter.
type Message struct {
	Kind    Kind      `msgpack:"k"`
	From    string    `msgpack:"f"`
	To      string    `msgpack:"to"`
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
}

func (m Message) String() string {
	return fmt.Sprintf("%s %s->%s b=%s s=%d", m.Kind, m.From, m.To, m.Ballot, m.Slot)
}

// Encode serializes m.
func Encode(m *Message) ([]byte, error) { return msgpack.Marshal(m) }

// Decode parses a message and checks that its kind is known. Its bounds are
// checked before decoding, so garbage cannot make it allocate more than a
// small multiple of len(b).
func Decode(b []byte) (Message, error) {
	if err := wire.Check(b); err != nil {
		return Message{}, fmt.Errorf("decode paxos message: %w", err)
	}
	var m Message
	if err := msgpack.Unmarshal(b, &m); err != nil {
		return Message{}, fmt.Errorf("decode paxos message: %w", err)
	}
	if m.Kind == KindInvalid || m.Kind >= kindCount {
		return Message{}, fmt.Errorf("decode paxos message: unknown kind %d", m.Kind)
	}
	return m, nil
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

// PersistOp is one change to an acceptor's durable state.
type PersistOp struct {
	Promised *Ballot `msgpack:"p,omitempty"`
	Accept   *Entry  `msgpack:"a,omitempty"`
	GCBelow  uint64  `msgpack:"g,omitempty"`
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

// outbox collects a role's pending output.
type outbox struct {
	self string
	rd   Ready
}

func (o *outbox) send(m Message) {
	m.From = o.self
	o.rd.Messages = append(o.rd.Messages, m)
}

// Ready returns and clears the pending output.
func (o *outbox) Ready() Ready {
	rd := o.rd
	o.rd = Ready{}
	return rd
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

func decodeRaw(b []byte, m *Message) error { return msgpack.Unmarshal(b, m) }

package kv

import (
	"fmt"
)

// Kind says what a message is.
type Kind uint8

// Message kinds.
const (
	KindInvalid    Kind = iota
	KindClientPut       // client -> coordinator: write Rec (Tomb for delete)
	KindClientGet       // client -> coordinator: read Rec.Key
	KindClientResp      // coordinator -> client
	KindPut             // coordinator -> replica: store Rec
	KindPutAck          // replica -> coordinator
	KindGet             // coordinator -> replica: send me Rec.Key
	KindGetResp         // replica -> coordinator
	KindDigest          // anti-entropy: bucket hashes of (Lo, Hi], please
	KindDigestResp      // Hashes
	KindKeys            // anti-entropy: key versions of (Lo, Hi], please
	KindKeysResp        // Versions
	KindPush            // Records to store; acked with KindPushAck
	KindPushAck
	KindPull      // send me these Keys (as a KindPush)
	KindPullRange // send me every record of (Lo, Hi] (as KindPushes)
	KindOffer     // hand-off: Versions of records I would push; which do you lack?
	KindOfferResp // Keys lacking (pushed next, acked with KindPushAck); none: all held
	// KindPutBatch carries a round's client writes from their coordinator
	// to one replica: store Records, then answer once with
	// KindPutBatchAck and the batch's ID. The coordinator keeps which ops
	// the batch holds.
	KindPutBatch
	KindPutBatchAck
	// KindGetBatch carries a round's reads from their coordinator to one
	// replica: Keys to read. KindGetBatchResp answers with Records, one per
	// key in order; a record of version 0 means the key is not held.
	KindGetBatch
	KindGetBatchResp
	// KindRegionPut carries a write from the region it was made in to a
	// node of another region (see regions.go): write Rec, with its
	// version, through this region's quorum. KindRegionAck answers once
	// W replicas hold it (Rec: its key and version; Err: not held).
	KindRegionPut
	KindRegionAck
	// KindClientCas is a read-modify-write of Rec.Key (Keys: the Op), run
	// through Paxos on the key's replicas by the node that leads the key
	// (lwt.go); answered with KindClientResp. Between nodes (a forwarded
	// op), the answer comes back as KindClientResp too.
	KindClientCas
	// Paxos on a key's replicas: KindPrepare (Ballot) is answered by
	// KindPromise (Found: promised; Rec: the replica's record of the key;
	// Records: the proposal it accepted last, at ballot Ballot; refused:
	// Ballot is what it promised). KindAccept (Rec at Ballot) is answered
	// by KindAccepted (Found: accepted; refused: Ballot promised).
	KindPrepare
	KindPromise
	KindAccept
	KindAccepted
	// KindCasTaken: a key's leader received the forwarded op ID (sent
	// again for a duplicate): the forwarder stops resending it and waits
	// for its answer instead of suspecting the leader.
	KindCasTaken
	// KindRegionMark carries a node's replication watermark to every
	// node of another region (regions.go): every client write the node
	// coordinated in its incarnation ID (Config.Origin), up to version
	// Horizon, is held by a write quorum of the receiver's region.
	KindRegionMark
	// KindViewState carries a node's view of the ring and how far its
	// transition to it has come (views.go): ID, the view's digest; Found,
	// the node has settled on it (its hand-off is done and its primary
	// range agrees with every replica); W, flags: 1, the node still keeps
	// older views and wants the others' states; 2, the node does not yet
	// know the views the members run with (informed.go), answer at once
	// with 4, Versions listing the current view too.
	KindViewState
	// KindPutRefused answers a KindPut (ID: the op) or, with Found, a
	// KindPutBatch (ID: the batch) that the replica turned away unstored;
	// Err says why (its disk is full: see Node.Refuse). The coordinator
	// counts the replica out of the write's quorum at once, rather than
	// waiting out its timeout.
	KindPutRefused
	// KindPutLeaving answers a KindPut (ID: the op) or, with Found, a
	// KindPutBatch (ID: the batch) on a node that is leaving the ring: it
	// stored the write but counts toward no quorum (it may exit before
	// handing it off). The coordinator sends the write to the node that
	// takes the leaving node's place in each preference list that had
	// it, and counts that node instead, so that a write whose other
	// replicas are silent still meets its quorum while the ring still
	// routes to the leaving node.
	KindPutLeaving
	kindCount
)

var kindNames = [...]string{"invalid", "client_put", "client_get", "client_resp", "put", "put_ack", "get", "get_resp",
	"digest", "digest_resp", "keys", "keys_resp", "push", "push_ack", "pull", "pull_range", "offer", "offer_resp",
	"put_batch", "put_batch_ack", "get_batch", "get_batch_resp", "region_put", "region_ack",
	"client_cas", "prepare", "promise", "accept", "accepted", "cas_taken", "region_mark", "view_state", "put_refused",
	"put_leaving"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// KeyVersion names one version of a key, for anti-entropy.
type KeyVersion struct {
	_msgpack struct{} `msgpack:",as_array"`
	Key      []byte   `msgpack:"k"`
	Version  uint64   `msgpack:"v"`
	Tomb     bool     `msgpack:"t,omitempty"`
}

// Message is every message of the protocol.
type Message struct {
	_msgpack struct{}     `msgpack:",as_array"` // positional: no field names or omit checks on the hot path
	Kind     Kind         `msgpack:"k"`
	From     string       `msgpack:"f"`
	To       string       `msgpack:"to"`
	ID       uint64       `msgpack:"id,omitempty"`
	Rec      Record       `msgpack:"r,omitempty"`
	Found    bool         `msgpack:"fd,omitempty"`
	Err      string       `msgpack:"e,omitempty"`
	W        int          `msgpack:"w,omitempty"` // client override of W or R
	Lo       uint32       `msgpack:"lo,omitempty"`
	Hi       uint32       `msgpack:"hi,omitempty"`
	Buckets  int          `msgpack:"b,omitempty"`
	Hashes   []uint64     `msgpack:"h,omitempty"`
	Versions []KeyVersion `msgpack:"vs,omitempty"`
	Records  []Record     `msgpack:"rs,omitempty"`
	Keys     [][]byte     `msgpack:"ks,omitempty"`
	// Horizon, on anti-entropy messages, is the newest version a
	// comparison covers: records written since are likely still on their
	// way to some replica, and would look like differences.
	Horizon uint64 `msgpack:"hz,omitempty"`
	// Ballot is a Paxos ballot (see KindPrepare).
	Ballot uint64 `msgpack:"bl,omitempty"`

	dep uint64 // local only: 1 + the round whose persistence this answer waits for
	// Trace, local only, on the answer to a client request that took
	// SlowTicks or more: what the coordinator asked and heard, for the
	// driver's log.
	Trace string `msgpack:"-"`
}

// StoredBytes is the key and value bytes m asks its receiver to store:
// 0 for a read or a delete (a driver whose disk is full refuses the
// rest, and takes deletes, which return space).
func (m *Message) StoredBytes() int64 {
	var n int64
	switch m.Kind {
	case KindClientPut, KindPut, KindRegionPut:
		if !m.Rec.Tomb {
			n = int64(len(m.Rec.Key) + len(m.Rec.Value))
		}
	case KindPutBatch, KindPush:
		for i := range m.Records {
			if r := &m.Records[i]; !r.Tomb {
				n += int64(len(r.Key) + len(r.Value))
			}
		}
	}
	return n
}

// DurableAfter reports, for an answer that vouches for local state, the
// round (see Ready.Round) up to which that state must be durable before
// it leaves. Without one (ok false), it is the round the answer comes
// from, or the latest that persisted anything.
func (m Message) DurableAfter() (round uint64, ok bool) {
	if m.dep == 0 {
		return 0, false
	}
	return m.dep - 1, true
}

// Encode serializes m.
func Encode(m *Message) ([]byte, error) {
	return AppendMessage(make([]byte, 0, messageSize(m)), m), nil
}

// Decode parses a message, bounds first. The result does not share memory
// with b.
func Decode(b []byte) (Message, error) {
	return DecodeOwned(append([]byte(nil), b...))
}

// DecodeOwned is Decode of a buffer the caller hands over: the message's
// keys and values point into b, which must not change afterwards.
func DecodeOwned(b []byte) (Message, error) {
	m, err := DecodeMessage(b)
	if err != nil {
		return Message{}, fmt.Errorf("decode kv message: %w", err)
	}
	if m.Kind == KindInvalid || m.Kind >= kindCount {
		return Message{}, fmt.Errorf("decode kv message: unknown kind %d", m.Kind)
	}
	return m, nil
}

// Ready is what a Node needs done: persist Persist durably, then send
// Messages.
type Ready struct {
	Persist  []PersistOp
	Messages []Message
	// Round numbers the Ready calls: 0, 1, 2, ...
	Round uint64
	// Marks are the replication watermarks other regions' nodes sent
	// this round (KindRegionMark), for the driver to keep: a write of
	// Origin at or below Version is held by a write quorum of this
	// region (see RegionMark).
	Marks []RegionMark
}

// PersistOp is one change to a node's durable state.
type PersistOp struct {
	Put      *Record // store this record (already known to be newer)
	Delete   []byte  // forget this key entirely (handed off)
	Hint     *Hint   // hold this write for a replica that did not answer
	DoneHint *Hint   // the hint was delivered
	// Outbox holds a write for another region (Target) until that region
	// acknowledges it; DoneOutbox drops it (Rec: key and version only).
	Outbox, DoneOutbox *Hint
	// Paxos stores a key's Paxos acceptor state (lwt.go). A Delete drops
	// it with the record.
	Paxos *PaxosState
	// Had says whether the key of a Put or Delete held a record before
	// this op (earlier ops of the same Ready included), and HadBytes that
	// record's key and value bytes: the storage layer keeps its record
	// counts with them instead of scanning.
	Had      bool
	HadBytes int64
	// Bulk, on a Put, names the node whose push (a range stream, a
	// hand-off, an answer to a pull) carried the record. Storage may write
	// such records in bulk, in files of their own, rather than through its
	// log.
	Bulk string
}

// Hint is a write held for a replica that did not acknowledge it.
type Hint struct {
	Target string `msgpack:"t"`
	Rec    Record `msgpack:"r"`
}

// AfterPersist reports whether m may only leave once the Persist of the same
// Ready is durable: answers and acknowledgements vouch for local state.
// Requests to other nodes can leave at once, so a coordinator's own write
// overlaps with its replicas' writes.
func (m Message) AfterPersist() bool {
	switch m.Kind {
	case KindPut, KindPutBatch, KindGet, KindGetBatch, KindDigest, KindKeys, KindPull, KindPullRange, KindRegionPut, KindClientCas, KindCasTaken, KindRegionMark:
		// A watermark vouches for the other region's state, not this
		// node's.
		return false
	}
	return true
}

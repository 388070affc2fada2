package paxos

import (
	"bytes"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	"tide/wire"
)

// The wire form of a Message is one msgpack array, positional rather than
// keyed, written and read field by field without reflection (a batched
// log moves every command through about nine encodes and ten decodes, so
// this is most of a role's CPU):
//
//	[version, kind, present, field...]
//
// version is wireVersion; present is a bit set of the fields that follow,
// in the order of the field bits below, each only if it is not empty.
// Nested values are arrays too: a ballot [round, id], a command [client,
// seq, op, reply_to, first], a reply [client, seq, result, reply_to, err],
// an entry [slot, ballot, value], a value [noop, commands, config]. The
// rarely sent configuration types (Config, Group, RoundConfig) keep
// msgpack's keyed struct encoding inside their field.
//
// Message.To is not sent: it is the transport's destination, and leaving it
// out lets one encoding serve every recipient of a fan-out.
const wireVersion = 2

// Field bits of the present set, in wire order.
const (
	fFrom uint32 = 1 << iota
	fBallot
	fSlot
	fValue
	fEntries
	fCommand
	fBatch
	fReplies
	fReply
	fLeader
	fData
	fDurable
	fEpoch
	fConfig
	fGroup
	fRounds
	fUpto
	fNote
	fRetired
	fRetiredEpoch
	fHops
	fPending
	fieldsKnown = fPending<<1 - 1
)

type codec struct {
	buf appendBuf
	enc *msgpack.Encoder
	rd  bytes.Reader
	dec *msgpack.Decoder
	// arena holds the byte strings (ops, results) of the message being
	// decoded: one allocation instead of one per command.
	arena []byte
	// own, when set, is the frame being decoded, given away by its
	// caller (DecodeOwned): byte strings are slices of it, not copies.
	own []byte
	// names interns addresses: a batch names a few reply addresses many
	// times, and a role hears from a few peers.
	names   map[string]string
	scratch []byte
}

// maxNames bounds the interned addresses of one codec.
const maxNames = 4096

var codecs = sync.Pool{New: func() any {
	c := &codec{}
	c.enc = msgpack.NewEncoder(&c.buf)
	c.dec = msgpack.NewDecoder(&c.rd)
	return c
}}

// appendBuf is the encoder's writer: it appends to b.
type appendBuf struct{ b []byte }

func (a *appendBuf) Write(p []byte) (int, error) { a.b = append(a.b, p...); return len(p), nil }
func (a *appendBuf) WriteByte(c byte) error      { a.b = append(a.b, c); return nil }
func (a *appendBuf) WriteString(s string) (int, error) {
	a.b = append(a.b, s...)
	return len(s), nil
}

// Encode serializes m (all but To).
func Encode(m *Message) ([]byte, error) {
	c := codecs.Get().(*codec)
	defer codecs.Put(c)
	c.buf.b = c.buf.b[:0]
	if err := encodeMessage(c.enc, m); err != nil {
		return nil, fmt.Errorf("encode paxos message: %w", err)
	}
	return bytes.Clone(c.buf.b), nil
}

// AppendEncode appends the serialization of m (all but To) to dst and
// returns the extended slice. Frames appended one after another to the same
// buffer share one allocation: a role encodes a round's messages this way,
// and the round's frames are slices of it (see paxos/node's Runner.encode).
func AppendEncode(dst []byte, m *Message) ([]byte, error) {
	out, err := appendWith(dst, func(enc *msgpack.Encoder) error { return encodeMessage(enc, m) })
	if err != nil {
		return dst, fmt.Errorf("encode paxos message: %w", err)
	}
	return out, nil
}

// appendWith runs encode on a pooled encoder writing after what dst holds,
// and returns the extended slice.
func appendWith(dst []byte, encode func(*msgpack.Encoder) error) ([]byte, error) {
	c := codecs.Get().(*codec)
	defer codecs.Put(c)
	own := c.buf.b
	c.buf.b = dst
	err := encode(c.enc)
	out := c.buf.b
	c.buf.b = own
	return out, err
}

// Decode parses a message and checks that its kind is known. Its bounds are
// checked before decoding, so garbage cannot make it allocate more than a
// small multiple of len(b).
func Decode(b []byte) (Message, error) { return decode(b, false) }

// DecodeOwned is Decode of a frame the caller gives away (a transport
// with OwnFrames): the message's byte strings (ops, results, snapshot
// data) are slices of b rather than copies, so b must not change after.
func DecodeOwned(b []byte) (Message, error) { return decode(b, true) }

func decode(b []byte, owned bool) (Message, error) {
	var m Message
	if err := wire.Check(b); err != nil {
		return m, fmt.Errorf("decode paxos message: %w", err)
	}
	c := codecs.Get().(*codec)
	defer codecs.Put(c)
	c.rd.Reset(b)
	c.arena = nil
	if owned {
		c.own = b
	}
	err := c.decodeMessage(&m)
	c.arena, c.own = nil, nil
	if err != nil {
		return Message{}, fmt.Errorf("decode paxos message: %w", err)
	}
	if c.rd.Len() != 0 {
		return Message{}, fmt.Errorf("decode paxos message: %d bytes after the message", c.rd.Len())
	}
	if m.Kind == KindInvalid || m.Kind >= kindCount {
		return Message{}, fmt.Errorf("decode paxos message: unknown kind %d", m.Kind)
	}
	return m, nil
}

func present(m *Message) uint32 {
	var p uint32
	set := func(bit uint32, ok bool) {
		if ok {
			p |= bit
		}
	}
	set(fFrom, m.From != "")
	set(fBallot, m.Ballot != Ballot{})
	set(fSlot, m.Slot != 0)
	set(fValue, !emptyValue(&m.Value))
	set(fEntries, len(m.Entries) > 0)
	set(fCommand, !emptyCommand(&m.Command))
	set(fBatch, len(m.Batch) > 0)
	set(fReplies, len(m.Replies) > 0)
	set(fReply, !emptyReply(&m.Reply))
	set(fLeader, m.Leader != "")
	set(fData, len(m.Data) > 0)
	set(fDurable, m.Durable != 0)
	set(fEpoch, m.Epoch != 0)
	set(fConfig, m.Config != nil)
	set(fGroup, m.Group != nil)
	set(fRounds, len(m.Rounds) > 0)
	set(fUpto, m.Upto != 0)
	set(fNote, m.Note != "")
	set(fRetired, m.Retired != Ballot{})
	set(fRetiredEpoch, m.RetiredEpoch != 0)
	set(fHops, m.Hops != 0)
	set(fPending, m.Pending != 0)
	return p
}

func emptyValue(v *Value) bool { return !v.Noop && len(v.Commands) == 0 && v.Config == nil }

func emptyCommand(c *Command) bool {
	return c.Client == 0 && c.Seq == 0 && len(c.Op) == 0 && c.ReplyTo == "" && !c.First
}

func emptyReply(r *Reply) bool {
	return r.Client == 0 && r.Seq == 0 && len(r.Result) == 0 && r.ReplyTo == "" && r.Err == ""
}

// errs keeps the first error of a sequence of encoder or decoder calls.
type errs struct{ err error }

func (e *errs) do(err error) {
	if e.err == nil {
		e.err = err
	}
}

func encodeMessage(enc *msgpack.Encoder, m *Message) error {
	p := present(m)
	var e errs
	e.do(enc.EncodeArrayLen(3 + bits.OnesCount32(p)))
	e.do(enc.EncodeUint(wireVersion))
	e.do(enc.EncodeUint(uint64(m.Kind)))
	e.do(enc.EncodeUint(uint64(p)))
	for f := uint32(1); f <= p; f <<= 1 {
		if p&f == 0 {
			continue
		}
		switch f {
		case fFrom:
			e.do(enc.EncodeString(m.From))
		case fBallot:
			e.do(encodeBallot(enc, m.Ballot))
		case fSlot:
			e.do(enc.EncodeUint(m.Slot))
		case fValue:
			e.do(encodeValue(enc, &m.Value))
		case fEntries:
			e.do(enc.EncodeArrayLen(len(m.Entries)))
			for i := range m.Entries {
				e.do(encodeEntry(enc, &m.Entries[i]))
			}
		case fCommand:
			e.do(encodeCommand(enc, &m.Command))
		case fBatch:
			e.do(encodeCommands(enc, m.Batch))
		case fReplies:
			e.do(enc.EncodeArrayLen(len(m.Replies)))
			for i := range m.Replies {
				e.do(encodeReply(enc, &m.Replies[i]))
			}
		case fReply:
			e.do(encodeReply(enc, &m.Reply))
		case fLeader:
			e.do(enc.EncodeString(m.Leader))
		case fData:
			e.do(enc.EncodeBytes(m.Data))
		case fDurable:
			e.do(enc.EncodeUint(m.Durable))
		case fEpoch:
			e.do(enc.EncodeUint(m.Epoch))
		case fConfig:
			e.do(enc.Encode(m.Config))
		case fGroup:
			e.do(enc.Encode(m.Group))
		case fRounds:
			e.do(enc.Encode(m.Rounds))
		case fUpto:
			e.do(enc.EncodeUint(m.Upto))
		case fNote:
			e.do(enc.EncodeString(m.Note))
		case fRetired:
			e.do(encodeBallot(enc, m.Retired))
		case fRetiredEpoch:
			e.do(enc.EncodeUint(m.RetiredEpoch))
		case fHops:
			e.do(enc.EncodeUint(uint64(m.Hops)))
		case fPending:
			e.do(enc.EncodeUint(uint64(m.Pending)))
		}
	}
	return e.err
}

func encodeBallot(enc *msgpack.Encoder, b Ballot) error {
	var e errs
	e.do(enc.EncodeArrayLen(2))
	e.do(enc.EncodeUint(b.Round))
	e.do(enc.EncodeUint(uint64(b.ID)))
	return e.err
}

func encodeCommand(enc *msgpack.Encoder, c *Command) error {
	var e errs
	e.do(enc.EncodeArrayLen(5))
	e.do(enc.EncodeUint(c.Client))
	e.do(enc.EncodeUint(c.Seq))
	e.do(enc.EncodeBytes(c.Op))
	e.do(enc.EncodeString(c.ReplyTo))
	e.do(enc.EncodeBool(c.First))
	return e.err
}

func encodeCommands(enc *msgpack.Encoder, cs []Command) error {
	var e errs
	e.do(enc.EncodeArrayLen(len(cs)))
	for i := range cs {
		e.do(encodeCommand(enc, &cs[i]))
	}
	return e.err
}

func encodeReply(enc *msgpack.Encoder, r *Reply) error {
	var e errs
	e.do(enc.EncodeArrayLen(5))
	e.do(enc.EncodeUint(r.Client))
	e.do(enc.EncodeUint(r.Seq))
	e.do(enc.EncodeBytes(r.Result))
	e.do(enc.EncodeString(r.ReplyTo))
	e.do(enc.EncodeString(r.Err))
	return e.err
}

func encodeValue(enc *msgpack.Encoder, v *Value) error {
	var e errs
	e.do(enc.EncodeArrayLen(3))
	e.do(enc.EncodeBool(v.Noop))
	e.do(encodeCommands(enc, v.Commands))
	if v.Config == nil {
		e.do(enc.EncodeNil())
	} else {
		e.do(enc.Encode(v.Config))
	}
	return e.err
}

func encodeEntry(enc *msgpack.Encoder, en *Entry) error {
	var e errs
	e.do(enc.EncodeArrayLen(3))
	e.do(enc.EncodeUint(en.Slot))
	e.do(encodeBallot(enc, en.Ballot))
	e.do(encodeValue(enc, &en.Value))
	return e.err
}

// arrayLen reads an array header and checks its length is want.
func (c *codec) arrayLen(want int) error {
	n, err := c.dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("array of %d elements, want %d", n, want)
	}
	return nil
}

// sliceLen reads the array header of a slice (nil counts as empty).
func (c *codec) sliceLen() (int, error) {
	n, err := c.dec.DecodeArrayLen()
	return max(n, 0), err
}

// bytes reads a byte string into the message's arena; empty is nil (the
// encoder cannot tell them apart).
func (c *codec) bytes() ([]byte, error) {
	n, err := c.dec.DecodeBytesLen()
	if err != nil || n <= 0 {
		return nil, err
	}
	if n > c.rd.Len() {
		return nil, fmt.Errorf("byte string of %d bytes, %d left", n, c.rd.Len())
	}
	if c.own != nil {
		off := len(c.own) - c.rd.Len()
		if _, err := c.rd.Seek(int64(n), io.SeekCurrent); err != nil {
			return nil, err
		}
		return c.own[off : off+n : off+n], nil
	}
	if cap(c.arena)-len(c.arena) < n {
		// Everything left fits: one allocation per message.
		c.arena = make([]byte, 0, c.rd.Len())
	}
	b := c.arena[len(c.arena) : len(c.arena)+n : len(c.arena)+n]
	c.arena = c.arena[:len(c.arena)+n]
	return b, c.dec.ReadFull(b)
}

// nilOrBytes reads a byte string that may be nil, keeping nil and empty
// apart, into the arena.
func (c *codec) nilOrBytes() ([]byte, error) {
	if code, err := c.dec.PeekCode(); err != nil {
		return nil, err
	} else if code == 0xc0 { // nil
		return nil, c.dec.DecodeNil()
	}
	b, err := c.bytes()
	if b == nil && err == nil {
		b = []byte{}
	}
	return b, err
}

// encodeWith runs encode on a pooled encoder and returns a copy of what it
// wrote.
func encodeWith(encode func(*msgpack.Encoder) error) []byte {
	c := codecs.Get().(*codec)
	defer codecs.Put(c)
	c.buf.b = c.buf.b[:0]
	if err := encode(c.enc); err != nil {
		// Appends to a buffer do not fail, nor do the value types.
		panic(fmt.Sprintf("paxos: encode: %v", err))
	}
	return bytes.Clone(c.buf.b)
}

// decodeWith checks b's bounds and decodes it: with decode if it is an
// array, or into v through msgpack's reflection if it is a map (the keyed
// struct form of earlier versions). All of b must be used.
func decodeWith(b []byte, v any, decode func(*codec) error) error {
	if err := wire.Check(b); err != nil {
		return err
	}
	if b[0]&0xf0 == 0x80 || b[0] == 0xde || b[0] == 0xdf { // a map
		return msgpack.Unmarshal(b, v)
	}
	c := codecs.Get().(*codec)
	defer codecs.Put(c)
	c.rd.Reset(b)
	c.arena = nil
	err := decode(c)
	c.arena = nil
	if err == nil && c.rd.Len() != 0 {
		err = fmt.Errorf("%d bytes after the value", c.rd.Len())
	}
	return err
}

// name reads an address, interned.
func (c *codec) name() (string, error) {
	n, err := c.dec.DecodeBytesLen()
	if err != nil || n <= 0 {
		return "", err
	}
	if n > c.rd.Len() {
		return "", fmt.Errorf("string of %d bytes, %d left", n, c.rd.Len())
	}
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	b := c.scratch[:n]
	if err := c.dec.ReadFull(b); err != nil {
		return "", err
	}
	if s, ok := c.names[string(b)]; ok {
		return s, nil
	}
	if c.names == nil || len(c.names) >= maxNames {
		c.names = make(map[string]string)
	}
	s := string(b)
	c.names[s] = s
	return s, nil
}

func (c *codec) decodeMessage(m *Message) error {
	dec := c.dec
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n < 3 {
		return fmt.Errorf("message of %d elements", n)
	}
	v, err := dec.DecodeUint64()
	if err != nil {
		return err
	}
	if v != wireVersion {
		return fmt.Errorf("wire version %d, this build speaks %d", v, wireVersion)
	}
	k, err := dec.DecodeUint8()
	if err != nil {
		return err
	}
	m.Kind = Kind(k)
	p, err := dec.DecodeUint32()
	if err != nil {
		return err
	}
	if p&^fieldsKnown != 0 {
		return fmt.Errorf("unknown fields %#x", p&^fieldsKnown)
	}
	if n != 3+bits.OnesCount32(p) {
		return fmt.Errorf("message of %d elements with %d fields", n, bits.OnesCount32(p))
	}
	for f := uint32(1); f <= p && err == nil; f <<= 1 {
		if p&f == 0 {
			continue
		}
		switch f {
		case fFrom:
			m.From, err = c.name()
		case fBallot:
			err = c.decodeBallot(&m.Ballot)
		case fSlot:
			m.Slot, err = dec.DecodeUint64()
		case fValue:
			err = c.decodeValue(&m.Value)
		case fEntries:
			var n int
			if n, err = c.sliceLen(); n > 0 {
				m.Entries = make([]Entry, n)
			}
			for i := 0; i < n && err == nil; i++ {
				err = c.decodeEntry(&m.Entries[i])
			}
		case fCommand:
			err = c.decodeCommand(&m.Command)
		case fBatch:
			m.Batch, err = c.decodeCommands()
		case fReplies:
			var n int
			if n, err = c.sliceLen(); n > 0 {
				m.Replies = make([]Reply, n)
			}
			for i := 0; i < n && err == nil; i++ {
				err = c.decodeReply(&m.Replies[i])
			}
		case fReply:
			err = c.decodeReply(&m.Reply)
		case fLeader:
			m.Leader, err = c.name()
		case fData:
			m.Data, err = c.bytes()
		case fDurable:
			m.Durable, err = dec.DecodeUint64()
		case fEpoch:
			m.Epoch, err = dec.DecodeUint64()
		case fConfig:
			err = dec.Decode(&m.Config)
		case fGroup:
			err = dec.Decode(&m.Group)
		case fRounds:
			if err = dec.Decode(&m.Rounds); len(m.Rounds) == 0 {
				m.Rounds = nil
			}
		case fUpto:
			m.Upto, err = dec.DecodeUint64()
		case fNote:
			m.Note, err = dec.DecodeString()
		case fRetired:
			err = c.decodeBallot(&m.Retired)
		case fRetiredEpoch:
			m.RetiredEpoch, err = dec.DecodeUint64()
		case fHops:
			m.Hops, err = dec.DecodeUint8()
		case fPending:
			m.Pending, err = dec.DecodeUint32()
		}
	}
	return err
}

func (c *codec) decodeBallot(b *Ballot) error {
	if err := c.arrayLen(2); err != nil {
		return err
	}
	var err error
	if b.Round, err = c.dec.DecodeUint64(); err != nil {
		return err
	}
	b.ID, err = c.dec.DecodeUint32()
	return err
}

func (c *codec) decodeCommand(cmd *Command) error {
	if err := c.arrayLen(5); err != nil {
		return err
	}
	var err error
	if cmd.Client, err = c.dec.DecodeUint64(); err != nil {
		return err
	}
	if cmd.Seq, err = c.dec.DecodeUint64(); err != nil {
		return err
	}
	if cmd.Op, err = c.bytes(); err != nil {
		return err
	}
	if cmd.ReplyTo, err = c.name(); err != nil {
		return err
	}
	cmd.First, err = c.dec.DecodeBool()
	return err
}

func (c *codec) decodeCommands() ([]Command, error) {
	n, err := c.sliceLen()
	if err != nil || n == 0 {
		return nil, err
	}
	cs := make([]Command, n)
	for i := range cs {
		if err := c.decodeCommand(&cs[i]); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

func (c *codec) decodeReply(r *Reply) error {
	if err := c.arrayLen(5); err != nil {
		return err
	}
	var err error
	if r.Client, err = c.dec.DecodeUint64(); err != nil {
		return err
	}
	if r.Seq, err = c.dec.DecodeUint64(); err != nil {
		return err
	}
	if r.Result, err = c.bytes(); err != nil {
		return err
	}
	if r.ReplyTo, err = c.name(); err != nil {
		return err
	}
	r.Err, err = c.dec.DecodeString()
	return err
}

func (c *codec) decodeValue(v *Value) error {
	if err := c.arrayLen(3); err != nil {
		return err
	}
	var err error
	if v.Noop, err = c.dec.DecodeBool(); err != nil {
		return err
	}
	if v.Commands, err = c.decodeCommands(); err != nil {
		return err
	}
	return c.dec.Decode(&v.Config)
}

func (c *codec) decodeEntry(en *Entry) error {
	if err := c.arrayLen(3); err != nil {
		return err
	}
	var err error
	if en.Slot, err = c.dec.DecodeUint64(); err != nil {
		return err
	}
	if err := c.decodeBallot(&en.Ballot); err != nil {
		return err
	}
	return c.decodeValue(&en.Value)
}

// EncodeEntry serializes a vote for an acceptor's durable store, in the
// wire form of an entry.
func EncodeEntry(e *Entry) []byte {
	return encodeWith(func(enc *msgpack.Encoder) error { return encodeEntry(enc, e) })
}

// AppendEntry appends what EncodeEntry returns to dst, without a copy of
// its own: a store that copies the value into a batch reuses dst.
func AppendEntry(dst []byte, e *Entry) []byte {
	out, err := appendWith(dst, func(enc *msgpack.Encoder) error { return encodeEntry(enc, e) })
	if err != nil {
		// Appends to a buffer do not fail, nor do the value types.
		panic(fmt.Sprintf("paxos: encode: %v", err))
	}
	return out
}

// DecodeEntry parses what EncodeEntry wrote, or a vote stored by an
// earlier version (msgpack's keyed struct form).
func DecodeEntry(b []byte) (Entry, error) {
	var e Entry
	if err := decodeWith(b, &e, func(c *codec) error { return c.decodeEntry(&e) }); err != nil {
		return Entry{}, fmt.Errorf("decode paxos entry: %w", err)
	}
	return e, nil
}

// Head is what Peek reads of a message: enough for a load generator to
// answer it without decoding it in full.
type Head struct {
	Kind   Kind
	From   string
	Ballot Ballot
	Slot   uint64
	// Items counts the commands of a batch or the replies of a reply
	// batch.
	Items int
	// LastSeq is the sequence number of a reply batch's last reply.
	LastSeq uint64
	// Refused counts replies with an error (a reply, or those of a reply
	// batch).
	Refused int
}

// Peek reads a message's head and skips the rest, at a fraction of
// Decode's cost: the synthetic peers of `tide bench component` must cost
// the machine far less than the role they flood.
func Peek(frame []byte) (Head, error) {
	var h Head
	c := codecs.Get().(*codec)
	defer codecs.Put(c)
	c.rd.Reset(frame)
	dec := c.dec
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return h, err
	}
	if n < 3 {
		return h, fmt.Errorf("peek: message of %d elements", n)
	}
	if v, err := dec.DecodeUint64(); err != nil || v != wireVersion {
		return h, fmt.Errorf("peek: wire version %d (%v)", v, err)
	}
	k, err := dec.DecodeUint8()
	if err != nil {
		return h, err
	}
	h.Kind = Kind(k)
	p, err := dec.DecodeUint32()
	if err != nil {
		return h, err
	}
	if n != 3+bits.OnesCount32(p) {
		return h, fmt.Errorf("peek: message of %d elements with %d fields", n, bits.OnesCount32(p))
	}
	// peekReply reads a reply's sequence number and whether it has an error.
	peekReply := func() (seq uint64, refused bool, err error) {
		if err = c.arrayLen(5); err != nil {
			return
		}
		if err = dec.Skip(); err != nil {
			return
		}
		if seq, err = dec.DecodeUint64(); err != nil {
			return
		}
		if err = dec.Skip(); err != nil {
			return
		}
		if err = dec.Skip(); err != nil {
			return
		}
		e, err := dec.DecodeString()
		return seq, e != "", err
	}
	for f := uint32(1); f <= p && err == nil; f <<= 1 {
		if p&f == 0 {
			continue
		}
		switch f {
		case fFrom:
			h.From, err = c.name()
		case fBallot:
			err = c.decodeBallot(&h.Ballot)
		case fSlot:
			h.Slot, err = dec.DecodeUint64()
		case fBatch:
			var n int
			if n, err = c.sliceLen(); err == nil {
				h.Items = n
				for i := 0; i < n && err == nil; i++ {
					err = dec.Skip()
				}
			}
		case fReplies:
			var n int
			n, err = c.sliceLen()
			for i := 0; i < n && err == nil; i++ {
				var refused bool
				if h.LastSeq, refused, err = peekReply(); refused {
					h.Refused++
				}
				h.Items++
			}
		case fReply:
			var refused bool
			if _, refused, err = peekReply(); refused {
				h.Refused++
			}
		default:
			err = dec.Skip()
		}
	}
	if err != nil {
		return h, fmt.Errorf("peek: %w", err)
	}
	return h, nil
}

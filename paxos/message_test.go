package paxos

import (
	"bytes"
	"math/bits"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func FuzzDecode(f *testing.F) {
	seeds := []Message{
		{Kind: KindPhase2a, From: "l", To: "p", Ballot: Ballot{3, 1}, Slot: 9, Value: Value{Commands: []Command{{Client: 1, Seq: 2, Op: []byte("x"), ReplyTo: "c"}}}},
		{Kind: KindPhase1b, Entries: []Entry{{Slot: 1, Ballot: Ballot{1, 0}, Value: Value{Noop: true}}}},
		{Kind: KindReplyBatch, Replies: []Reply{{Client: 1, Seq: 1, Result: []byte("ok")}}},
		{Kind: KindRequest, From: "c", Command: Command{Client: 1, Seq: 3, Op: []byte("p"), ReplyTo: "c"}, Pending: 40},
	}
	for _, m := range seeds {
		b, err := Encode(&m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x94, 2, 6, 0x10, 0xdd, 0xff, 0xff, 0xff, 0xf0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		owned, oerr := DecodeOwned(bytes.Clone(b))
		m, err := Decode(b)
		if (err == nil) != (oerr == nil) {
			t.Fatalf("Decode says %v, DecodeOwned %v", err, oerr)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(normalize(m), normalize(owned)) {
			t.Fatalf("Decode and DecodeOwned differ:\n%+v\n%+v", m, owned)
		}
		// Whatever decodes must survive a round trip unchanged.
		b2, err := Encode(&m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := Decode(b2)
		if err != nil {
			t.Fatalf("decode of re-encoded message: %v", err)
		}
		if !reflect.DeepEqual(normalize(m), normalize(m2)) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
		}
	})
}

// normalize maps empty slices to nil, which msgpack does not distinguish.
func normalize(m Message) Message {
	b, _ := Encode(&m)
	out, _ := Decode(b)
	return out
}

func TestDecodeRejectsHugeClaims(t *testing.T) {
	for _, b := range [][]byte{
		{0x94, 2, 6, 0x10, 0xdd, 0xff, 0xff, 0xff, 0xf0, 1},              // entries: array32 of 4G entries
		{0x94, 2, 14, 0xce, 0, 0, 4, 0, 0xc6, 0xff, 0xff, 0xff, 0xf0, 1}, // data: bin32 of 4 GB
		{0x93, 2, 0, 0},                      // unknown kind
		{0x93, 3, 6, 0},                      // a newer wire version
		{0x94, 2, 6, 0xce, 0x80, 0, 0, 0, 1}, // a field this build does not know
		{0x93, 2, 6, 1},                      // a field announced and missing
		{0x94, 2, 6, 0, 7},                   // a field sent and not announced
	} {
		if _, err := Decode(b); err == nil {
			t.Errorf("Decode(%x) accepted garbage", b)
		}
	}
}

// FuzzKV feeds arbitrary operations to the state machine, as a client could:
// it must answer every one, never panic, and stay deterministic.
func FuzzKV(f *testing.F) {
	f.Add(EncodeKV(KVOp{Op: "put", Key: "k", Value: []byte("v")}))
	f.Add(EncodeKV(KVOp{Op: "cas", Key: "k", Expect: []byte("v"), Value: []byte("w")}))
	f.Add([]byte{0x81, 0xa1, 'v', 0xc6, 0xff, 0xff, 0xff, 0xf0})
	f.Fuzz(func(t *testing.T, op []byte) {
		a, b := NewKV(), NewKV()
		ra, rb := a.Apply(op), b.Apply(op)
		if string(ra) != string(rb) {
			t.Fatalf("two replicas disagree on %x", op)
		}
		if _, err := DecodeKVResult(ra); err != nil {
			t.Fatalf("result does not decode: %v", err)
		}
		a.Read(op)
		if err := b.Restore(a.Snapshot()); err != nil {
			t.Fatalf("snapshot does not restore: %v", err)
		}
		b.Restore(op) // garbage as a snapshot: an error, not a crash
	})
}

// Every field of a message survives the wire, To excepted (the transport's
// destination, not sent).
func TestEncodeRoundTrip(t *testing.T) {
	cfg := &Config{Epoch: 3, Leaders: []string{"l1"}, ProxyLeaders: []string{"p"}, Groups: []Group{{Acceptors: []string{"a", "b", "c"}}}, Replicas: []string{"r"}}
	cmd := Command{Client: 7, Seq: 9, Op: []byte("put k v"), ReplyTo: "c:1", First: true}
	rep := Reply{Client: 7, Seq: 9, Result: []byte("ok"), ReplyTo: "c:1", Err: "forgotten"}
	m := Message{Kind: KindChosen, From: "p:1", Ballot: Ballot{4, 2}, Slot: 1 << 40,
		Value:   Value{Commands: []Command{cmd, {Client: 1}}},
		Entries: []Entry{{Slot: 3, Ballot: Ballot{1, 1}, Value: Value{Noop: true}}, {Slot: 4, Value: Value{Config: cfg}}},
		Command: cmd, Batch: []Command{cmd}, Replies: []Reply{rep, {Seq: 1}}, Reply: rep, Leader: "l1", Data: []byte{0, 1, 2},
		Durable: 5, Epoch: 6, Config: cfg, Group: &Group{Acceptors: []string{"a"}, Rows: 1, Cols: 1},
		Rounds: []RoundConfig{{Ballot: Ballot{2, 1}, Epoch: 1, Groups: cfg.Groups}}, Upto: 8, Note: "why",
		Retired: Ballot{1, 0}, RetiredEpoch: 2, Hops: 2, Pending: 70000}
	b, err := Encode(&m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip changed the message:\n got %+v\nwant %+v", got, m)
	}
	m.To = "somewhere"
	b2, _ := Encode(&m)
	if string(b2) != string(b) {
		t.Fatal("To changed the encoding: a fan-out could not share one")
	}
	if present(&m) != fieldsKnown {
		t.Fatalf("the test leaves fields empty: present %#x, known %#x", present(&m), fieldsKnown)
	}
	// A field added to Message needs a bit and a case in the codec.
	if n, known := reflect.TypeOf(m).NumField(), bits.OnesCount32(fieldsKnown)+4; n != known {
		t.Fatalf("Message has %d fields, the codec knows %d (with Kind, and To, SameAsPrevious and Unsynced, which are not sent)", n, known)
	}
}

// AppendEncode writes the bytes Encode does, after what dst holds, and
// leaves that untouched: frames cut from one buffer each decode to their
// own message, also after the buffer grew between them.
func TestAppendEncode(t *testing.T) {
	msgs := []Message{
		{Kind: KindPhase2a, From: "l", Ballot: Ballot{3, 1}, Slot: 9, Value: Value{Commands: []Command{{Client: 1, Seq: 2, Op: make([]byte, 300), ReplyTo: "c"}}}},
		{Kind: KindPhase2b, From: "a", Ballot: Ballot{3, 1}, Slot: 9},
		{Kind: KindReplyBatch, Replies: []Reply{{Client: 1, Seq: 1, Result: []byte("ok")}}},
	}
	buf := make([]byte, 1, 8) // one byte already there; too small for any frame
	buf[0] = 0xaa
	var frames [][]byte
	for i := range msgs {
		start := len(buf)
		var err error
		if buf, err = AppendEncode(buf, &msgs[i]); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, buf[start:len(buf):len(buf)])
	}
	if buf[0] != 0xaa {
		t.Fatalf("AppendEncode changed what dst held: %#x", buf[0])
	}
	for i, f := range frames {
		want, err := Encode(&msgs[i])
		if err != nil {
			t.Fatal(err)
		}
		if string(f) != string(want) {
			t.Fatalf("frame %d: %x, Encode gives %x", i, f, want)
		}
		got, err := Decode(f)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !reflect.DeepEqual(normalize(got), normalize(msgs[i])) {
			t.Fatalf("frame %d decodes to %+v, want %+v", i, got, msgs[i])
		}
	}
}

// Votes stored by an earlier version (msgpack's keyed struct form) still
// load, and new ones round-trip.
func TestDecodeEntryBothForms(t *testing.T) {
	e := Entry{Slot: 9, Ballot: Ballot{2, 1}, Value: Value{Commands: []Command{{Client: 1, Seq: 2, Op: []byte("put k v"), ReplyTo: "c:1"}}}}
	legacy, err := msgpack.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"legacy": legacy, "current": EncodeEntry(&e)} {
		got, err := DecodeEntry(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("%s: got %+v, want %+v", name, got, e)
		}
	}
	for _, b := range [][]byte{nil, {0x93, 1}, {0x93, 1, 0x92, 1, 1, 0x93, 0xc2, 0x90, 0xc0, 7}} {
		if _, err := DecodeEntry(b); err == nil {
			t.Errorf("DecodeEntry(%x) accepted garbage", b)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	e := Entry{Slot: 9, Ballot: Ballot{2, 1}, Value: Value{Commands: []Command{{Client: 1, Op: []byte("x")}}}}
	legacy, _ := msgpack.Marshal(&e)
	f.Add(legacy)
	f.Add(EncodeEntry(&e))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeEntry(b)
		if err != nil {
			return
		}
		again, err := DecodeEntry(EncodeEntry(&got))
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalizeEntry(got), normalizeEntry(again)) {
			t.Fatalf("round trip changed the entry:\n%+v\n%+v", got, again)
		}
	})
}

func normalizeEntry(e Entry) Entry {
	out, _ := DecodeEntry(EncodeEntry(&e))
	return out
}

// Every result a KV gives decodes to what it says, the four plain ones
// (told apart by their bytes alone) as well as those with a value.
func TestKVResultsRoundTrip(t *testing.T) {
	kv := NewKV()
	steps := []struct {
		op   KVOp
		want KVResult
	}{
		{KVOp{Op: "put", Key: "k", Value: []byte("v")}, KVResult{OK: true}},
		{KVOp{Op: "put", Key: "k", Value: []byte("w")}, KVResult{OK: true, Found: true}},
		{KVOp{Op: "get", Key: "k"}, KVResult{OK: true, Found: true, Value: []byte("w")}},
		{KVOp{Op: "del", Key: "k"}, KVResult{OK: true, Found: true}},
		{KVOp{Op: "del", Key: "k"}, KVResult{}},
		{KVOp{Op: "cas", Key: "k", Value: []byte("x")}, KVResult{OK: true}},
		{KVOp{Op: "cas", Key: "k", Expect: []byte("y"), Value: []byte("z")}, KVResult{Found: true, Value: []byte("x")}},
		{KVOp{Op: "nope", Key: "k"}, KVResult{Err: `unknown operation "nope"`}},
	}
	for _, s := range steps {
		got, err := DecodeKVResult(kv.Apply(EncodeKV(s.op)))
		if err != nil {
			t.Fatalf("%+v: %v", s.op, err)
		}
		if got.OK != s.want.OK || got.Found != s.want.Found || string(got.Value) != string(s.want.Value) || got.Err != s.want.Err {
			t.Errorf("%+v: got %+v, want %+v", s.op, got, s.want)
		}
	}
}

// DecodeOwned slices a frame's byte strings out of it instead of copying
// them, and decodes what Decode does.
func TestDecodeOwnedAliasesFrame(t *testing.T) {
	m := Message{Kind: KindPhase2a, From: "l", Ballot: Ballot{3, 1}, Slot: 9,
		Value: Value{Commands: []Command{{Client: 1, Seq: 2, Op: []byte("first"), ReplyTo: "c"}, {Client: 2, Seq: 1, Op: []byte("second"), ReplyTo: "c"}}}}
	b, err := Encode(&m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeOwned(b)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Decode(bytes.Clone(b))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeOwned gave %+v, Decode %+v", got, want)
	}
	i := bytes.Index(b, []byte("second"))
	b[i] = 'S'
	if string(got.Value.Commands[1].Op) != "Second" || string(want.Value.Commands[1].Op) != "second" {
		t.Fatalf("after a change to the frame: owned op %q, copied op %q", got.Value.Commands[1].Op, want.Value.Commands[1].Op)
	}
	if cap(got.Value.Commands[0].Op) != len("first") {
		t.Fatalf("an owned op's capacity is %d: an append would write over the next field", cap(got.Value.Commands[0].Op))
	}
}

// FuzzKVParse holds the replicas' fast parse of an operation to the
// general decoder: whatever parseKV accepts, decodeOp decodes to the same
// fields, so a replica's state and answers do not depend on which ran.
func FuzzKVParse(f *testing.F) {
	for _, op := range []KVOp{{Op: "put", Key: "k", Value: []byte("v")}, {Op: "put", Key: "", Value: []byte{}},
		{Op: "cas", Key: "k", Expect: []byte("v"), Value: []byte("w")}, {Op: "cas", Key: "k", Expect: []byte{}},
		{Op: "get", Key: string(make([]byte, 300))}, {Op: "del", Key: "k"}, {Op: "put", Key: "k", Value: make([]byte, 70000)}} {
		f.Add(EncodeKV(op))
	}
	f.Add([]byte{0x94, 0xc4, 3, 'p', 'u', 't', 0xa1, 'k', 0xc4, 0, 0xc0})
	f.Add([]byte{0x94, 0xa3, 'p', 'u', 't', 0xa1, 'k', 0xc0, 0xc0, 0x00})
	f.Fuzz(func(t *testing.T, op []byte) {
		fast, ok := parseKV(op)
		if !ok {
			return
		}
		var o KVOp
		if err := decodeOp(op, &o); err != nil {
			t.Fatalf("% x: parsed as %q, the decoder refuses it: %v", op, fast, err)
		}
		same := func(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }
		if string(fast.op) != o.Op || string(fast.key) != o.Key || !same(fast.value, o.Value) || !same(fast.expect, o.Expect) {
			t.Fatalf("% x: parsed as %q, decoded as %+v", op, fast, o)
		}
	})
}

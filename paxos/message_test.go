package paxos

import (
	"reflect"
	"testing"
)

func FuzzDecode(f *testing.F) {
	seeds := []Message{
		{Kind: KindPhase2a, From: "l", To: "p", Ballot: Ballot{3, 1}, Slot: 9, Value: Value{Commands: []Command{{Client: 1, Seq: 2, Op: []byte("x"), ReplyTo: "c"}}}},
		{Kind: KindPhase1b, Entries: []Entry{{Slot: 1, Ballot: Ballot{1, 0}, Value: Value{Noop: true}}}},
		{Kind: KindReplyBatch, Replies: []Reply{{Client: 1, Seq: 1, Result: []byte("ok")}}},
	}
	for _, m := range seeds {
		b, err := Encode(&m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x81, 0xa1, 'e', 0xdd, 0xff, 0xff, 0xff, 0xf0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
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
	var out Message
	_ = decodeRaw(b, &out)
	return out
}

func TestDecodeRejectsHugeClaims(t *testing.T) {
	for _, b := range [][]byte{
		{0x81, 0xa1, 'e', 0xdd, 0xff, 0xff, 0xff, 0xf0, 1}, // array32 of 4G entries
		{0x81, 0xa1, 'd', 0xc6, 0xff, 0xff, 0xff, 0xf0, 1}, // bin32 of 4 GB
		{0x81, 0xa1, 'k', 0x00},                            // unknown kind
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

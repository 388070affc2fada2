package bench

import (
	"reflect"
	"testing"

	"tide/paxos"
)

// A filled stamp decodes to the message encoded with the values in place
// of the placeholders.
func TestStampFill(t *testing.T) {
	msg := paxos.Message{Kind: paxos.KindChosen, From: "127.0.0.1:1", To: "127.0.0.1:2", Slot: marker(4)}
	for i := range 2 {
		msg.Value.Commands = append(msg.Value.Commands, paxos.Command{Client: marker(2 * i), Seq: marker(2*i + 1), ReplyTo: "c",
			Op: paxos.EncodeKV(paxos.KVOp{Op: "put", Key: markerKey(5 + i), Value: componentValue})})
	}
	s, err := newStamp(&msg, 7)
	if err != nil {
		t.Fatal(err)
	}
	got, err := paxos.Decode(s.fill(7, 8, 9, 1<<40, 12345, 0xabc, 42))
	if err != nil {
		t.Fatal(err)
	}
	want := msg
	want.To = "" // not sent
	want.Slot = 12345
	want.Value.Commands = []paxos.Command{
		{Client: 7, Seq: 8, ReplyTo: "c", Op: paxos.EncodeKV(paxos.KVOp{Op: "put", Key: "0000000000000abc", Value: componentValue})},
		{Client: 9, Seq: 1 << 40, ReplyTo: "c", Op: paxos.EncodeKV(paxos.KVOp{Op: "put", Key: "000000000000002a", Value: componentValue})},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("filled stamp decodes to\n%+v\nwant\n%+v", got, want)
	}
	if _, err := newStamp(&msg, 8); err == nil {
		t.Fatal("a stamp with a placeholder missing from the message was built")
	}
}

// peek reads what a full decode reads, for every message a synthetic peer
// looks at.
func TestPeek(t *testing.T) {
	refused := paxos.EncodeKV(paxos.KVOp{Op: "get", Key: "k"}) // any bytes
	msgs := []paxos.Message{
		{Kind: paxos.KindPhase2b, From: "a", Ballot: paxos.Ballot{Round: 3, ID: 2}, Slot: 77},
		{Kind: paxos.KindChosen, From: "p", Slot: 1 << 33, Value: batchValue(3, "c")},
		{Kind: paxos.KindBatch, From: "b", Batch: batchValue(5, "c").Commands},
		{Kind: paxos.KindReplyBatch, From: "r", Replies: []paxos.Reply{{Seq: 4, Result: refused}, {Seq: 9, Err: "no"}}},
		{Kind: paxos.KindReply, From: "u", Reply: paxos.Reply{Seq: 4, Err: "session expired"}},
		{Kind: paxos.KindNack, From: "a", Ballot: paxos.Ballot{Round: 9}},
	}
	for _, m := range msgs {
		t.Run(m.Kind.String(), func(t *testing.T) {
			b, err := paxos.Encode(&m)
			if err != nil {
				t.Fatal(err)
			}
			h, err := peek(b)
			if err != nil {
				t.Fatal(err)
			}
			want := head{Kind: m.Kind, From: m.From, Ballot: m.Ballot, Slot: m.Slot, Items: len(m.Batch) + len(m.Replies)}
			for _, r := range m.Replies {
				want.LastSeq = r.Seq
				if r.Err != "" {
					want.Refused++
				}
			}
			if m.Reply.Err != "" {
				want.Refused++
			}
			if h != want {
				t.Fatalf("peek: %+v, want %+v", h, want)
			}
		})
	}
	if _, err := peek([]byte{0x94, 2, 7}); err == nil {
		t.Fatal("peek read a truncated message")
	}
}

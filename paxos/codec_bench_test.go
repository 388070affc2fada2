package paxos

import "testing"

func benchMessage() Message {
	cmds := make([]Command, 40)
	for i := range cmds {
		cmds[i] = Command{Client: uint64(i), Seq: uint64(i), Op: []byte("put c1-12 0123456789abcdef"), ReplyTo: "127.0.0.1:40000"}
	}
	return Message{Kind: KindPhase2a, From: "127.0.0.1:41000", To: "127.0.0.1:42000", Ballot: Ballot{3, 1}, Slot: 12345, Value: Value{Commands: cmds}, Epoch: 2}
}

// The cost of the wire encoding of a phase 2a carrying a batch of 40 puts,
// the message most of a batched log's traffic is.
func BenchmarkEncodePhase2a(b *testing.B) {
	m := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(&m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePhase2a(b *testing.B) {
	m := benchMessage()
	buf, _ := Encode(&m)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePhase2b(b *testing.B) {
	m := Message{Kind: KindPhase2b, From: "127.0.0.1:41000", To: "127.0.0.1:42000", Ballot: Ballot{3, 1}, Slot: 12345, Epoch: 2}
	buf, _ := Encode(&m)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}

package paxos

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func benchMessage() Message {
	cmds := make([]Command, 40)
	for i := range cmds {
		cmds[i] = Command{Client: uint64(i), Seq: uint64(i), Op: []byte("put c1-12 0123456789abcdef"), ReplyTo: "127.0.0.1:40000"}
	}
	return Message{Kind: KindPhase2a, From: "127.0.0.1:41000", To: "127.0.0.1:42000", Ballot: Ballot{3, 1}, Slot: 12345, Value: Value{Commands: cmds}, Epoch: 2}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs f b.N times and also reports CPU time per operation, which a
// busy machine inflates less than wall time.
func loop(b *testing.B, f func()) {
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		f()
	}
	b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// The cost of the wire encoding of a phase 2a carrying a batch of 40 puts,
// the message most of a batched log's traffic is.
func BenchmarkEncodePhase2a(b *testing.B) {
	m := benchMessage()
	loop(b, func() {
		if _, err := Encode(&m); err != nil {
			b.Fatal(err)
		}
	})
}

// The same, appended to a buffer shared by a round of 8 messages, as a
// role's runner encodes (one allocation a round, no copy).
func BenchmarkAppendEncodePhase2a(b *testing.B) {
	m := benchMessage()
	one, _ := Encode(&m)
	var arena []byte
	i := 0
	loop(b, func() {
		if i%8 == 0 {
			arena = make([]byte, 0, 8*len(one))
		}
		i++
		var err error
		if arena, err = AppendEncode(arena, &m); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkDecodePhase2a(b *testing.B) {
	m := benchMessage()
	buf, _ := Encode(&m)
	b.SetBytes(int64(len(buf)))
	loop(b, func() {
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkDecodeOwnedPhase2a is BenchmarkDecodePhase2a for a frame the
// decoder may keep (a role process's, whose transport hands frames over):
// ops are sliced out of it, not copied.
func BenchmarkDecodeOwnedPhase2a(b *testing.B) {
	m := benchMessage()
	buf, _ := Encode(&m)
	b.SetBytes(int64(len(buf)))
	loop(b, func() {
		if _, err := DecodeOwned(buf); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkDecodePhase2b(b *testing.B) {
	m := Message{Kind: KindPhase2b, From: "127.0.0.1:41000", To: "127.0.0.1:42000", Ballot: Ballot{3, 1}, Slot: 12345, Epoch: 2}
	buf, _ := Encode(&m)
	loop(b, func() {
		if _, err := Decode(buf); err != nil {
			b.Fatal(err)
		}
	})
}

// The same phase 2a through msgpack's reflection (keyed struct fields), the
// wire form before the hand-written codec: the baseline of the two above.
func BenchmarkReflectEncodePhase2a(b *testing.B) {
	m := benchMessage()
	loop(b, func() {
		if _, err := msgpack.Marshal(&m); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkReflectDecodePhase2a(b *testing.B) {
	m := benchMessage()
	buf, _ := msgpack.Marshal(&m)
	b.SetBytes(int64(len(buf)))
	loop(b, func() {
		var out Message
		if err := msgpack.Unmarshal(buf, &out); err != nil {
			b.Fatal(err)
		}
	})
}

// A replica applying one put, operation decode and result encode included.
func BenchmarkKVApplyPut(b *testing.B) {
	kv := NewKV()
	op := EncodeKV(KVOp{Op: "put", Key: "c1-12", Value: []byte("0123456789abcdef")})
	loop(b, func() { kv.Apply(op) })
}

// BenchmarkKVApplyPutMany overwrites 100,000 keys in turn, as tide bench
// log's 100 clients do with 1,000 keys each: a map far larger than the
// caches.
func BenchmarkKVApplyPutMany(b *testing.B) {
	kv := NewKV()
	ops := make([][]byte, 100_000)
	for i := range ops {
		ops[i] = EncodeKV(KVOp{Op: "put", Key: fmt.Sprintf("c%d-%d", i%100, i/100), Value: []byte("0123456789abcdef")})
		kv.Apply(ops[i])
	}
	i := 0
	loop(b, func() {
		kv.Apply(ops[i])
		if i++; i == len(ops) {
			i = 0
		}
	})
}

func BenchmarkReflectKVApplyPut(b *testing.B) {
	kv := NewKV()
	op, _ := msgpack.Marshal(&KVOp{Op: "put", Key: "c1-12", Value: []byte("0123456789abcdef")})
	loop(b, func() { kv.Apply(op) })
}

package kv

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// messagesEqual compares two messages field by field; a nil and an empty
// byte slice are the same.
func messagesEqual(a, b Message) bool {
	if a.Kind != b.Kind || a.From != b.From || a.To != b.To || a.ID != b.ID || !recordsEqual(a.Rec, b.Rec) ||
		a.Found != b.Found || a.Err != b.Err || a.W != b.W || a.Lo != b.Lo || a.Hi != b.Hi || a.Buckets != b.Buckets || a.Horizon != b.Horizon || a.Ballot != b.Ballot ||
		!slices.Equal(a.Hashes, b.Hashes) || len(a.Versions) != len(b.Versions) || len(a.Records) != len(b.Records) || len(a.Keys) != len(b.Keys) {
		return false
	}
	for i := range a.Versions {
		x, y := a.Versions[i], b.Versions[i]
		if !bytes.Equal(x.Key, y.Key) || x.Version != y.Version || x.Tomb != y.Tomb {
			return false
		}
	}
	for i := range a.Records {
		if !recordsEqual(a.Records[i], b.Records[i]) {
			return false
		}
	}
	for i := range a.Keys {
		if !bytes.Equal(a.Keys[i], b.Keys[i]) {
			return false
		}
	}
	return true
}

func randBytes(r *rand.Rand, max int) []byte {
	if r.IntN(8) == 0 {
		return nil
	}
	b := make([]byte, r.IntN(max+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func randMessage(r *rand.Rand) Message {
	sizes := []int{0, 5, 40, 300, 70000}
	size := func() int { return sizes[r.IntN(len(sizes))] }
	m := Message{Kind: Kind(1 + r.IntN(int(kindCount)-1)), From: string(randBytes(r, 40)), To: string(randBytes(r, 300)),
		ID: r.Uint64() >> r.IntN(64), Found: r.IntN(2) == 0, Err: string(randBytes(r, 20)),
		W: r.IntN(300) - 150, Lo: r.Uint32(), Hi: r.Uint32() >> r.IntN(32), Buckets: r.IntN(70000) - 10,
		Horizon: r.Uint64() >> r.IntN(64), Ballot: r.Uint64() >> r.IntN(64)}
	m.Rec = Record{Key: randBytes(r, size()), Value: randBytes(r, size()), Version: r.Uint64() >> r.IntN(64), Tomb: r.IntN(2) == 0}
	if r.IntN(2) == 0 {
		m.Rec.Expire = r.Uint64() >> r.IntN(64)
	}
	if r.IntN(2) == 0 {
		for range r.IntN(20) {
			m.Hashes = append(m.Hashes, r.Uint64()>>r.IntN(64))
		}
		for range r.IntN(20) {
			m.Versions = append(m.Versions, KeyVersion{Key: randBytes(r, 30), Version: r.Uint64() >> r.IntN(64), Tomb: r.IntN(2) == 0})
		}
		for range r.IntN(20) {
			m.Records = append(m.Records, Record{Key: randBytes(r, 30), Value: randBytes(r, size()), Version: r.Uint64(), Tomb: r.IntN(2) == 0, Expire: r.Uint64() >> r.IntN(65)})
		}
		for range r.IntN(20) {
			m.Keys = append(m.Keys, randBytes(r, 30))
		}
	}
	return m
}

// The hand-written message codec and the reflective one read each other's
// bytes, and messageSize bounds the encoding.
func TestMessageCodecMatchesMsgpack(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		m := randMessage(r)
		mine, _ := Encode(&m)
		if len(mine) > messageSize(&m) {
			t.Fatalf("message %d: %d bytes, messageSize said %d", i, len(mine), messageSize(&m))
		}
		var viaLib Message
		if err := msgpack.Unmarshal(mine, &viaLib); err != nil {
			t.Fatalf("message %d: msgpack cannot read AppendMessage's bytes: %v", i, err)
		}
		if !messagesEqual(viaLib, m) {
			t.Fatalf("message %d: msgpack read\n%+v\nwrote\n%+v", i, viaLib, m)
		}
		lib, err := msgpack.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(lib)
		if err != nil {
			t.Fatalf("message %d: Decode(msgpack bytes): %v", i, err)
		}
		if !messagesEqual(got, m) {
			t.Fatalf("message %d: Decode read\n%+v\nwant\n%+v", i, got, m)
		}
		// Decode copies: the frame buffer may be reused at once.
		clear(lib)
		if !messagesEqual(got, m) {
			t.Fatalf("message %d: decoded message shares the frame's memory", i)
		}
	}
}

func TestDecodeMessageRejectsTruncationAndTrailingBytes(t *testing.T) {
	m := Message{Kind: KindPush, From: "a", To: "b", ID: 7, Records: []Record{{Key: []byte("k"), Value: []byte("v"), Version: 3}}, Keys: [][]byte{[]byte("x")}}
	b, _ := Encode(&m)
	for i := range len(b) {
		if _, err := Decode(b[:i]); err == nil {
			t.Fatalf("a message cut to %d of %d bytes decoded", i, len(b))
		}
	}
	if _, err := Decode(append(b, 0)); err == nil {
		t.Fatal("a message with a trailing byte decoded")
	}
	// An array header that claims more elements than there are bytes.
	huge := append([]byte{0x9f, 0x0d, 0xa0, 0xa0, 0x00, 0xc0, 0xc2, 0xa0, 0x00, 0x00, 0x00, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff}, 0x00)
	if _, err := Decode(huge); err == nil {
		t.Fatal("a 4-billion-element array decoded")
	}
}

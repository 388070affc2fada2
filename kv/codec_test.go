package kv

import (
	"bytes"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func recordsEqual(a, b Record) bool {
	return bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value) && a.Version == b.Version && a.Tomb == b.Tomb && a.Expire == b.Expire
}

// The hand-written codec and the reflective one read each other's bytes.
func TestRecordCodecMatchesMsgpack(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 70000)
	for _, r := range []Record{
		{Key: []byte("k"), Value: []byte("v"), Version: 1},
		{Key: []byte("k"), Version: 1 << 40, Tomb: true},
		{Key: []byte("\xff\x00non-utf8"), Value: big, Version: 12345},
		{Key: bytes.Repeat([]byte("k"), 300), Value: []byte{}, Version: 0},
		{Key: []byte("ttl"), Value: []byte("v"), Version: 9, Expire: 1 << 62},
		{Key: []byte("ttl"), Version: 9, Tomb: true, Expire: 5},
	} {
		mine := AppendRecord(nil, &r)
		var viaLib Record
		if err := msgpack.Unmarshal(mine, &viaLib); err != nil {
			t.Fatalf("msgpack cannot read AppendRecord's bytes: %v", err)
		}
		if !recordsEqual(viaLib, r) {
			t.Fatalf("msgpack read %+v, wrote %+v", viaLib, r)
		}
		lib, err := msgpack.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		for _, alias := range []bool{false, true} {
			got, err := DecodeRecord(lib, alias)
			if err != nil {
				t.Fatalf("DecodeRecord(msgpack bytes): %v", err)
			}
			if !recordsEqual(got, r) {
				t.Fatalf("DecodeRecord read %+v, want %+v", got, r)
			}
		}
	}
}

func TestDecodeRecordRejectsTruncation(t *testing.T) {
	b := AppendRecord(nil, &Record{Key: []byte("key"), Value: []byte("value"), Version: 7})
	for i := range len(b) {
		if _, err := DecodeRecord(b[:i], false); err == nil {
			t.Fatalf("a record cut to %d of %d bytes decoded", i, len(b))
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(AppendRecord(nil, &Record{Key: []byte("k"), Value: []byte("v"), Version: 3, Tomb: true}))
	f.Add([]byte{0x94, 0xc6, 0xff, 0xff, 0xff, 0xff})
	f.Add(AppendRecord(nil, &Record{Key: []byte("k"), Value: []byte("v"), Version: 3, Expire: 77}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b, false)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		again, err := DecodeRecord(AppendRecord(nil, &r), true)
		if err != nil || !recordsEqual(again, r) {
			t.Fatalf("round trip of %+v: %+v, %v", r, again, err)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range []Message{
		{Kind: KindPut, From: "a", To: "b", ID: 9, Rec: Record{Key: []byte("k"), Value: []byte("v"), Version: 5}},
		{Kind: KindPush, From: "a", To: "b", Records: []Record{{Key: []byte("k"), Version: 1, Tomb: true}}},
		{Kind: KindKeysResp, From: "a", To: "b", Lo: 1, Hi: 9, Versions: []KeyVersion{{Key: []byte("k"), Version: 2}}},
		{Kind: KindPullRange, From: "a", To: "b", Lo: 7, Hi: 3},
	} {
		b, err := Encode(&m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		// What decodes re-encodes and decodes again to the same kind and records.
		b2, err := Encode(&m)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		m2, err := Decode(b2)
		if err != nil || !messagesEqual(m, m2) {
			t.Fatalf("round trip: %+v / %+v, %v", m, m2, err)
		}
	})
}

func TestStubRoundTrip(t *testing.T) {
	for _, x := range []uint64{0, 1 << 50} {
		testStubRoundTrip(t, x)
	}
}

func testStubRoundTrip(t *testing.T, expire uint64) {
	r := Record{Key: []byte("key"), Value: bytes.Repeat([]byte("x"), 70000), Version: 1 << 40, Expire: expire}
	stub := AppendStub(nil, &r)
	got, n, sep, err := DecodeStored(stub, false)
	if err != nil || !sep || n != len(r.Value) || string(got.Key) != "key" || got.Version != r.Version || got.Value != nil || got.Expire != expire {
		t.Fatalf("stub decoded to %+v, %d, %v, %v", got, n, sep, err)
	}
	if _, err := DecodeRecord(stub, false); err == nil {
		t.Fatal("DecodeRecord took a stub: a message must carry its values")
	}
	got, _, sep, err = DecodeStored(AppendRecord(nil, &r), true)
	if err != nil || sep || !recordsEqual(got, r) {
		t.Fatalf("whole record decoded to %v, %v", sep, err)
	}
	for i := range stub {
		if _, _, _, err := DecodeStored(stub[:i], false); err == nil {
			t.Fatalf("a stub cut to %d of %d bytes decoded", i, len(stub))
		}
	}
}

func FuzzDecodeStored(f *testing.F) {
	f.Add(AppendStub(nil, &Record{Key: []byte("k"), Value: []byte("value"), Version: 3}))
	f.Add(AppendRecord(nil, &Record{Key: []byte("k"), Value: []byte("v"), Version: 3, Tomb: true}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, sep, err := DecodeStored(b, false)
		if err != nil {
			return
		}
		if !sep {
			again, _, _, err := DecodeStored(AppendRecord(nil, &r), true)
			if err != nil || !recordsEqual(again, r) {
				t.Fatalf("round trip of %+v: %+v, %v", r, again, err)
			}
			return
		}
		r.Value = make([]byte, n)
		again, m, sep, err := DecodeStored(AppendStub(nil, &r), true)
		if err != nil || !sep || m != n || string(again.Key) != string(r.Key) || again.Version != r.Version || again.Tomb != r.Tomb {
			t.Fatalf("stub round trip of %+v (%d): %+v %d %v", r, n, again, m, err)
		}
	})
}

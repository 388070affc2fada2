package paxos

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"tide/wire"
)

// KVOp is a command of the replicated key-value state machine.
type KVOp struct {
	Op     string `msgpack:"o"` // get, put, del, cas
	Key    string `msgpack:"k"`
	Value  []byte `msgpack:"v,omitempty"`
	Expect []byte `msgpack:"e,omitempty"` // cas: the value required now (nil: key absent)
}

// KVResult is the outcome of a KVOp.
type KVResult struct {
	OK    bool   `msgpack:"ok"` // put/del/cas took effect
	Found bool   `msgpack:"f"`  // the key existed before the operation
	Value []byte `msgpack:"v"`  // get: the value; cas: the value before
	Err   string `msgpack:"e,omitempty"`
}

// An operation and a result are msgpack arrays, written and read field by
// field: [op, key, value, expect] and [ok, found, value, err], a nil byte
// string as nil (cas tells "expect the key absent" from "expect it
// empty"). Decoders also take the keyed struct form of earlier versions,
// which old log entries and sessions' saved results hold.

// EncodeKV encodes an operation.
func EncodeKV(op KVOp) []byte {
	return encodeWith(func(enc *msgpack.Encoder) error {
		var e errs
		e.do(enc.EncodeArrayLen(4))
		e.do(enc.EncodeString(op.Op))
		e.do(enc.EncodeString(op.Key))
		e.do(enc.EncodeBytes(op.Value))
		e.do(enc.EncodeBytes(op.Expect))
		return e.err
	})
}

// DecodeKVResult decodes a result.
func DecodeKVResult(b []byte) (KVResult, error) {
	// Most results are a put's or a delete's, one of four encodings: a
	// client tells them by their bytes, without a decode.
	for i, row := range plainResults {
		for j, plain := range row {
			if bytes.Equal(b, plain) {
				return KVResult{OK: i == 1, Found: j == 1}, nil
			}
		}
	}
	var r KVResult
	err := decodeWith(b, &r, func(c *codec) error {
		if err := c.arrayLen(4); err != nil {
			return err
		}
		var err error
		if r.OK, err = c.dec.DecodeBool(); err != nil {
			return err
		}
		if r.Found, err = c.dec.DecodeBool(); err != nil {
			return err
		}
		if r.Value, err = c.nilOrBytes(); err != nil {
			return err
		}
		r.Err, err = c.dec.DecodeString()
		return err
	})
	if err != nil {
		return KVResult{}, fmt.Errorf("decode kv result: %w", err)
	}
	return r, nil
}

// KV is a linearizable key-value map when run by replicas: get, put,
// delete and compare-and-swap.
type KV struct {
	m map[string][]byte
}

// NewKV returns an empty KV.
func NewKV() *KV { return &KV{m: map[string][]byte{}} }

func result(r KVResult) []byte {
	return encodeWith(func(enc *msgpack.Encoder) error {
		var e errs
		e.do(enc.EncodeArrayLen(4))
		e.do(enc.EncodeBool(r.OK))
		e.do(enc.EncodeBool(r.Found))
		e.do(enc.EncodeBytes(r.Value))
		e.do(enc.EncodeString(r.Err))
		return e.err
	})
}

// plainResults are the results of a put or a delete, which carry no
// value, by OK and Found, encoded once: every replica applies every
// command, so this saves an encoding and an allocation per command on
// each. They are shared, so nothing may write to them (their capacity
// is their length: an append copies).
var plainResults = func() (r [2][2][]byte) {
	for ok := range 2 {
		for found := range 2 {
			b := result(KVResult{OK: ok == 1, Found: found == 1})
			r[ok][found] = b[:len(b):len(b)]
		}
	}
	return r
}()

func plainResult(ok, found bool) []byte {
	var i, j int
	if ok {
		i = 1
	}
	if found {
		j = 1
	}
	return plainResults[i][j]
}

// decodeOp parses a client's operation, bounds first: operations come from
// clients, and a replica must not be made to allocate what a header claims.
func decodeOp(op []byte, o *KVOp) error {
	return decodeWith(op, o, func(c *codec) error {
		if err := c.arrayLen(4); err != nil {
			return err
		}
		var err error
		if o.Op, err = c.dec.DecodeString(); err != nil {
			return err
		}
		if o.Key, err = c.dec.DecodeString(); err != nil {
			return err
		}
		if o.Value, err = c.nilOrBytes(); err != nil {
			return err
		}
		o.Expect, err = c.nilOrBytes()
		return err
	})
}

// kvArgs are an operation's fields as byte strings: value and expect
// are nil where the operation holds nil (cas: expect the key absent).
type kvArgs struct{ op, key, value, expect []byte }

// parseKV slices the fields out of an operation in the array form
// EncodeKV writes, without copying or allocating (a replica applies
// every command of the log). ok is false for any other shape: the
// general decoder, which also takes the keyed form of earlier versions,
// handles it.
func parseKV(op []byte) (a kvArgs, ok bool) {
	if len(op) == 0 || op[0] != 0x94 {
		return a, false
	}
	i := 1
	if a.op, i, ok = wire.Bytes(op, i); !ok {
		return a, false
	}
	if a.key, i, ok = wire.Bytes(op, i); !ok {
		return a, false
	}
	for _, f := range []*[]byte{&a.value, &a.expect} {
		if i < len(op) && op[i] == 0xc0 {
			i++
			continue
		}
		if *f, i, ok = wire.Bytes(op, i); !ok {
			return a, false
		}
		if *f == nil {
			*f = []byte{} // empty, not nil: the decoder tells them apart
		}
	}
	return a, i == len(op)
}

// args parses an operation: in the array form by slicing, otherwise by
// the general decoder.
func args(op []byte) (kvArgs, error) {
	if a, ok := parseKV(op); ok {
		return a, nil
	}
	var o KVOp
	if err := decodeOp(op, &o); err != nil {
		return kvArgs{}, err
	}
	return kvArgs{op: []byte(o.Op), key: []byte(o.Key), value: o.Value, expect: o.Expect}, nil
}

// Apply implements StateMachine.
func (kv *KV) Apply(op []byte) []byte {
	a, err := args(op)
	if err != nil {
		return result(KVResult{Err: "bad operation: " + err.Error()})
	}
	return kv.apply(a)
}

func (kv *KV) apply(a kvArgs) []byte {
	old, found := kv.m[string(a.key)]
	switch string(a.op) {
	case "get":
		return result(KVResult{OK: true, Found: found, Value: old})
	case "put":
		// A copy: the operation is a slice of a message the map must not
		// keep alive. A value the size of the old one overwrites it in
		// place, with no allocation and no second map operation: the map
		// owns its values, and every result and snapshot encodes (copies)
		// what it reads from them.
		if found && len(a.value) > 0 && len(old) == len(a.value) {
			copy(old, a.value)
		} else {
			kv.m[string(a.key)] = bytes.Clone(a.value)
		}
		return plainResult(true, found)
	case "del":
		delete(kv.m, string(a.key))
		return plainResult(found, found)
	case "cas":
		match := (a.expect == nil && !found) || (a.expect != nil && found && string(a.expect) == string(old))
		if match {
			kv.m[string(a.key)] = bytes.Clone(a.value)
		}
		return result(KVResult{OK: match, Found: found, Value: old})
	}
	return result(KVResult{Err: fmt.Sprintf("unknown operation %q", a.op)})
}

// Read implements StateMachine: only get is allowed.
func (kv *KV) Read(op []byte) []byte {
	a, err := args(op)
	if err != nil || string(a.op) != "get" {
		return result(KVResult{Err: "only get can be read outside the log"})
	}
	v, found := kv.m[string(a.key)]
	return result(KVResult{OK: true, Found: found, Value: v})
}

// Snapshot implements StateMachine: a msgpack map of key to value, as
// msgpack.Marshal writes it, but into one buffer of the right size and
// without reflection (a replica snapshots on its loop).
func (kv *KV) Snapshot() []byte {
	n := 5 // the map's header
	for k, v := range kv.m {
		n += 5 + len(k) + 5 + len(v)
	}
	buf := bytes.NewBuffer(make([]byte, 0, n))
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(buf)
	var e errs
	e.do(enc.EncodeMapLen(len(kv.m)))
	for k, v := range kv.m {
		e.do(enc.EncodeString(k))
		e.do(enc.EncodeBytes(v))
	}
	if e.err != nil {
		// Writes to a bytes.Buffer do not fail, nor do strings and bytes.
		panic(fmt.Sprintf("paxos: kv snapshot: %v", e.err))
	}
	return buf.Bytes()
}

// Restore implements StateMachine.
func (kv *KV) Restore(b []byte) error {
	m := map[string][]byte{}
	if err := wire.Check(b); err != nil {
		return fmt.Errorf("restore kv: %w", err)
	}
	if err := msgpack.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("restore kv: %w", err)
	}
	kv.m = m
	return nil
}

// Len returns the number of keys.
func (kv *KV) Len() int { return len(kv.m) }

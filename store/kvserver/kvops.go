package kvserver

import (
	"context"
	"errors"

	"tide/kv"
	"tide/store/status"
)

// OpError is a read-modify-write refused for what it found (a value that
// is not a number, an overflow): a client error, not a failure of the
// store.
type OpError struct{ Msg string }

func (e *OpError) Error() string { return e.Msg }

// Write writes rec (its key, value and expiry deadline; Tomb deletes) with
// write quorum w (0: the default) and returns the version written.
func (k *Server) Write(ctx context.Context, rec kv.Record, w int) (uint64, error) {
	if len(rec.Value) > k.n.cfg.KV.MaxValue {
		return 0, status.Errorf(413, "value of %d bytes is larger than the limit of %d", len(rec.Value), k.n.cfg.KV.MaxValue)
	}
	r, err := k.do(ctx, kv.Message{Kind: kv.KindClientPut, Rec: kv.Record{Key: rec.Key, Value: rec.Value, Tomb: rec.Tomb, Expire: rec.Expire}, W: w})
	return r.Rec.Version, err
}

// Cas runs a read-modify-write of key linearizably (a lightweight
// transaction: Paxos on the key's replicas) and returns its answer: Found
// says whether it wrote, Rec is the key's record after it (version 0:
// absent), Records the record before it when the key held one.
func (k *Server) Cas(ctx context.Context, key []byte, op kv.Op) (kv.Message, error) {
	if err := op.Check(); err != nil {
		return kv.Message{}, status.Errorf(400, "%v", err)
	}
	for _, a := range op[1:] {
		if len(a) > k.n.cfg.KV.MaxValue {
			return kv.Message{}, status.Errorf(413, "argument of %d bytes is larger than the limit of %d", len(a), k.n.cfg.KV.MaxValue)
		}
	}
	r, err := k.do(ctx, kv.Message{Kind: kv.KindClientCas, Rec: kv.Record{Key: key}, Keys: op})
	if err != nil && opError(r.Err) {
		return r, &OpError{Msg: r.Err}
	}
	return r, err
}

// opError reports whether an answer's error is the op's own refusal.
func opError(s string) bool {
	switch s {
	case kv.ErrNotInteger.Error(), kv.ErrNotFloat.Error(), "increment or decrement would overflow", "increment would produce NaN or Infinity":
		return true
	}
	return false
}

// IsOpError reports whether err is a read-modify-write's refusal.
func IsOpError(err error) bool {
	var oe *OpError
	return errors.As(err, &oe)
}

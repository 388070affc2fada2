package store

import (
	"context"

	"tide/kv"
	"tide/resp"
	"tide/store/kvserver"
)

// respBackend is the node's key-value service as package resp reaches it.
type respBackend struct{ n *Node }

var _ resp.Backend = respBackend{}

func (b respBackend) Get(ctx context.Context, key []byte) (kv.Record, bool, error) {
	return b.n.kv.Get(ctx, key, 0)
}

func (b respBackend) Put(ctx context.Context, key, value []byte) error {
	_, err := b.n.kv.Put(ctx, key, value, 0)
	return err
}

func (b respBackend) Delete(ctx context.Context, key []byte) error {
	_, err := b.n.kv.Delete(ctx, key, 0)
	return err
}

func (b respBackend) Write(ctx context.Context, rec kv.Record) error {
	_, err := b.n.kv.Write(ctx, rec, 0)
	return err
}

func (b respBackend) Cas(ctx context.Context, key []byte, op kv.Op) (kv.Message, error) {
	return b.n.kv.Cas(ctx, key, op)
}

func (b respBackend) IsOpError(err error) bool { return kvserver.IsOpError(err) }

func (b respBackend) Scan(ctx context.Context, cursor uint64, count int) ([]kv.Record, uint64, error) {
	return b.n.scanKeys(ctx, cursor, count)
}

func (b respBackend) NewBatcher() resp.Batcher { return b.n.kv.NewBatcher() }

func (b respBackend) Status() resp.Status {
	keys, bytes := b.n.eng.KVCount()
	return resp.Status{Members: len(b.n.kvRing.Load().members), Stats: b.n.kv.Stats(), Keys: int64(keys), Bytes: bytes}
}

func (b respBackend) Members() []resp.Member {
	self := b.n.ring.Self()
	var out []resp.Member
	for _, m := range b.n.kvRing.Load().members {
		if m.addrs["resp"] != "" {
			out = append(out, resp.Member{PeerAddr: m.addrs["peer"], RESPAddr: m.addrs["resp"], Self: m.ref == self})
		}
	}
	return out
}

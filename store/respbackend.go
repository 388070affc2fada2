package store

import (
	"context"

	"tide/kv"
	"tide/resp"
)

// respBackend is the node's key-value service as package resp reaches it.
type respBackend struct{ n *Node }

var _ resp.Backend = respBackend{}

func (b respBackend) Get(ctx context.Context, key []byte) (kv.Record, bool, error) {
	return b.n.KVGet(ctx, key, 0)
}

func (b respBackend) Put(ctx context.Context, key, value []byte) error {
	_, err := b.n.KVPut(ctx, key, value, 0)
	return err
}

func (b respBackend) Delete(ctx context.Context, key []byte) error {
	_, err := b.n.KVDelete(ctx, key, 0)
	return err
}

func (b respBackend) NewBatcher() resp.Batcher { return &connBatcher{k: b.n.kv} }

func (b respBackend) Status() resp.Status {
	keys, bytes := b.n.eng.KVCount()
	return resp.Status{Members: len(b.n.kv.ring.Load().members), Stats: b.n.KVStats(), Keys: int64(keys), Bytes: bytes}
}

func (b respBackend) Members() []resp.Member {
	self := b.n.ring.Self()
	var out []resp.Member
	for _, m := range b.n.kv.ring.Load().members {
		if m.addrs["resp"] != "" {
			out = append(out, resp.Member{PeerAddr: m.addrs["peer"], RESPAddr: m.addrs["resp"], Self: m.ref == self})
		}
	}
	return out
}

// connBatcher runs one RESP connection's batches through doBatch, reusing
// its buffers from one batch to the next.
type connBatcher struct {
	k  *kvNode
	st batchState
}

func (c *connBatcher) Do(ctx context.Context, ms []kv.Message) ([]kv.Message, []error) {
	return c.k.doBatch(ctx, ms, &c.st)
}

func (c *connBatcher) Abandoned() bool {
	a := c.st.abandoned
	c.st.abandoned = false
	return a
}

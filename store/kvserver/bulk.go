package kvserver

// The bulk lane: data moving between replicas (range streams, hand-offs,
// anti-entropy) arrives on a connection of its own, and the loop steps it
// in rounds of its own, bounded so that client requests never wait
// behind much of it; anti-entropy's digests are read outside the loop.

import (
	"context"
	"time"

	"tide/kv"
	"tide/transport"
)

// deliverBulk queues a message of the bulk lane. Data moving between
// replicas arrives on a lane of its own (see flush): waiting here for room
// stops reading that connection alone, and TCP slows the sender down
// instead of losing chunks that anti-entropy would have to find again.
func (k *Server) deliverBulk(m kv.Message, frame []byte) {
	b := bulkMsg{m: m}
	if m.Kind == kv.KindPush {
		// A push's records alias its frame until the round that stores
		// them is persisted; then the frame is recycled.
		b.frame = frame
	}
	select {
	case k.bulk <- b:
	case <-k.closing:
		k.dropped.Add(1)
	}
}

// bulkKind reports whether messages of kind k move data between replicas
// (anti-entropy, hand-off, range streams) rather than serve requests.
func bulkKind(k kv.Kind) bool {
	switch k {
	case kv.KindPush, kv.KindPull, kv.KindPullRange, kv.KindDigest, kv.KindDigestResp, kv.KindKeys, kv.KindKeysResp, kv.KindOffer, kv.KindOfferResp:
		return true
	}
	return false
}

// bulkMsg is an inbound message of the bulk lane, with the frame it was
// decoded from when that frame may be recycled after the round, and for a
// digest answer, this node's digest of the same range (digester).
type bulkMsg struct {
	m      kv.Message
	frame  []byte
	digest []uint64
	mine   bool // digest is set
}

// stepBulk steps b's message and keeps its frame for recycling.
func (k *Server) stepBulk(b bulkMsg) {
	switch {
	case b.mine:
		k.node.StepDigestResp(b.m, b.digest)
	case k.refuses(&b.m) == nil:
		k.node.Step(b.m)
	}
	if b.frame != nil {
		k.recycle = append(k.recycle, b.frame)
	}
}

// digester reads the digests of anti-entropy outside the loop: a digest
// reads a whole range (a third of a node's records with N=3 replicas),
// and every request waits for the round under way. It answers a peer's
// KindDigest itself, and hands the loop a peer's answer with this node's
// digest of the same range, one at a time.
func (k *Server) digester(ctx context.Context) {
	st := k.n.eng.KV()
	for {
		var m kv.Message
		select {
		case <-ctx.Done():
			return
		case m = <-k.digests:
		}
		start := time.Now()
		hashes := kv.Digest(st, m.Lo, m.Hi, m.Buckets, m.Horizon)
		if d := time.Since(start); d >= slowStorage {
			k.n.log.Info("kv: slow digest", "took", d.Round(time.Millisecond), "from", m.From)
		}
		if m.Kind == kv.KindDigest {
			r := kv.DigestReply(k.n.cfg.Self, m, hashes)
			k.tr.SendBatchOn(transport.Bulk, r.To, [][]byte{kv.AppendMessage(nil, &r)})
			continue
		}
		select {
		case k.bulk <- bulkMsg{m: m, digest: hashes, mine: true}:
		case <-ctx.Done():
			return
		}
	}
}

// bulkRoundBytes bounds the pushes one round takes, and bulkRoundTime
// the time it spends stepping bulk messages: client requests wait for
// the round.
const (
	bulkRoundBytes  = 8 << 20
	bulkRoundTime   = 50 * time.Millisecond
	bulkRoundIngest = 2 << 20 // above storage's threshold for ingesting a round's pushes
)

func pushBytes(m kv.Message) int {
	n := 0
	for _, r := range m.Records {
		n += len(r.Key) + len(r.Value)
	}
	return n
}

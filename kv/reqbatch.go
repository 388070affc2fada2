// Requests to replicas, gathered per round: a coordinator's writes and reads
// to one replica leave as one batch message and come back as one answer.

package kv

// reqGather is a run of client requests of one kind (KindPut or KindGet)
// to one replica, this round.
type reqGather struct {
	kind  Kind
	recs  []Record // KindPut: the records; KindGet: the keys, in Key
	ops   []uint64
	bytes int
}

// reqBatch is a KindPutBatch or KindGetBatch sent: the ops it carries
// requests of, in order, and the tick it left.
type reqBatch struct {
	ops []uint64
	at  int
}

// maxReqBatch bounds the record bytes of one batch.
const maxReqBatch = 1 << 20

// queueReq adds a client write (KindPut of rec) or read (KindGet of
// rec.Key) of op id to what this round sends replica to: one message per
// replica per round instead of one per request, and one answer. A request
// of the other kind than those queued sends them first, so that the
// replica sees every request in the order it was made.
func (n *Node) queueReq(kind Kind, to string, id uint64, rec Record) {
	if n.outReqs == nil {
		n.outReqs = map[string]*reqGather{}
	}
	g := n.outReqs[to]
	if g == nil {
		g = &reqGather{}
		n.outReqs[to] = g
	}
	if len(g.ops) > 0 && g.kind != kind {
		n.sendReqs(to, g)
	}
	if len(g.ops) == 0 {
		n.outOrder = append(n.outOrder, to)
	}
	g.kind = kind
	g.recs = append(g.recs, rec)
	g.ops = append(g.ops, id)
	g.bytes += len(rec.Key) + len(rec.Value)
	if g.bytes >= maxReqBatch {
		n.sendReqs(to, g)
	}
}

// flushReqs sends the requests queued this round.
func (n *Node) flushReqs() {
	for _, to := range n.outOrder {
		if g := n.outReqs[to]; len(g.ops) > 0 {
			n.sendReqs(to, g)
		}
	}
	n.outOrder = n.outOrder[:0]
}

// sendReqs sends g's requests to replica to: a lone one as a KindPut or
// KindGet of its op, several as a KindPutBatch or KindGetBatch.
func (n *Node) sendReqs(to string, g *reqGather) {
	switch {
	case len(g.ops) == 1 && g.kind == KindGet:
		n.emit(Message{Kind: KindGet, To: to, ID: g.ops[0], Rec: Record{Key: g.recs[0].Key}})
	case len(g.ops) == 1:
		n.emit(Message{Kind: KindPut, To: to, ID: g.ops[0], Rec: g.recs[0]})
	default:
		n.nextID++
		if n.reqBatches == nil {
			n.reqBatches = map[uint64]reqBatch{}
		}
		n.reqBatches[n.nextID] = reqBatch{ops: g.ops, at: n.now}
		m := Message{Kind: KindPutBatch, To: to, ID: n.nextID, Records: g.recs}
		if g.kind == KindGet {
			keys := make([][]byte, len(g.recs))
			for i := range g.recs {
				keys[i] = g.recs[i].Key
			}
			m = Message{Kind: KindGetBatch, To: to, ID: n.nextID, Keys: keys}
		}
		n.emit(m)
		// The message and the batch keep their slices: g starts new
		// ones.
		g.recs, g.ops, g.bytes = nil, nil, 0
		return
	}
	g.recs, g.ops, g.bytes = g.recs[:0], g.ops[:0], 0
}

// answeredBatch forgets batch id, answered, and returns the ops it
// carried requests of, in order (none if the batch is unknown: answered
// already, or timed out).
func (n *Node) answeredBatch(id uint64) []uint64 {
	b := n.reqBatches[id]
	delete(n.reqBatches, id)
	return b.ops
}

// expireBatches forgets the batches sent TimeoutTicks ago and never
// answered.
func (n *Node) expireBatches() {
	for id, b := range n.reqBatches {
		if n.now-b.at >= n.cfg.TimeoutTicks {
			// Unanswered: its ops were resent one by one, and have
			// timed out by now.
			delete(n.reqBatches, id)
		}
	}
}

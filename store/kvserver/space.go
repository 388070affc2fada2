package kvserver

import (
	"time"

	"tide/kv"
)

// A node whose disk is nearly full refuses writes before storage fails
// (see engine.CheckSpace): a client's with a clear error (507, or a RESP
// error that starts with "disk full"), a peer's write by answering that
// it is refused (kv.Node.Refuse), and a hand-off or repair push by
// leaving it unanswered. The coordinator of a peer's write then counts
// the replica out of its quorum: it fails the write at once with the
// refusal (507) if too few replicas are left to acknowledge it, and
// keeps a hint for the replica, as for one that is down; hand-offs and
// anti-entropy push again later. Deletes are never refused: they are
// how space returns.

// checkSpace refuses a client's write m while the disk is below its
// reserve.
func (k *Server) checkSpace(m *kv.Message) error {
	n := m.StoredBytes()
	if n == 0 || m.Kind != kv.KindClientPut {
		return nil
	}
	return k.n.eng.CheckSpace(n)
}

// refuses reports whether m, from a peer, is a write this node turns
// away because its disk is below the reserve, and why.
func (k *Server) refuses(m *kv.Message) error {
	n := m.StoredBytes()
	if n == 0 {
		return nil
	}
	err := k.n.eng.CheckSpace(n)
	if err == nil {
		return nil
	}
	if now := time.Now().UnixNano(); now-k.refusalLogged.Load() > int64(10*time.Second) {
		k.refusalLogged.Store(now)
		k.n.log.Warn("kv: refusing replica writes", "kind", m.Kind.String(), "from", m.From, "err", err)
	}
	return err
}

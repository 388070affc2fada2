// The replica side: applying a record if it is newer than the one held, and
// forgetting keys.

package kv

// local returns this node's record of key, including writes persisted in
// the current round.
func (n *Node) local(key []byte) (Record, bool) {
	if r, ok := n.pending[string(key)]; ok {
		return r, true
	}
	if n.gone[string(key)] {
		return Record{}, false
	}
	r, ok, err := n.st.Get(key)
	if err != nil {
		return Record{}, false
	}
	return r, ok
}

// apply stores r if it is newer than what this node holds.
func (n *Node) apply(r Record) bool {
	n.observe(r.Version)
	var had bool
	var hadBytes int64
	if m, ok := n.vcache.get(r.Key); ok && m.version != r.Version {
		// Known without reading storage. (Equal versions are ordered by
		// value, which the cache does not keep.)
		n.Stats.VersionHits++
		if r.Version < m.version {
			return false
		}
		had, hadBytes = true, m.size
	} else {
		n.Stats.VersionMisses++
		cur, ok := n.local(r.Key)
		if ok && !r.Newer(cur) {
			return false
		}
		had, hadBytes = ok, cur.Size()
	}
	rc := r
	ks := string(r.Key) // one copy of the key for both maps
	n.pending[ks] = rc
	delete(n.gone, ks)
	n.remember(ks, r)
	n.rd.Persist = append(n.rd.Persist, PersistOp{Put: &rc, Had: had, HadBytes: hadBytes, Bulk: n.bulkFrom})
	return true
}

// remember notes the version of a record being stored, so that the next
// write of its key need not read storage to compare versions.
func (n *Node) remember(ks string, r Record) { n.vcache.put(ks, r, n.cfg.VersionCache) }

// Clear forgets the hints this node holds and the versions it cached: the
// driver calls it when it empties the node's storage (the Dynamo seed's
// clear_cache), and persists nothing for it.
func (n *Node) Clear() {
	clear(n.hints)
	for _, q := range n.regions.queues {
		// q.oldest stays: the writes dropped are not in the other region,
		// and the watermark stays below them until a newer write of
		// their key is acknowledged there.
		clear(q.held)
		q.queue = nil
	}
	n.vcache.reset()
}

// ForgetVersions empties the version cache. The driver calls it when
// persisting a round failed: the cache then runs ahead of storage.
func (n *Node) ForgetVersions() { n.vcache.reset() }

// forget deletes r's key entirely, in this round.
func (n *Node) forget(r Record) {
	n.rd.Persist = append(n.rd.Persist, PersistOp{Delete: r.Key, Had: true, HadBytes: r.Size()})
	delete(n.lwt.pending, string(r.Key))
	delete(n.lwt.mem, string(r.Key))
	delete(n.pending, string(r.Key))
	n.vcache.drop(r.Key)
	n.gone[string(r.Key)] = true
}

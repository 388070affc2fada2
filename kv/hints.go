// Hinted hand-off: writes a replica did not acknowledge are held, durably,
// and delivered again until it does.

package kv

import "slices"

// hintStore holds the writes this node keeps for replicas that did not
// acknowledge them (hinted hand-off): the newest record of each key, by
// target replica.
type hintStore map[string]map[string]Record

// get returns the record held for target under key.
func (s hintStore) get(target string, key []byte) (Record, bool) {
	r, ok := s[target][string(key)]
	return r, ok
}

// put holds r for target, replacing what was held under its key.
func (s hintStore) put(target string, r Record) {
	if s[target] == nil {
		s[target] = map[string]Record{}
	}
	s[target][string(r.Key)] = r
}

// remove stops holding key for target.
func (s hintStore) remove(target string, key []byte) { delete(s[target], string(key)) }

// count returns how many records are held, for every target.
func (s hintStore) count() int {
	k := 0
	for _, m := range s {
		k += len(m)
	}
	return k
}

// due returns the hints to deliver now: at most perTarget of each
// target's, in the order of targets and then of keys.
func (s hintStore) due(perTarget int) []Hint {
	targets := make([]string, 0, len(s))
	for t := range s {
		targets = append(targets, t)
	}
	slices.Sort(targets)
	var out []Hint
	for _, t := range targets {
		keys := make([]string, 0, len(s[t]))
		for k := range s[t] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i >= perTarget {
				break
			}
			out = append(out, Hint{Target: t, Rec: s[t][k]})
		}
	}
	return out
}

// holdHint holds h unless a version as new is held for its target and key;
// persist makes it durable in this round (hints restored after a restart
// are already).
func (n *Node) holdHint(h Hint, persist bool) {
	if cur, ok := n.hints.get(h.Target, h.Rec.Key); ok && !h.Rec.Newer(cur) {
		return
	}
	if persist {
		// A hint may be held for long: it gets memory of its own rather
		// than keep alive the request buffer its key and value are in.
		kv := make([]byte, len(h.Rec.Key)+len(h.Rec.Value))
		copy(kv[copy(kv, h.Rec.Key):], h.Rec.Value)
		h.Rec.Key = kv[:len(h.Rec.Key):len(h.Rec.Key)]
		if h.Rec.Value != nil {
			h.Rec.Value = kv[len(h.Rec.Key):]
		}
	}
	n.hints.put(h.Target, h.Rec)
	if persist {
		hc := h
		n.rd.Persist = append(n.rd.Persist, PersistOp{Hint: &hc})
		n.Stats.HintsHeld++
	}
}

// hintDelivered drops h, acknowledged by its target, unless a newer write
// of its key has been held since.
func (n *Node) hintDelivered(h Hint) {
	if cur, ok := n.hints.get(h.Target, h.Rec.Key); ok && cur.Version == h.Rec.Version {
		n.hints.remove(h.Target, h.Rec.Key)
		n.rd.Persist = append(n.rd.Persist, PersistOp{DoneHint: &h})
		n.Stats.HintsDelivered++
	}
}

// Hints returns how many writes are held for other nodes.
func (n *Node) Hints() int { return n.hints.count() }

// dropDepartedHints drops the hints of every target that has been out of
// the ring for HintDropTicks, as seen at hint delivery times; a target
// back in the ring is timed afresh if it leaves again.
func (n *Node) dropDepartedHints() {
	members := n.ring.Members()
	for t := range n.hintAbsent {
		if len(n.hints[t]) == 0 || hasAddr(members, t) {
			delete(n.hintAbsent, t)
		}
	}
	// In order of targets: what is persisted must not depend on map
	// order (the simulator replays seeds).
	targets := make([]string, 0, len(n.hints))
	for t := range n.hints {
		targets = append(targets, t)
	}
	slices.Sort(targets)
	for _, t := range targets {
		held := n.hints[t]
		if len(held) == 0 {
			delete(n.hints, t)
			continue
		}
		if hasAddr(members, t) {
			continue
		}
		since, ok := n.hintAbsent[t]
		if !ok {
			if n.hintAbsent == nil {
				n.hintAbsent = map[string]int{}
			}
			n.hintAbsent[t] = n.now
			continue
		}
		if n.now-since < n.cfg.HintDropTicks {
			continue
		}
		n.dropHints(t, false)
	}
}

// dropHints stops holding, durably, every hint for target t; with
// reroute, each record is first held for the members of its current
// preference list instead (and applied here if this node is one).
func (n *Node) dropHints(t string, reroute bool) {
	held := n.hints[t]
	keys := make([]string, 0, len(held))
	for k := range held {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		h := Hint{Target: t, Rec: held[k]}
		n.rd.Persist = append(n.rd.Persist, PersistOp{DoneHint: &h})
		if !reroute {
			continue
		}
		for _, p := range n.ring.Preference(n.ring.Position(h.Rec.Key), n.cfg.N) {
			switch {
			case p == t || slices.Contains(n.left, p):
			case p == n.self:
				n.apply(h.Rec)
			default:
				n.holdHint(Hint{Target: p, Rec: h.Rec}, true)
			}
		}
	}
	if reroute {
		n.Stats.HintsRerouted += len(held)
	} else {
		n.Stats.HintsDropped += len(held)
	}
	delete(n.hints, t)
	delete(n.hintAbsent, t)
}

// rerouteLeftHints hands the hints held for members that announced their
// leave and are out of the ring to the records' current replicas.
//
// A hint is a write its target did not acknowledge: the write was
// acknowledged by a write quorum of every view without it, so no hint is
// needed for safety, only for the replicas to converge sooner than
// anti-entropy would bring them together. Delivered to a member that is
// leaving, it would never be acknowledged (a leaving node acknowledges
// no write) and would be stored again at every delivery, after the node
// handed off what it held: its leave, which waits until it holds
// nothing, would not finish until the hint expired (HintDropTicks).
// Held for the new replicas instead, it converges them and lets the
// leaving node empty.
func (n *Node) rerouteLeftHints() {
	for _, t := range n.left {
		if len(n.hints[t]) > 0 && !hasAddr(n.ring.Members(), t) {
			n.dropHints(t, true)
		}
	}
}

// deliverHints sends each target up to 256 of the writes held for it.
func (n *Node) deliverHints() {
	n.rerouteLeftHints()
	for _, h := range n.hints.due(256) {
		id := n.newOp(&op{hint: &h, replicas: []string{h.Target}})
		n.send(Message{Kind: KindPut, To: h.Target, ID: id, Rec: h.Rec})
	}
}

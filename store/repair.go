package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"tide/chord"
	"tide/store/engine"
	"tide/store/status"
)

// repairLoop keeps every local file where it belongs: when the node's
// neighbourhood changes, and every FullRepairInterval regardless.
func (n *Node) repairLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.RepairInterval)
	defer t.Stop()
	var lastEpoch uint64
	var lastFull time.Time
	pending := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
			pending = true
		}
		epoch := n.ring.Epoch()
		if !pending && epoch == lastEpoch && time.Since(lastFull) < n.cfg.FullRepairInterval {
			continue
		}
		if n.leaving.Load() || !n.ring.InRing() {
			continue // a leave hands its files off itself; a standby holds none
		}
		res, err := n.repair(ctx, false)
		if err != nil {
			n.log.Debug("repair incomplete; will retry", "err", err)
			pending = true
			continue
		}
		if res.Pushed > 0 || res.Dropped > 0 {
			n.log.Info("repair", "pushed", res.Pushed, "dropped", res.Dropped, "files", res.Checked)
		}
		pending = false
		lastEpoch = epoch
		lastFull = time.Now()
	}
}

// RepairResult counts what a repair pass did.
type RepairResult struct {
	Checked int `json:"checked"`
	Pushed  int `json:"pushed"`
	Dropped int `json:"dropped"`
}

// repair checks the placement of every local file and tombstone:
//
//   - the owner makes sure each of its N-1 successors has the latest
//     version;
//   - a replica makes sure the owner has it (a node that just joined in
//     front of it may not);
//   - a node outside the replica set copies the file to every member that
//     lacks it and then drops its own copy.
//
// With leaving set the node counts itself out of every replica set, which
// hands all its files off.
func (n *Node) repair(ctx context.Context, leaving bool) (RepairResult, error) {
	n.m.repairRuns.Inc()
	var res RepairResult
	var metas []engine.Meta
	if err := n.eng.Scan(0, 0, func(m engine.Meta) bool { metas = append(metas, m); return true }); err != nil {
		return res, err
	}
	res.Checked = len(metas)
	if len(metas) == 0 {
		return res, nil
	}
	self := n.ring.Self()
	pred := n.ring.Predecessor()
	alone := n.ring.Successor(0) == self
	localSet := n.localReplicaSet()

	sets := make([][]chord.Ref, len(metas))
	want := map[chord.Ref][]int{} // member -> indexes of metas it should hold
	var lastOwner chord.Ref
	var lastSet []chord.Ref
	var lastKey chord.ID
	var errs []error
	for i, m := range metas {
		var set []chord.Ref
		switch {
		case !leaving && (alone || (!pred.IsZero() && chord.InHalfOpen(m.Key, pred.ID, self.ID))):
			set = localSet
			lastOwner = chord.Ref{}
		case !lastOwner.IsZero() && chord.InHalfOpen(m.Key, lastKey, lastOwner.ID):
			// Keys are scanned in ring order, so a key up to the last owner
			// found has that owner too.
			set = lastSet
		default:
			owner, err := n.owner(ctx, m.Key)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			set, err = n.replicaSetOf(ctx, owner, leaving)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			lastOwner, lastSet = owner, set
		}
		lastKey = m.Key
		sets[i] = set
		var targets []chord.Ref
		switch {
		case set[0] == self:
			targets = set[1:]
		case containsRef(set, self):
			targets = set[:1]
		default:
			targets = set
		}
		for _, t := range targets {
			want[t] = append(want[t], i)
		}
	}

	// One exchange per member finds what it lacks; then push those.
	failed := map[int]bool{} // metas not confirmed on every target
	for t, idx := range want {
		lacking, err := n.lacking(ctx, t, metas, idx)
		if err != nil {
			errs = append(errs, err)
			for _, i := range idx {
				failed[i] = true
			}
			continue
		}
		for _, i := range idx {
			if !lacking[metas[i].Name] {
				continue
			}
			if err := n.push(ctx, t, metas[i]); err != nil {
				errs = append(errs, err)
				failed[i] = true
				continue
			}
			res.Pushed++
		}
	}
	for i, m := range metas {
		if sets[i] == nil || failed[i] || containsRef(sets[i], self) {
			continue
		}
		if err := n.eng.Drop(m.Name, m.Version); err != nil {
			errs = append(errs, err)
			continue
		}
		n.m.dropped.Inc()
		res.Dropped++
	}
	return res, errors.Join(errs...)
}

// replicaSetOf returns owner followed by its first N-1 distinct
// successors, leaving this node out if it is leaving.
func (n *Node) replicaSetOf(ctx context.Context, owner chord.Ref, leaving bool) ([]chord.Ref, error) {
	self := n.ring.Self()
	set := []chord.Ref{owner}
	if n.cfg.Replicas == 1 {
		return set, nil
	}
	var succs []chord.Ref
	var err error
	if owner == self {
		succs = n.ring.Successors()
	} else {
		succs, err = n.rpc.Successors(ctx, owner.Addr())
		if err != nil {
			return nil, fmt.Errorf("successors of %s: %w", owner.Addr(), err)
		}
	}
	for _, s := range succs {
		if len(set) == n.cfg.Replicas {
			break
		}
		if (leaving && s == self) || containsRef(set, s) {
			continue
		}
		set = append(set, s)
	}
	return set, nil
}

// lacking asks node t which of the given versions it does not hold.
func (n *Node) lacking(ctx context.Context, t chord.Ref, metas []engine.Meta, idx []int) (map[string]bool, error) {
	addr, err := n.httpAddrOf(ctx, t)
	if err != nil {
		return nil, err
	}
	list := make([]haveEntry, len(idx))
	for j, i := range idx {
		list[j] = haveEntry{Name: metas[i].Name, Version: metas[i].Version}
	}
	body, _ := json.Marshal(list)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/internal/have", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("have exchange with %s: %s", t.Addr(), resp.Status)
	}
	var names []string
	if err := json.NewDecoder(resp.Body).Decode(&names); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(names))
	for _, s := range names {
		out[s] = true
	}
	return out, nil
}

// leaveOp is a leave in progress; every caller of Leave waits for the same
// one.
type leaveOp struct {
	done  chan struct{}
	moved int
	err   error
}

// Leave hands every local file and key to the nodes that hold it once this
// node is gone, takes the node out of the ring, and reports how many copies
// moved. The node then stops, or with stay (remove_node) keeps running as a
// standby that follows the ring; it does either only once nothing is left.
// On failure it keeps running as a member and keeps its files, so nothing
// is lost. A leave runs to its end even if ctx ends first (the caller stops
// waiting, not the hand-off); concurrent calls wait for the same leave.
func (n *Node) Leave(ctx context.Context, stay bool) (int, error) {
	n.leaveMu.Lock()
	op := n.leaveOp
	if op == nil {
		op = &leaveOp{done: make(chan struct{})}
		n.leaveOp = op
		bg := n.bg
		if bg == nil {
			bg = context.WithoutCancel(ctx)
		}
		go func() {
			op.moved, op.err = n.leave(bg, stay)
			n.leaveMu.Lock()
			switch {
			case op.err != nil:
				n.leaveOp = nil // the node stays; a later leave may try again
			case stay:
				n.leaveOp = nil // a standby may be added and leave again
			default:
				// The node is empty and out of the ring: it stops, even if
				// whoever asked is gone (a waiting caller is answered first).
				time.AfterFunc(2*time.Second, n.stop)
			}
			n.leaveMu.Unlock()
			close(op.done)
		}()
	}
	n.leaveMu.Unlock()
	select {
	case <-op.done:
		return op.moved, op.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (n *Node) leave(ctx context.Context, stay bool) (int, error) {
	n.memberMu.Lock()
	defer n.memberMu.Unlock()
	if !n.ring.InRing() {
		return 0, status.Errorf(http.StatusConflict, "node is not in a ring")
	}
	if !n.leaving.CompareAndSwap(false, true) {
		return 0, status.Errorf(http.StatusConflict, "node is already leaving")
	}
	if n.ring.Successor(0) == n.ring.Self() && n.eng.Files() > 0 {
		n.leaving.Store(false)
		return 0, status.Errorf(http.StatusConflict, "the last node of a ring cannot leave while it holds %d files", n.eng.Files())
	}
	// The KV layer counts this node out of every preference list and
	// hands its keys to their next holders while the rest of the ring
	// still routes to it, so reads find every key throughout.
	n.kv.SetDraining(true)
	n.RefreshRing()
	// Writes keep arriving while the rest of the ring routes here, so the
	// node does not wait to be empty: it waits until the keys it held have
	// been handed off once (the count stops falling), then leaves the ring.
	// Later arrivals are handed off afterwards; until then each has its
	// other W-1 acknowledged copies.
	prev := -1
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		keys, _ := n.eng.KVCount()
		if keys == 0 || (keys >= prev && prev >= 0 && !n.kv.Busy()) {
			break
		}
		prev = keys
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	var follow []string
	if stay {
		// Out of the ring, the node walks it from the members it leaves.
		for _, m := range n.kvRing.Load().members {
			follow = append(follow, m.ref.Addr())
		}
		n.setFollowing(follow)
	}
	if err := n.ring.Leave(ctx); err != nil {
		n.log.Warn("leave: a neighbour was not told; stabilization will catch up", "err", err)
	}
	n.announceRingChange(ctx)
	moved := 0
	var err error
	for attempt := range 600 {
		var res RepairResult
		res, err = n.repair(ctx, true)
		moved += res.Pushed
		left := 0
		n.eng.Scan(0, 0, func(engine.Meta) bool { left++; return true })
		keys, _ := n.eng.KVCount()
		left += keys
		if err == nil && left == 0 && stay {
			if err := n.becomeStandby(follow); err != nil {
				n.log.Error("leave: could not record the standby state; a restart on this data directory would rejoin the ring", "err", err)
			}
			n.leaving.Store(false)
			n.kv.SetDraining(false)
			n.log.Info("left the ring; staying up as a standby", "moved", moved)
			return moved, nil
		}
		if err == nil && left == 0 {
			// A restart on this data directory must not rejoin with the
			// old token: Start refuses it (ErrLeft).
			at := time.Now().UTC().Format(time.RFC3339)
			if err := n.eng.PutState(stateLeft, []byte(at)); err != nil {
				n.log.Error("leave: could not record the leave; a restart on this data directory would rejoin the ring", "err", err)
			}
			n.log.Info("left the ring", "moved", moved)
			return moved, nil
		}
		n.log.Info("leave: handing off", "moved", moved, "left", left, "attempt", attempt+1, "err", err)
		select {
		case <-ctx.Done():
			return moved, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	// Stay, with every file: stabilization brings the node back into the
	// ring and a later leave can try again.
	n.leaving.Store(false)
	n.kv.SetDraining(false)
	n.follow.Store(nil)
	n.ring.Unleave()
	n.RefreshRing()
	return moved, fmt.Errorf("leave: files remain after repeated hand-off, node stays: %v", err)
}

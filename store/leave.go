package store

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"tide/store/engine"
	"tide/store/files"
	"tide/store/status"
)

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
	peers := n.memberHTTPAddrs()
	if err := n.ring.Leave(ctx); err != nil {
		n.log.Warn("leave: a neighbour was not told; stabilization will catch up", "err", err)
	}
	// The members stop waiting for this node and re-route the writes they
	// hold for it (hints) to the keys' new replicas: delivered here, they
	// would refill the node as it empties.
	n.announceLeft(ctx, peers)
	moved := 0
	var err error
	for attempt := range 600 {
		var res files.RepairResult
		res, err = n.files.Repair(ctx, true)
		moved += res.Pushed
		files := 0
		n.eng.Scan(0, 0, func(engine.Meta) bool { files++; return true })
		keys, _ := n.eng.KVCount()
		left := files + keys
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
		n.log.Info("leave: handing off", "moved", moved, "files", files, "keys", keys, "attempt", attempt+1, "err", err)
		if attempt%10 == 9 {
			// A member that missed the announcement still sends hints
			// here: tell it again.
			n.announceLeft(ctx, peers)
		}
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

package files

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
)

// repairLoop keeps every local file where it belongs: when the node's
// neighbourhood changes, and every FullRepairInterval regardless.
func (n *Service) repairLoop(ctx context.Context) {
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
		if n.cfg.Leaving() || !n.ring.InRing() {
			continue // a leave hands its files off itself; a standby holds none
		}
		res, err := n.Repair(ctx, false)
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

// Repair checks the placement of every local file and tombstone:
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
func (n *Service) Repair(ctx context.Context, leaving bool) (RepairResult, error) {
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
func (n *Service) replicaSetOf(ctx context.Context, owner chord.Ref, leaving bool) ([]chord.Ref, error) {
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
func (n *Service) lacking(ctx context.Context, t chord.Ref, metas []engine.Meta, idx []int) (map[string]bool, error) {
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

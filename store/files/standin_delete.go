package files

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"tide/chord"
	"tide/store/engine"
	"tide/store/status"
)

// Deletes go the way uploads do (standin.go): to the file's owner, or,
// when the owner cannot be reached (nothing of the delete left) or was
// found unreachable or silent moments ago, to its stand-in, which writes
// the tombstone for the owner with a majority of the owner's replica
// set. Reads meet that majority (read.go), so the file reads as gone. A
// delete already sent to an owner that then stays silent is not passed
// on: the owner may still apply it when it wakes, so the client is told
// the outcome is unknown.

// deleteThroughOwner forwards a delete to owner, or to its stand-in.
func (n *Service) deleteThroughOwner(ctx context.Context, owner chord.Ref, name string) error {
	if n.suspect.has(owner) {
		return n.deleteElsewhere(ctx, owner, name, fmt.Errorf("owner %s of %q was unreachable moments ago", owner.Addr(), name))
	}
	gctx, answered, stop := n.silenceGuard(ctx, owner)
	err := n.forwardDelete(gctx, owner, name, chord.Ref{})
	answered()
	silent := errors.Is(context.Cause(gctx), chord.ErrSilent) && ctx.Err() == nil
	stop()
	var ns *notSent
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ns):
		return n.deleteElsewhere(ctx, owner, name, err)
	case silent:
		n.suspect.add(owner)
		return status.Errorf(http.StatusServiceUnavailable, "delete of %q: owner %s answered neither it nor a ping; outcome unknown: it may still apply the delete (deletes for it go to its stand-in for the next %s)", name, owner.Addr(), suspectFor)
	}
	return err
}

// forwardDelete sends a delete to node to: the owner, or with standInFor
// set a stand-in for it. It fails with *notSent when to could not be
// reached.
func (n *Service) forwardDelete(ctx context.Context, to chord.Ref, name string, standInFor chord.Ref) error {
	role := forwardRole(standInFor)
	addr, err := n.forwardAddr(ctx, to, role, name)
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, fileURL(addr, "/files/", name), nil)
	setForwarded(req, standInFor)
	resp, err := n.hc.Do(req)
	if err != nil {
		fail := status.Errorf(http.StatusServiceUnavailable, "forward delete of %q to %s %s: %v", name, role, to.Addr(), err)
		if unsent(err, 0) && ctx.Err() == nil {
			return &notSent{fail}
		}
		return fail
	}
	return forwardAnswer(resp)
}

// deleteElsewhere deletes name, whose owner cannot be reached (why),
// through the owner's stand-in.
func (n *Service) deleteElsewhere(ctx context.Context, owner chord.Ref, name string, why error) error {
	if !n.suspect.has(owner) {
		n.ring.Failed(owner)
		n.suspect.add(owner)
	}
	standIn, err := n.standInFor(ctx, owner)
	switch {
	case err != nil:
		return status.Errorf(http.StatusServiceUnavailable, "%v; and no stand-in found: %v", why, err)
	case standIn == owner:
		return status.Errorf(http.StatusServiceUnavailable, "%v; the ring knows no other node for it", why)
	case standIn == n.ring.Self():
		return n.deleteStandIn(ctx, owner, name)
	}
	if err := n.forwardDelete(ctx, standIn, name, owner); err != nil {
		return fmt.Errorf("%v; through stand-in %s: %w", why, standIn.Addr(), err)
	}
	return nil
}

// deleteStandIn writes name's tombstone for owner, which its sender could
// not reach, and copies it to the rest of owner's replica set.
func (n *Service) deleteStandIn(ctx context.Context, owner chord.Ref, name string) error {
	if err := n.acting(ctx); err != nil {
		return err
	}
	if found, err := n.findAnywhere(ctx, name); err != nil {
		return err
	} else if !found {
		return engine.ErrNotFound
	}
	v := n.clock.Next()
	if _, err := n.eng.Delete(name, v); err != nil {
		return err
	}
	if n.m.standIns != nil {
		n.m.standIns.Inc()
	}
	tomb := engine.Meta{Name: name, Key: n.eng.KeyOf(name), Version: v, Deleted: true}
	set := n.standInSet(owner)
	need := n.cfg.Replicas/2 + 1
	if acks := 1 + n.replicate(ctx, tomb, set[1:], need-1); acks < need {
		return status.Errorf(http.StatusServiceUnavailable, "delete of %q reached %d of %d replicas (standing in for its owner %s), %d needed", name, acks, len(set), owner.Addr(), need)
	}
	return nil
}

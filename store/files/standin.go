package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"tide/chord"
	"tide/store/engine"
	"tide/store/status"
)

// An upload goes to its file's owner, which stores it and copies it to
// the rest of the owner's replica set (the owner and its successors). When
// the owner cannot be reached at all (the connection to it is refused or
// times out, so nothing of the upload was sent), the node the client
// sent the upload to hands it to a stand-in instead: the owner's next
// node on the ring, the first of the rest of its replica set, which
// Chord makes the owner once the ring has routed around the dead one. The
// stand-in stores the upload and copies it to the owner and the rest of
// the set, and answers once a majority of the set holds it, as the owner
// would. The repair loop later gives the owner the copy it missed (a
// replica makes sure its owner holds its files). So an upload through a
// remaining node succeeds while a majority of its file's replica set is
// up, without waiting for the ring to notice that the owner is gone.
//
// For suspectFor after a failed connection, uploads for that owner go to
// the stand-in at once, without trying the owner again each time.

// HdrStandIn, on a forwarded upload, names the owner ("ip:port#id", as
// chord.Ref.String) that the receiver stands in for.
const HdrStandIn = "X-Tide-Stand-In"

// suspectFor is how long an owner that could not be reached is passed
// over.
const suspectFor = 5 * time.Second

// suspects are the owners recently unreachable, and until when.
type suspects struct {
	mu sync.Mutex
	m  map[chord.Ref]time.Time
}

func (s *suspects) add(r chord.Ref) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[chord.Ref]time.Time{}
	}
	now := time.Now()
	s.m[r] = now.Add(suspectFor)
	for x, until := range s.m {
		if now.After(until) {
			delete(s.m, x)
		}
	}
}

func (s *suspects) has(r chord.Ref) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.m[r]
	return ok && time.Now().Before(until)
}

// notSent is a forward that failed before any of the upload left: the
// owner could not be reached.
type notSent struct{ err error }

func (e *notSent) Error() string { return e.err.Error() }
func (e *notSent) Unwrap() error { return e.err }

// unsent reports whether err, from sending a request whose body read
// nothing, left nothing at the receiver: the connection was never made.
func unsent(err error, bodyRead int64) bool {
	if bodyRead > 0 {
		return false
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// putElsewhere stores an upload whose owner cannot be reached (why)
// through the owner's stand-in.
func (n *Service) putElsewhere(ctx context.Context, owner chord.Ref, name string, body io.Reader, size int64, why error) (engine.Meta, error) {
	if !n.suspect.has(owner) {
		n.ring.Failed(owner) // as a failed Chord call: the ring forgets it sooner
		n.suspect.add(owner)
	}
	standIn, err := n.ring.FindSuccessor(ctx, owner.ID+1)
	switch {
	case err != nil:
		return engine.Meta{}, status.Errorf(http.StatusServiceUnavailable, "%v; and no stand-in found: %v", why, err)
	case standIn == owner:
		return engine.Meta{}, status.Errorf(http.StatusServiceUnavailable, "%v; the ring knows no other node for it", why)
	case standIn == n.ring.Self():
		return n.putStandIn(ctx, owner, name, body, size)
	}
	n.log.Debug("upload through a stand-in", "file", name, "owner", owner.String(), "stand_in", standIn.String(), "why", why)
	m, err := n.forwardTo(ctx, standIn, name, body, size, owner)
	if err != nil {
		return m, fmt.Errorf("%v; through stand-in %s: %w", why, standIn.Addr(), err)
	}
	return m, nil
}

// putStandIn stores an upload for owner, which its sender could not
// reach, and copies it to the rest of owner's replica set: owner itself,
// and this node's successors that follow it in that set.
func (n *Service) putStandIn(ctx context.Context, owner chord.Ref, name string, body io.Reader, size int64) (engine.Meta, error) {
	m, err := n.store(name, body, size, n.clock.Next())
	if err != nil {
		return engine.Meta{}, err
	}
	if n.m.standIns != nil {
		n.m.standIns.Inc()
	}
	self := n.ring.Self()
	set := []chord.Ref{self, owner}
	for _, s := range n.ring.Successors() {
		if len(set) == n.cfg.Replicas {
			break
		}
		if s != self && !containsRef(set, s) {
			set = append(set, s)
		}
	}
	need := n.cfg.Replicas/2 + 1
	if acks := 1 + n.replicate(ctx, m, set[1:], need-1); acks < need {
		return m, status.Errorf(http.StatusServiceUnavailable, "%q stored on %d of %d replicas (standing in for its owner %s), %d needed; it will be re-replicated", name, acks, len(set), owner.Addr(), need)
	}
	return m, nil
}

// parseStandIn reads HdrStandIn.
func parseStandIn(h string) (chord.Ref, error) {
	addr, ids, ok := strings.Cut(h, "#")
	id, err := strconv.ParseUint(ids, 10, 32)
	if !ok || err != nil {
		return chord.Ref{}, fmt.Errorf("%s %q: want ip:port#id", HdrStandIn, h)
	}
	return chord.RefFor(addr, chord.ID(id))
}

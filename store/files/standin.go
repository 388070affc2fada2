package files

import (
	"bytes"
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

// An owner that takes the connection but does not answer (a paused
// process, a link cut under an open connection) cannot be told from a
// slow one by the connection alone. An upload small enough to hold in
// memory (standInBuffer) is read whole first; if the owner has not
// answered it within pingAfter, the node pings the owner over Chord,
// and if the owner has answered neither by silentAfter, it gives up on
// the owner and sends the upload to the stand-in. The owner may then store it as well,
// when it wakes: the same bytes under an older version, which the
// stand-in's newer one replaces everywhere.

// standInBuffer bounds the uploads held in memory so that a silent owner
// can be passed over.
const standInBuffer = 1 << 20

// pingAfter is how long an owner may take to answer an upload (or a
// read) before it is pinged, and silentAfter how long before it is
// passed over if it has answered neither. A node that is up answers a
// ping within milliseconds, even while it waits on its own replicas, so
// the ping tells a slow owner, which is waited for, from a silent one,
// which is passed over: silentAfter is what a request through a
// remaining node pays for an owner that froze or was cut off (and a
// read, hedgeAfter: read.go).
const (
	pingAfter   = 50 * time.Millisecond
	silentAfter = 300 * time.Millisecond
)

// An owner may still take an upload from its socket when it wakes, long
// after the sender passed it over and the stand-in acknowledged the
// upload; by then the client may have overwritten the file, and the
// owner's copy, with the newer version it would give it, would replace
// the acknowledged overwrite. So a sender that may pass the owner over
// tells it the latest version it may give the upload (HdrNotAfter: the
// sender's clock, plus lateAfter), and an owner that would give a newer
// one refuses the upload whole (HdrRefused on its answer). The sender gives
// up no sooner than silentAfter, and the stand-in's version is its own
// clock then, so the owner's upload is older than any the stand-in
// stores while the nodes' clocks are less than silentAfter-lateAfter
// apart. A sender that is still waiting sends a refused upload to the
// stand-in.

// lateAfter is how long after it was sent an owner may still take an
// upload whose sender may pass it over.
const lateAfter = silentAfter / 2

// HdrNotAfter, on a forward to an owner, is the newest version (Unix
// nanoseconds) it may store the upload under; HdrRefused, on an owner's
// answer, says it refused the upload whole and stored nothing, for that
// or because it is not in a ring yet: the sender may send it to the
// stand-in.
const (
	HdrNotAfter = "X-Tide-Not-After"
	HdrRefused  = "X-Tide-Refused"
)

// refusal is an upload an owner refused whole (HdrRefused): it would
// have been newer than HdrNotAfter allows, or the owner is not in a ring.
type refusal struct{ err error }

func (e *refusal) Error() string { return e.err.Error() }
func (e *refusal) Unwrap() error { return e.err }

// errOwnerSilent says why a forward to an owner was given up on
// (chord.ErrSilent).
var errOwnerSilent = errors.New("the owner answered neither the upload nor a ping")

// forwardOrStandIn sends an upload to its owner, or to the owner's
// stand-in if the owner cannot be reached, or does not answer and is
// silent to a ping too (uploads up to standInBuffer).
func (n *Service) forwardOrStandIn(ctx context.Context, owner chord.Ref, name string, body io.Reader, size int64) (engine.Meta, error) {
	if size < 0 || size > standInBuffer {
		m, err := n.forwardTo(ctx, owner, name, body, size, chord.Ref{}, 0)
		var ns *notSent
		if errors.As(err, &ns) {
			return n.putElsewhere(ctx, owner, name, body, size, err)
		}
		return m, err
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(body, buf); err != nil {
		return engine.Meta{}, status.Errorf(http.StatusBadRequest, "receive %q: %v", name, err)
	}
	fctx, answered, stop := n.silenceGuard(ctx, owner)
	defer stop()
	notAfter := uint64(time.Now().Add(lateAfter).UnixNano())
	m, err := n.forwardTo(fctx, owner, name, bytes.NewReader(buf), size, chord.Ref{}, notAfter)
	answered()
	var ns *notSent
	switch {
	case err == nil:
		return m, nil
	case errors.As(err, &ns):
	case errors.Is(context.Cause(fctx), chord.ErrSilent) && ctx.Err() == nil:
		err = status.Errorf(http.StatusServiceUnavailable, "forward %q to owner %s: %v", name, owner.Addr(), errOwnerSilent)
	default:
		return m, err
	}
	return n.putElsewhere(ctx, owner, name, bytes.NewReader(buf), size, err)
}

// silenceGuard guards a request to node t: it is cancelled with
// chord.ErrSilent if t has answered neither it nor a ping sent after
// pingAfter by silentAfter (chord.Node.GuardSilence).
func (n *Service) silenceGuard(ctx context.Context, t chord.Ref) (gctx context.Context, answered, stop func()) {
	return n.ring.GuardSilence(ctx, t, pingAfter, silentAfter)
}

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
	standIn, err := n.standInFor(ctx, owner)
	switch {
	case err != nil:
		return engine.Meta{}, status.Errorf(http.StatusServiceUnavailable, "%v; and no stand-in found: %v", why, err)
	case standIn == owner:
		return engine.Meta{}, status.Errorf(http.StatusServiceUnavailable, "%v; the ring knows no other node for it", why)
	case standIn == n.ring.Self():
		return n.putStandIn(ctx, owner, name, body, size)
	}
	n.log.Debug("upload through a stand-in", "file", name, "owner", owner.String(), "stand_in", standIn.String(), "why", why)
	m, err := n.forwardTo(ctx, standIn, name, body, size, owner, 0)
	if err != nil {
		return m, fmt.Errorf("%v; through stand-in %s: %w", why, standIn.Addr(), err)
	}
	return m, nil
}

// standInFor finds owner's successor without asking owner (a lookup
// through the ring could: it may hang on a silent owner): the first node
// after it among those this node knows, then, for as long as that node's
// predecessor lies between owner and it, that predecessor.
func (n *Service) standInFor(ctx context.Context, owner chord.Ref) (chord.Ref, error) {
	s := n.ring.Snapshot()
	var known []chord.Ref
	for _, r := range append(append([]chord.Ref{s.Self, s.Pred}, s.Successors...), s.Fingers...) {
		if !r.IsZero() && r != owner {
			known = append(known, r)
		}
	}
	if len(known) == 0 {
		return chord.Ref{}, errors.New("no other node known")
	}
	c := chord.SuccessorAmong(known, owner.ID+1)
	for range 4 {
		p := s.Pred
		if c != s.Self {
			sctx, cancel := context.WithTimeout(ctx, 2*silentAfter)
			var err error
			p, _, err = n.rpc.State(sctx, c, chord.Ref{})
			cancel()
			if err != nil {
				return chord.Ref{}, fmt.Errorf("ask %s for its predecessor: %w", c.Addr(), err)
			}
		}
		if p.IsZero() || p == owner || !chord.Between(p.ID, owner.ID, c.ID) {
			return c, nil
		}
		c = p // a node between owner and c that this node did not know
	}
	return c, nil
}

// putStandIn stores an upload for owner, which its sender could not
// reach, and copies it to the rest of owner's replica set: owner itself,
// and this node's successors that follow it in that set.
func (n *Service) putStandIn(ctx context.Context, owner chord.Ref, name string, body io.Reader, size int64) (engine.Meta, error) {
	if err := n.acting(ctx); err != nil {
		return engine.Meta{}, err
	}
	m, err := n.store(name, body, size, n.clock.Next())
	if err != nil {
		return engine.Meta{}, err
	}
	if n.m.standIns != nil {
		n.m.standIns.Inc()
	}
	set := n.standInSet(owner)
	need := n.cfg.Replicas/2 + 1
	if acks := 1 + n.replicate(ctx, m, set[1:], need-1); acks < need {
		return m, status.Errorf(http.StatusServiceUnavailable, "%q stored on %d of %d replicas (standing in for its owner %s), %d needed; it will be re-replicated", name, acks, len(set), owner.Addr(), need)
	}
	return m, nil
}

// standInSet is owner's replica set as its stand-in sees it: itself, the
// owner, and its own successors that follow.
func (n *Service) standInSet(owner chord.Ref) []chord.Ref {
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
	return set
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

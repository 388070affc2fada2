package chord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Claims keep two nodes that join at the same moment from taking the same
// identifier. A joining node picks its identifier from what it sees of the
// ring (tide picks the middle of the largest range), and two nodes that
// look at the same moment see the same ring and pick the same one; neither
// is in the ring yet, so neither can tell. So before it joins, a node
// claims its identifier at the node that owns it, the identifier's
// successor, which both ask: the first claim holds for ClaimTicks, and a
// second node's claim of the same identifier is refused with ErrIDTaken
// meanwhile, so that it picks again (once the first has joined, it sees
// it) or fails clearly.

// claim is an identifier held for a joining node.
type claim struct {
	ref   Ref
	until uint64 // the tick it lapses at
}

// Claim answers a joining node's claim of its identifier r.ID: it holds
// the identifier for r for ClaimTicks and returns the zero Ref, or returns
// the node that holds or claimed it (this node, a node it lost touch
// with, or another joining node) and holds nothing. A node claiming again refreshes its claim.
func (n *Node) Claim(r Ref) Ref {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.self.ID == r.ID && n.self != r {
		return n.self
	}
	// The predecessor holds the identifier: a lookup that passed over it
	// (it is silent) found this node, which has not given up on it yet.
	if n.pred.ID == r.ID && !n.pred.IsZero() && n.pred != r {
		return n.pred
	}
	// A member this node lost touch with may still hold the identifier:
	// a node cut off from its ring sees only itself, and the middle of
	// its range is the identifier the first node to join it took. Two
	// members with one identifier would each own the other's keys.
	for _, c := range n.contacts {
		if c.ID == r.ID && c != r {
			return c
		}
	}
	for id, c := range n.claims {
		if c.until <= n.tick {
			delete(n.claims, id)
		}
	}
	if c, ok := n.claims[r.ID]; ok && c.ref != r {
		return c.ref
	}
	if n.claims == nil {
		n.claims = map[ID]claim{}
	}
	n.claims[r.ID] = claim{ref: r, until: n.tick + uint64(n.cfg.ClaimTicks)}
	return Ref{}
}

// ClaimID claims self's identifier for self in the ring via belongs to, at
// the identifier's successor there, which it returns. It fails with
// ErrIDTaken if a member of that ring holds the identifier, or another
// node claimed it to join and has not yet had ClaimTicks to.
func ClaimID(ctx context.Context, tr Transport, via, self Ref) (Ref, error) {
	s, err := tr.FindSuccessor(ctx, via, self.ID)
	if err != nil {
		return Ref{}, fmt.Errorf("join via %s: %w", via, err)
	}
	if s == self {
		// The ring still holds this node's previous incarnation (it
		// restarted before the others noticed it go). Taking that entry
		// as its successor would leave it alone on a ring of its own,
		// and its first walks would find a part of the ring: its
		// successor is the next node after it that via knows of.
		return nextAfter(ctx, tr, via, self)
	}
	if s.ID == self.ID {
		return Ref{}, fmt.Errorf("join via %s: %w (%s)", via, ErrIDTaken, s)
	}
	holder, err := tr.Claim(ctx, s, self)
	if err != nil {
		return Ref{}, fmt.Errorf("join via %s: claim identifier %d at %s: %w", via, self.ID, s, err)
	}
	if !holder.IsZero() {
		return Ref{}, fmt.Errorf("join via %s: %w (claimed by %s: a node joining at the same moment, or a member %s lost touch with)", via, ErrIDTaken, holder, s)
	}
	return s, nil
}

// nextAfter returns the node that follows self among via and the nodes
// via knows of (its predecessor and successor list), self left out.
func nextAfter(ctx context.Context, tr Transport, via, self Ref) (Ref, error) {
	pred, succs, err := tr.State(ctx, via, self)
	if err != nil {
		return Ref{}, fmt.Errorf("join via %s: its successors: %w", via, err)
	}
	best := Ref{}
	for _, c := range append([]Ref{via, pred}, succs...) {
		if c.IsZero() || c == self || c.ID == self.ID {
			continue
		}
		if best.IsZero() || uint32(c.ID-self.ID) < uint32(best.ID-self.ID) {
			best = c
		}
	}
	if best.IsZero() {
		return self, nil // via knows of no one else: a ring of this node alone
	}
	return best, nil
}

// ErrCutOff refuses a claim at a node that is alone in its ring while
// members it lost touch with (Contacts) may still be in one: a node that
// joined through it would make a second ring beside theirs, and the two
// would each own every key. The joining node retries; by then the cut-off
// node has found its ring again, or its contacts are gone.
var ErrCutOff = errors.New("chord: this node is alone in its ring but has lost touch with members that may still be in one; join through another member")

// contactProbe is how long a contact has to answer CutOff.
const contactProbe = 300 * time.Millisecond

// CutOff returns ErrCutOff, naming the contacts, if LiveContacts finds
// any: this node is alone in its ring and members it lost touch with may
// still be in one.
func (n *Node) CutOff(ctx context.Context) error {
	if addrs := n.LiveContacts(ctx); len(addrs) > 0 {
		return fmt.Errorf("%w (%s)", ErrCutOff, strings.Join(addrs, ", "))
	}
	return nil
}

// LiveContacts returns, if this node is alone in its ring, the addresses
// of the members it lost touch with (Contacts) that answer as members of a
// ring, or do not answer within contactProbe, asking them all at once. It
// returns none if the node is not alone, remembers no one, or every
// contact refuses the connection (it is down) or is in no ring (it left):
// then the node is all that is left of its ring, or a ring of one by
// design.
func (n *Node) LiveContacts(ctx context.Context) []string {
	n.mu.Lock()
	alone := !n.out && len(n.succ) > 0 && n.succ[0] == n.self
	contacts := slices.Clone(n.contacts)
	self := n.self
	n.mu.Unlock()
	if !alone || len(contacts) == 0 {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, contactProbe)
	defer cancel()
	live := make(chan string, len(contacts))
	for _, c := range contacts {
		go func() {
			_, _, err := n.tr.State(pctx, c, self)
			if contactGone(err) {
				live <- ""
			} else {
				live <- c.Addr()
			}
		}()
	}
	var addrs []string
	for range contacts {
		if a := <-live; a != "" {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// contactGone reports whether a call's error says its node is down (the
// connection was refused) or in no ring, rather than alive or silent.
func contactGone(err error) bool {
	return err != nil && (errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), ErrNotInRing.Error()))
}

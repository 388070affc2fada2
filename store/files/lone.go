package files

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"tide/chord"
	"tide/store/status"
)

// A node that has lost touch with every other member (cut off from them,
// or they are frozen) forgets them one by one and ends up alone in a ring
// of its own. There it owns every key, and as the only member of each
// replica set it would acknowledge an upload with one copy and serve its
// own copy of a file that the rest of the ring has overwritten since. So a
// node alone in its ring that remembers members it lost (chord Contacts)
// asks them first: one that answers as a member, or does not answer at
// all, may hold newer copies, and the node refuses to act as an owner
// until the ring has mended. Only when every such contact refuses the
// connection (it is down) or says it is in no ring (it left) does the
// node act alone: a ring of one by design, or all that is left of one.

// loneCheckFor is how long a verdict on the contacts stands.
const loneCheckFor = time.Second

// loneCheck caches the verdict of cutOff.
type loneCheck struct {
	mu  sync.Mutex
	at  time.Time
	key string // the contacts the verdict is about
	err error
}

// cutOff returns a refusal if this node is alone in its ring and may have
// lost touch with members that still hold data, nil if it may act as the
// owner of what it holds.
func (n *Service) cutOff(ctx context.Context) error {
	self := n.ring.Self()
	if n.ring.Successor(0) != self {
		return nil
	}
	contacts := n.ring.Contacts()
	if len(contacts) == 0 {
		return nil
	}
	var b strings.Builder
	for _, c := range contacts {
		b.WriteString(c.Addr())
		b.WriteByte(' ')
	}
	key := b.String()
	n.lone.mu.Lock()
	defer n.lone.mu.Unlock()
	if n.lone.key == key && time.Since(n.lone.at) < loneCheckFor {
		return n.lone.err
	}
	n.lone.err = n.probeContacts(ctx, self)
	n.lone.key, n.lone.at = key, time.Now()
	return n.lone.err
}

// probeContacts refuses if any contact may still be in a ring
// (chord.Node.LiveContacts).
func (n *Service) probeContacts(ctx context.Context, self chord.Ref) error {
	live := n.ring.LiveContacts(ctx)
	if len(live) == 0 {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return &refusal{status.Errorf(http.StatusServiceUnavailable, "node %s is alone in its ring but has lost touch with %s, which may hold newer copies: it acts as no file's owner until the ring mends; try another node", self.Addr(), strings.Join(live, ", "))}
}

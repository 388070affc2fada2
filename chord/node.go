package chord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Transport is how a Node reaches other nodes. Production uses msgpack-rpc
// (package chord/rpc); tests use the in-memory network in package sim.
// Every call is one request and one reply on the wire.
type Transport interface {
	// FindSuccessor asks node to for the successor of id.
	FindSuccessor(ctx context.Context, to Ref, id ID) (Ref, error)
	// State asks node to for its predecessor and successor list. from is the
	// caller, which lets to count the call as a sign of life from its
	// predecessor instead of pinging it separately.
	State(ctx context.Context, to, from Ref) (pred Ref, succs []Ref, err error)
	// Notify tells node to that self might be its predecessor.
	Notify(ctx context.Context, to, self Ref) error
	// Ping checks that node to is alive.
	Ping(ctx context.Context, to Ref) error
	// Leave tells node to that leaver is leaving the ring; pred and succs are
	// the leaver's neighbours, which to adopts in its place.
	Leave(ctx context.Context, to, leaver, pred Ref, succs []Ref) error
	// Claim asks node to, the successor of self.ID, to hold that
	// identifier for self while it joins (see Node.Claim). It returns the
	// zero Ref if to did, else the node that holds or claimed it.
	Claim(ctx context.Context, to, self Ref) (Ref, error)
}

// Config configures a Node. The zero value of every field but Self takes the
// default noted beside it.
type Config struct {
	// Self is this node's address and identifier.
	Self Ref
	// Successors is r, the length of the successor list. Up to r-1
	// simultaneous failures of consecutive nodes are survived. Default 3.
	Successors int
	// StabilizeTicks runs stabilize every this many ticks. Default 1.
	StabilizeTicks int
	// FixFingerTicks runs fix_fingers every this many ticks; each run
	// refreshes the fingers that need no message and at most one that does.
	// Fingers only speed lookups up (a dead finger is skipped), so they are
	// refreshed at a quarter of the stabilize rate. Default 4.
	FixFingerTicks int
	// PredecessorTimeoutTicks is how long the predecessor may stay silent
	// before it is pinged. A predecessor that stabilizes against us proves it
	// is alive, so a healthy ring sends no pings. Default 3.
	PredecessorTimeoutTicks int
	// ReconcileTicks runs, every this many ticks, a lookup of this node's own
	// successor through a remembered contact, adopting the answer if it is
	// closer than the current successor. This merges rings that message loss
	// split apart, which stabilize alone cannot. Default 30.
	ReconcileTicks int
	// FailureLimit is how many calls in a row must fail before a node is
	// taken for dead and forgotten. One lost message is not a crash.
	// Default 3.
	FailureLimit int
	// ClaimTicks is how long this node holds an identifier that a joining
	// node claimed (ClaimID) against other nodes claiming it: long enough
	// for that node to join and be seen in the ring. Default 60.
	ClaimTicks int
	// SilentHop, if set, bounds a lookup's wait on a hop that does not
	// answer: after a sixth of it the hop is pinged, and if it has
	// answered neither the call nor the ping after SilentHop (frozen, or
	// cut off under an open connection), the lookup moves on as if the
	// call had failed. A hop that answers the ping is waited for (its own
	// lookup may be hopping). Zero waits for the call's deadline.
	SilentHop time.Duration
	// Idle starts the node outside any ring, as the course's ./chord IP
	// PORT does: it serves lookups and does periodic work only once Create
	// or Join has made it a member.
	Idle bool
}

func (c *Config) validate() error {
	if c.Self.IsZero() {
		return errors.New("chord: Config.Self is empty")
	}
	if c.Successors == 0 {
		c.Successors = 3
	}
	if c.Successors < 1 || c.Successors > 64 {
		return fmt.Errorf("chord: successor list length %d out of range [1, 64]", c.Successors)
	}
	if c.StabilizeTicks <= 0 {
		c.StabilizeTicks = 1
	}
	if c.FixFingerTicks <= 0 {
		c.FixFingerTicks = 4
	}
	if c.PredecessorTimeoutTicks <= 0 {
		c.PredecessorTimeoutTicks = 3
	}
	if c.ReconcileTicks <= 0 {
		c.ReconcileTicks = 30
	}
	if c.FailureLimit <= 0 {
		c.FailureLimit = 3
	}
	if c.ClaimTicks <= 0 {
		c.ClaimTicks = 60
	}
	return nil
}

// ErrIDTaken is returned by Join and ClaimID when another node already
// holds this node's identifier, or claimed it to join at the same moment.
var ErrIDTaken = errors.New("chord: identifier already taken by another node")

// ErrNoRoute is returned by FindSuccessor when every candidate hop failed.
var ErrNoRoute = errors.New("chord: no live node to route the lookup through")

// ErrNotInRing is returned by a node that is not a member of any ring: it
// started idle and has not been told to create or join one, or it left.
var ErrNotInRing = errors.New("chord: this node is not in a ring (create or join one first)")

// Node is one member of a Chord ring.
type Node struct {
	cfg Config
	tr  Transport

	mu        sync.Mutex
	self      Ref
	pred      Ref
	succ      []Ref // never empty; succ[0] == self when alone
	finger    [Bits]Ref
	next      int         // next finger to refresh
	tick      uint64      // ticks seen
	predHeard uint64      // tick at which the predecessor last showed life
	epoch     uint64      // bumped whenever pred or succ change
	failures  map[Ref]int // consecutive failed calls per node
	// contacts are nodes this node once knew and lost: the join target and
	// forgotten successors and predecessors. A node that finds itself cut
	// off from every other node retries them instead of carrying on as a
	// ring of one, and refuses their identifiers to joining nodes (Claim).
	contacts []Ref
	// claims are identifiers held for nodes about to join (claim.go).
	claims map[ID]claim
	// out is set while the node is not a member of a ring: it started
	// idle, or it has handed its place to its neighbours (Leave). It does
	// no periodic work then (stabilizing would announce it to its old
	// neighbours again) and answers no lookups.
	out bool
}

const maxContacts = 8

// Contacts returns the nodes this node once knew and lost (the join
// target and forgotten successors), oldest first.
func (n *Node) Contacts() []Ref {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.contacts)
}

func (n *Node) rememberLocked(r Ref) {
	if r.IsZero() || r == n.self {
		return
	}
	n.contacts = slices.DeleteFunc(n.contacts, func(c Ref) bool { return c == r })
	n.contacts = append(n.contacts, r)
	if len(n.contacts) > maxContacts {
		n.contacts = n.contacts[1:]
	}
}

// NewNode returns a node that is alone in its own ring, as after create(),
// or with Config.Idle a node outside any ring.
func NewNode(cfg Config, tr Transport) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, tr: tr, self: cfg.Self, failures: map[Ref]int{}, out: cfg.Idle}
	n.succ = []Ref{cfg.Self}
	return n, nil
}

// Self returns this node's Ref.
func (n *Node) Self() Ref {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.self
}

// InRing reports whether the node is a member of a ring: it created or
// joined one and has not left it.
func (n *Node) InRing() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.out
}

// SetID gives a node that is not in a ring a new identifier, which it
// takes into the ring it creates or joins next.
func (n *Node) SetID(id ID) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.out {
		return fmt.Errorf("chord: cannot change the identifier of %s while it is in a ring", n.self)
	}
	n.self.ID = id
	n.cfg.Self = n.self
	n.pred = Ref{}
	n.succ = []Ref{n.self}
	n.finger = [Bits]Ref{}
	n.epoch++
	return nil
}

// Config returns the node's configuration with defaults filled in.
func (n *Node) Config() Config { return n.cfg }

// Create starts a new ring containing only this node. The contacts of any
// ring it was in before are forgotten: it must not merge back into it.
func (n *Node) Create() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.pred = Ref{}
	n.succ = []Ref{n.self}
	n.finger = [Bits]Ref{}
	n.contacts = nil
	n.out = false
	n.epoch++
}

// Join makes this node a member of the ring that via belongs to, once
// its identifier's successor there has granted its claim (ClaimID). Its
// contacts are via alone from then on: those of a ring it was in before
// must not pull it back there.
func (n *Node) Join(ctx context.Context, via Ref) error {
	self := n.Self()
	s, err := ClaimID(ctx, n.tr, via, self)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.pred = Ref{}
	n.succ = []Ref{s}
	n.finger = [Bits]Ref{}
	n.contacts = nil
	n.rememberLocked(via)
	n.out = false
	n.epoch++
	n.mu.Unlock()
	n.Stabilize(ctx)
	return nil
}

// FindSuccessor returns the node that succeeds id on the ring, forwarding
// the question to the closest preceding node it knows of. A hop that fails
// is forgotten and the next-best hop is tried.
func (n *Node) FindSuccessor(ctx context.Context, id ID) (Ref, error) {
	var skip []Ref
	for attempt := 0; attempt < Bits; attempt++ {
		n.mu.Lock()
		if n.out {
			n.mu.Unlock()
			return Ref{}, ErrNotInRing
		}
		s := n.firstSuccessorLocked(skip)
		if InHalfOpen(id, n.self.ID, s.ID) {
			n.mu.Unlock()
			return s, nil
		}
		hop := n.closestPrecedingLocked(id, skip)
		n.mu.Unlock()
		if hop == n.self {
			// Every node that could route this lookup has failed; guessing
			// would hand out a wrong owner.
			return Ref{}, ErrNoRoute
		}
		r, err := n.askHop(ctx, hop, id)
		if err == nil {
			n.succeeded(hop)
			return r, nil
		}
		if ctx.Err() != nil {
			return Ref{}, ctx.Err()
		}
		n.Failed(hop)
		skip = append(skip, hop)
	}
	return Ref{}, ErrNoRoute
}

// ErrSilent is the cause of a call GuardSilence gave up on: the node
// answered neither it nor a ping.
var ErrSilent = errors.New("chord: node answered neither the call nor a ping")

// GuardSilence returns a context for a call to node t that is cancelled
// with ErrSilent if answered has not been called within pingAfter, t
// does not answer a ping sent then either, and answered has still not
// been called by giveUpAfter (no sooner, even when the ping fails at
// once: a caller may rely on the call's having had that long). A node
// that is up answers a ping at once, even while its answer to the call
// takes long, so this tells a slow node, which is waited for, from a
// frozen or cut-off one. Once answered has returned, the call is never
// cancelled as silent (its answer may still be streaming in); stop
// releases the guard.
func (n *Node) GuardSilence(ctx context.Context, t Ref, pingAfter, giveUpAfter time.Duration) (gctx context.Context, answered, stop func()) {
	gctx, cancel := context.WithCancelCause(ctx)
	var mu sync.Mutex
	said := false
	start := time.Now()
	timer := time.AfterFunc(pingAfter, func() {
		pctx, pcancel := context.WithTimeout(gctx, max(giveUpAfter-pingAfter, 0))
		err := n.tr.Ping(pctx, t)
		pcancel()
		if err == nil || gctx.Err() != nil {
			return
		}
		if rest := giveUpAfter - time.Since(start); rest > 0 {
			w := time.NewTimer(rest)
			defer w.Stop()
			select {
			case <-w.C:
			case <-gctx.Done():
				return
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if !said {
			cancel(ErrSilent)
		}
	})
	answered = func() {
		mu.Lock()
		said = true
		mu.Unlock()
		timer.Stop()
	}
	return gctx, answered, func() { answered(); cancel(nil) }
}

// askHop asks hop for the successor of id, giving up on a silent hop
// (Config.SilentHop).
func (n *Node) askHop(ctx context.Context, hop Ref, id ID) (r Ref, err error) {
	err = n.guard(ctx, hop, func(ctx context.Context) error {
		r, err = n.tr.FindSuccessor(ctx, hop, id)
		return err
	})
	return r, err
}

// guard runs call against node t, giving up on it as askHop does on a
// silent hop (Config.SilentHop): the error then wraps ErrSilent. A node
// that is frozen (SIGSTOP, docker pause) or cut off under an open
// connection holds a call until the caller's deadline, and a call cut
// short by the caller's own deadline counts as no failure of t: without
// the guard, periodic work would keep a frozen neighbour for as long as
// it stayed frozen.
func (n *Node) guard(ctx context.Context, t Ref, call func(context.Context) error) error {
	d := n.cfg.SilentHop
	if d <= 0 {
		return call(ctx)
	}
	gctx, answered, stop := n.GuardSilence(ctx, t, d/6, d)
	defer stop()
	err := call(gctx)
	answered()
	if err != nil && errors.Is(context.Cause(gctx), ErrSilent) {
		err = fmt.Errorf("%w: %v", ErrSilent, err)
	}
	return err
}

// firstSuccessorLocked returns the first successor not in skip.
func (n *Node) firstSuccessorLocked(skip []Ref) Ref {
	for _, s := range n.succ {
		if !containsRef(skip, s) {
			return s
		}
	}
	return n.succ[0]
}

// Failed records a failed call to r; after FailureLimit failures in a row r
// is forgotten.
func (n *Node) Failed(r Ref) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.failures[r]++
	if n.failures[r] >= n.cfg.FailureLimit {
		delete(n.failures, r)
		n.forgetLocked(r)
	}
}

func (n *Node) succeeded(r Ref) {
	n.mu.Lock()
	delete(n.failures, r)
	n.mu.Unlock()
}

// closestPrecedingLocked returns the known node that most closely precedes
// id, drawing on both the finger table and the successor list.
func (n *Node) closestPrecedingLocked(id ID, skip []Ref) Ref {
	best := n.self
	consider := func(c Ref) {
		if c.IsZero() || c == n.self || !Between(c.ID, n.self.ID, id) || containsRef(skip, c) {
			return
		}
		if best == n.self || Between(c.ID, best.ID, id) {
			best = c
		}
	}
	for _, f := range n.finger {
		consider(f)
	}
	for _, s := range n.succ {
		consider(s)
	}
	return best
}

// Forget drops a node believed dead from the successor list, the finger
// table and the predecessor.
func (n *Node) Forget(r Ref) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.forgetLocked(r)
}

func (n *Node) forgetLocked(r Ref) {
	if r == n.self {
		return
	}
	kept := n.succ[:0:0]
	for _, s := range n.succ {
		if s != r {
			kept = append(kept, s)
		} else {
			n.rememberLocked(s)
		}
	}
	if len(kept) != len(n.succ) {
		n.epoch++
	}
	for i := range n.finger {
		if n.finger[i] == r {
			n.finger[i] = Ref{}
		}
	}
	if len(kept) == 0 {
		// Fall back on the nearest finger, then the predecessor, so that a
		// node does not split off into a ring of its own.
		kept = []Ref{n.self}
		for _, f := range n.finger {
			if !f.IsZero() && f != n.self {
				kept[0] = f
				break
			}
		}
		if kept[0] == n.self && !n.pred.IsZero() && n.pred != r {
			kept[0] = n.pred
		}
	}
	n.succ = kept
	if n.pred == r {
		// A predecessor lost is remembered as a successor lost is: its
		// successor is the node a joining node claims its identifier
		// at, and must refuse it while it may come back (Claim).
		n.rememberLocked(r)
		n.pred = Ref{}
		n.epoch++
	}
}

// Stabilize learns the successor's predecessor and successor list, adopts a
// closer successor if one joined, and notifies the successor of this node.
// It costs one message when nothing changed, two when something did.
func (n *Node) Stabilize(ctx context.Context) {
	for attempt := 0; attempt <= n.cfg.Successors; attempt++ {
		n.mu.Lock()
		if n.out {
			n.mu.Unlock()
			return
		}
		self := n.self
		s := n.succ[0]
		if s == n.self {
			if n.pred.IsZero() || n.pred == n.self {
				var c Ref
				if len(n.contacts) > 0 {
					c = n.contacts[int(n.tick)%len(n.contacts)]
				}
				n.mu.Unlock()
				if !c.IsZero() {
					n.rejoin(ctx, c)
				}
				return
			}
			// A node alone in its ring that has been notified by another
			// makes that node its successor: this closes a ring of two.
			n.succ = []Ref{n.pred}
			n.epoch++
			s = n.pred
		}
		n.mu.Unlock()

		var p Ref
		var list []Ref
		err := n.guard(ctx, s, func(ctx context.Context) (err error) {
			p, list, err = n.tr.State(ctx, s, self)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			n.Failed(s)
			if n.Successor(0) == s {
				return // not yet given up on; try again next period
			}
			continue
		}
		n.succeeded(s)
		n.mu.Lock()
		if n.succ[0] != s {
			// The successor changed while we asked (a leave or a notify
			// arrived); this answer describes a neighbourhood we no longer
			// have, and adopting it could bring back a departed node.
			n.mu.Unlock()
			return
		}
		cand := make([]Ref, 0, len(list)+2)
		if !p.IsZero() && p != n.self && Between(p.ID, n.self.ID, s.ID) {
			cand = append(cand, p)
		}
		cand = append(cand, s)
		cand = append(cand, list...)
		newSucc := n.successorListLocked(cand)
		if !sameRefs(newSucc, n.succ) {
			n.succ = newSucc
			n.epoch++
		}
		target := n.succ[0]
		notify := target != n.self && (target != s || p != n.self)
		n.mu.Unlock()
		if notify {
			if err := n.guard(ctx, target, func(ctx context.Context) error { return n.tr.Notify(ctx, target, self) }); err != nil && ctx.Err() == nil {
				n.Failed(target)
			}
		}
		return
	}
}

// rejoin asks contact via for this node's successor and adopts the answer
// if it is closer than the successor this node has.
func (n *Node) rejoin(ctx context.Context, via Ref) {
	self := n.Self()
	s, err := n.askHop(ctx, via, self.ID+1)
	if err != nil || s == self || s.ID == self.ID {
		return
	}
	n.mu.Lock()
	if cur := n.succ[0]; cur == n.self || Between(s.ID, n.self.ID, cur.ID) {
		n.succ = n.successorListLocked(append([]Ref{s}, n.succ...))
		n.epoch++
	}
	n.mu.Unlock()
}

// reconcile runs rejoin through the next remembered contact.
func (n *Node) reconcile(ctx context.Context) {
	n.mu.Lock()
	var c Ref
	if len(n.contacts) > 0 {
		c = n.contacts[int(n.tick/uint64(n.cfg.ReconcileTicks))%len(n.contacts)]
	}
	n.mu.Unlock()
	if !c.IsZero() {
		n.rejoin(ctx, c)
	}
}

// successorListLocked turns candidates into a successor list: no
// duplicates, no self, at most r entries, never empty.
func (n *Node) successorListLocked(cand []Ref) []Ref {
	out := make([]Ref, 0, n.cfg.Successors)
	for _, c := range cand {
		if c.IsZero() || c == n.self || containsRef(out, c) {
			continue
		}
		out = append(out, c)
		if len(out) == n.cfg.Successors {
			break
		}
	}
	if len(out) == 0 {
		out = append(out, n.self)
	}
	return out
}

// Notify handles a node's claim to be this node's predecessor.
func (n *Node) Notify(from Ref) {
	if from.IsZero() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if from == n.self {
		return
	}
	if n.pred.IsZero() || Between(from.ID, n.pred.ID, n.self.ID) {
		n.pred = from
		n.epoch++
	}
	if from == n.pred {
		n.predHeard = n.tick
	}
	if n.succ[0] == n.self {
		n.succ = []Ref{from}
		n.epoch++
	}
}

// State answers a State call: the predecessor and the successor list. A call
// from the predecessor counts as a sign of its life.
func (n *Node) State(from Ref) (Ref, []Ref) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !from.IsZero() && from == n.pred {
		n.predHeard = n.tick
	}
	return n.pred, append([]Ref(nil), n.succ...)
}

// HandleLeave handles the departure of leaver, whose neighbours were pred
// and succs.
func (n *Node) HandleLeave(leaver, pred Ref, succs []Ref) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if leaver == n.self {
		return
	}
	if n.pred == leaver {
		n.pred = Ref{}
		if pred != n.self {
			n.pred = pred
		}
		n.predHeard = n.tick
		n.epoch++
	}
	if n.succ[0] == leaver {
		n.succ = n.successorListLocked(append(append([]Ref(nil), succs...), n.succ[1:]...))
		n.epoch++
	}
	n.forgetLocked(leaver)
	// Gone for good, not lost: its identifier is free (Claim).
	n.contacts = slices.DeleteFunc(n.contacts, func(c Ref) bool { return c == leaver })
}

// Leave hands this node's place in the ring to its neighbours: the
// predecessor adopts its successors and the successor adopts its
// predecessor. From then on the node is out of the ring: it answers no
// lookups (ErrNotInRing), so nodes that still point at it skip it, until
// Create or Join makes it a member again.
func (n *Node) Leave(ctx context.Context) error {
	n.mu.Lock()
	n.out = true
	self, pred, succs := n.self, n.pred, append([]Ref(nil), n.succ...)
	n.mu.Unlock()
	var errs []error
	if succs[0] != self {
		if err := n.tr.Leave(ctx, succs[0], self, pred, succs); err != nil {
			errs = append(errs, fmt.Errorf("tell successor %s: %w", succs[0], err))
		}
	}
	if !pred.IsZero() && pred != self && pred != succs[0] {
		if err := n.tr.Leave(ctx, pred, self, pred, succs); err != nil {
			errs = append(errs, fmt.Errorf("tell predecessor %s: %w", pred, err))
		}
	}
	return errors.Join(errs...)
}

// Unleave undoes Leave's stop of periodic work: the node stabilizes again
// and so finds its way back into the ring.
func (n *Node) Unleave() {
	n.mu.Lock()
	n.out = false
	n.mu.Unlock()
}

// CheckPredecessor pings the predecessor and forgets it if it does not answer.
func (n *Node) CheckPredecessor(ctx context.Context) {
	n.mu.Lock()
	p := n.pred
	n.mu.Unlock()
	if p.IsZero() || p == n.self {
		return
	}
	if err := n.guard(ctx, p, func(ctx context.Context) error { return n.tr.Ping(ctx, p) }); err != nil {
		if ctx.Err() == nil {
			n.Failed(p)
		}
		return
	}
	n.succeeded(p)
	n.mu.Lock()
	if n.pred == p {
		n.predHeard = n.tick
	}
	n.mu.Unlock()
}

// FixFingers refreshes finger table entries. Entries whose start falls before
// the successor or an already-known finger are filled locally for free;
// at most one entry per call costs a lookup.
func (n *Node) FixFingers(ctx context.Context) {
	for range Bits {
		n.mu.Lock()
		i := n.next
		n.next = (n.next + 1) % Bits
		start := n.self.ID + ID(uint32(1)<<uint(i))
		s := n.succ[0]
		if InHalfOpen(start, n.self.ID, s.ID) {
			n.finger[i] = s
			n.mu.Unlock()
			continue
		}
		if i > 0 && !n.finger[i-1].IsZero() && InHalfOpen(start, n.self.ID, n.finger[i-1].ID) {
			n.finger[i] = n.finger[i-1]
			n.mu.Unlock()
			continue
		}
		n.mu.Unlock()
		r, err := n.FindSuccessor(ctx, start)
		if err == nil {
			n.mu.Lock()
			n.finger[i] = r
			n.mu.Unlock()
		}
		return
	}
}

// Tick advances the node's clock by one period and runs whatever periodic
// work is due.
func (n *Node) Tick(ctx context.Context) {
	n.mu.Lock()
	if n.out {
		n.mu.Unlock()
		return
	}
	n.tick++
	t := n.tick
	silent := !n.pred.IsZero() && t-n.predHeard >= uint64(n.cfg.PredecessorTimeoutTicks)
	n.mu.Unlock()
	if t%uint64(n.cfg.StabilizeTicks) == 0 {
		n.Stabilize(ctx)
	}
	if t%uint64(n.cfg.FixFingerTicks) == 0 {
		n.FixFingers(ctx)
	}
	if silent {
		n.CheckPredecessor(ctx)
	}
	if t%uint64(n.cfg.ReconcileTicks) == 0 {
		n.reconcile(ctx)
	}
}

// Snapshot is a copy of a node's view of the ring.
type Snapshot struct {
	Self       Ref
	Pred       Ref
	Successors []Ref
	Fingers    []Ref // distinct, in finger order
	Epoch      uint64
}

// Snapshot returns the node's current view of the ring.
func (n *Node) Snapshot() Snapshot {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := Snapshot{Self: n.self, Pred: n.pred, Successors: append([]Ref(nil), n.succ...), Epoch: n.epoch}
	for _, f := range n.finger {
		if !f.IsZero() && !containsRef(s.Fingers, f) {
			s.Fingers = append(s.Fingers, f)
		}
	}
	return s
}

// Epoch counts changes to the predecessor and successor list, so a caller
// can tell cheaply whether the neighbourhood moved.
func (n *Node) Epoch() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.epoch
}

// Predecessor returns the current predecessor, or the zero Ref.
func (n *Node) Predecessor() Ref {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pred
}

// Successors returns a copy of the successor list.
func (n *Node) Successors() []Ref {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Ref(nil), n.succ...)
}

// Successor returns entry i of the successor list, or the zero Ref.
func (n *Node) Successor(i int) Ref {
	n.mu.Lock()
	defer n.mu.Unlock()
	if i < 0 || i >= len(n.succ) {
		return Ref{}
	}
	return n.succ[i]
}

// Owns reports whether key falls in (predecessor, self]. A node without a
// predecessor claims nothing but its own identifier, unless it is alone.
func (n *Node) Owns(key ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.pred.IsZero() {
		return n.succ[0] == n.self || key == n.self.ID
	}
	return InHalfOpen(key, n.pred.ID, n.self.ID)
}

func containsRef(list []Ref, r Ref) bool {
	for _, x := range list {
		if x == r {
			return true
		}
	}
	return false
}

func sameRefs(a, b []Ref) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

package paxos

import (
	"math"
	"math/rand/v2"
	"slices"
)

// ReadMode says how a client reads.
type ReadMode uint8

const (
	// ReadThroughLog orders reads in the log like writes.
	ReadThroughLog ReadMode = iota
	// ReadQuorum reads without the leader (paper §3.4): ask acceptors for
	// the largest slot they accepted, then have a replica execute the read
	// once it has executed through that slot.
	ReadQuorum
)

type readPhase uint8

const (
	readMatch  readPhase = iota // learning the live configurations
	readSlots                   // asking acceptors for their largest slot
	readAtSlot                  // a replica executes the read
)

type call struct {
	cmd    Command
	read   bool
	sentAt int
	tries  int // resends so far: each waits twice as long (backoff)
	// to is the batcher or replica last asked: a resend goes to another
	// one, as that one may be down or paused.
	to string
	// quorum reads
	phase   readPhase
	votes   map[string]bool // matchmakers or acceptors that answered
	maxSlot uint64
}

// Completion is a finished command.
type Completion struct {
	Seq    uint64
	Result []byte
	Err    string // the replicas refused the command (Reply.Err)
}

// Client submits commands and retries them, with the same sequence number,
// until a reply arrives; replicas apply each (client, seq) once.
//
// A quorum read must see every write completed before it started. The
// client reads from every acceptor configuration still live, as the
// matchmakers list them, and needs both a read and a write quorum of every
// group: the read quorum meets the write quorum of any chosen slot, and the
// write quorum meets the read quorum of any newer round's phase 1, so an
// acceptor's promise shows the client when a newer round (perhaps with new
// acceptors) has begun. It then asks the matchmakers again.
type Client struct {
	outbox
	membership
	id      uint64
	now     int
	seq     uint64
	rng     *rand.Rand
	calls   map[uint64]*call
	leader  string
	hinted  bool // the current leader came from a NotLeader hint
	done    []Completion
	logged  bool // a command went through the log
	Retries int
	// lastQuery is when the client last asked for a newer configuration.
	lastQuery int

	// the live acceptor configurations, for quorum reads
	live      []RoundConfig
	liveTop   Ballot // the newest round among them
	liveKnown bool
	mmRounds  map[Ballot]RoundConfig
	mmRetired Ballot
	mmEpoch   uint64
}

// NewClient returns a client with a unique id whose replies go to self.
func NewClient(cfg Config, self string, id uint64) *Client {
	c := &Client{outbox: outbox{self: self}, id: id, calls: map[uint64]*call{},
		rng: rand.New(rand.NewPCG(id, 99))}
	c.adopt(&c.outbox, cfg)
	c.leader = c.cfg.Leaders[0]
	c.resetLive()
	return c
}

// ID returns the client's id.
func (c *Client) ID() uint64 { return c.id }

// Config returns the newest configuration the client knows.
func (c *Client) Config() Config { return c.cfg }

func (c *Client) resetLive() {
	c.liveKnown = false
	c.live = nil
	if len(c.cfg.Matchmakers) == 0 {
		// Acceptor groups never change: they are the only configuration.
		c.live = []RoundConfig{{Epoch: c.cfg.Epoch, Groups: c.cfg.Groups}}
		c.liveKnown = true
	}
}

// Propose submits a command through the log and returns its sequence
// number.
func (c *Client) Propose(op []byte) uint64 {
	c.seq++
	cl := &call{cmd: Command{Client: c.id, Seq: c.seq, Op: op, ReplyTo: c.self, First: !c.logged}}
	c.logged = true
	c.calls[c.seq] = cl
	c.sendWrite(cl)
	return c.seq
}

// Read submits a read-only command, through the log or by quorum read.
func (c *Client) Read(op []byte, mode ReadMode) uint64 {
	if mode == ReadThroughLog {
		return c.Propose(op)
	}
	c.seq++
	cl := &call{cmd: Command{Client: c.id, Seq: c.seq, Op: op, ReplyTo: c.self}, read: true}
	c.calls[c.seq] = cl
	c.sendRead(cl)
	return c.seq
}

func (c *Client) sendWrite(cl *call) {
	cl.sentAt = c.now
	if len(c.cfg.Batchers) > 0 {
		cl.to = c.pickOther(c.cfg.Batchers, cl.to)
		c.send(Message{Kind: KindRequest, To: cl.to, Command: cl.cmd, Pending: uint32(min(len(c.calls), math.MaxUint32))})
		return
	}
	c.send(Message{Kind: KindRequest, To: c.leader, Command: cl.cmd})
}

// sendRead starts (or restarts) a quorum read.
func (c *Client) sendRead(cl *call) {
	cl.sentAt = c.now
	cl.maxSlot = 0
	cl.votes = map[string]bool{}
	if !c.liveKnown {
		cl.phase = readMatch
		c.mmRounds = map[Ballot]RoundConfig{}
		c.mmRetired, c.mmEpoch = Ballot{}, 0
		for _, mm := range c.cfg.Matchmakers {
			c.send(Message{Kind: KindMatchQuery, To: mm, Command: Command{Client: c.id, Seq: cl.cmd.Seq}})
		}
		return
	}
	cl.phase = readSlots
	for _, a := range c.liveAcceptors() {
		c.send(Message{Kind: KindMaxSlotRequest, To: a, Command: Command{Client: c.id, Seq: cl.cmd.Seq}})
	}
}

func (c *Client) liveAcceptors() []string {
	var out []string
	for _, rc := range c.live {
		for _, g := range rc.Groups {
			for _, a := range g.Acceptors {
				if !slices.Contains(out, a) {
					out = append(out, a)
				}
			}
		}
	}
	return out
}

// Step handles one message.
func (c *Client) Step(m Message) {
	if next, handled := c.gossip(&c.outbox, c.now, m); handled {
		if next != nil && c.adopt(&c.outbox, *next) {
			if !slices.Contains(c.cfg.Leaders, c.leader) {
				c.leader = c.cfg.Leaders[0]
			}
			if len(c.cfg.Matchmakers) == 0 {
				c.resetLive()
			}
			// Calls overdue were likely sent to roles that have left:
			// send them again at once, on the new routes, their backoff
			// reset.
			base := 2 * c.cfg.ResendTicks
			for _, seq := range keysWhere(c.calls, func(cl *call) bool { return c.now-cl.sentAt >= base }) {
				cl := c.calls[seq]
				cl.tries = 0
				c.resend(cl)
			}
		}
		return
	}
	switch m.Kind {
	case KindReply:
		if _, ok := c.calls[m.Reply.Seq]; ok && m.Reply.Client == c.id {
			delete(c.calls, m.Reply.Seq)
			c.done = append(c.done, Completion{Seq: m.Reply.Seq, Result: m.Reply.Result, Err: m.Reply.Err})
		}
	case KindNotLeader:
		c.leader = nextLeader(c.cfg.Leaders, m.Leader, c.leader)
		c.hinted = m.Leader != ""
	case KindMatchReply:
		c.onMatchReply(m)
	case KindMaxSlotReply:
		c.onMaxSlot(m)
	}
}

func (c *Client) onMatchReply(m Message) {
	cl, ok := c.calls[m.Command.Seq]
	if !ok || !cl.read || cl.phase != readMatch || !slices.Contains(c.cfg.Matchmakers, m.From) {
		return
	}
	cl.votes[m.From] = true
	for _, rc := range m.Rounds {
		c.mmRounds[rc.Ballot] = rc
	}
	if c.mmRetired.Less(m.Retired) {
		c.mmRetired = m.Retired
	}
	c.mmEpoch = max(c.mmEpoch, m.RetiredEpoch)
	if len(cl.votes) < c.cfg.matchQuorum() {
		return
	}
	c.live, c.liveTop = nil, Ballot{}
	for _, b := range sortedBallots(c.mmRounds) {
		rc := c.mmRounds[b]
		if b.Less(c.mmRetired) || rc.Epoch < c.mmEpoch {
			continue
		}
		c.liveTop = b
		if !slices.ContainsFunc(c.live, func(x RoundConfig) bool { return groupsEqual(x.Groups, rc.Groups) }) {
			c.live = append(c.live, rc)
		}
	}
	if len(c.live) == 0 {
		// No round has started: nothing was ever written.
		c.live = []RoundConfig{{Groups: c.cfg.Groups}}
	}
	c.liveKnown = true
	c.sendRead(cl)
}

func (c *Client) onMaxSlot(m Message) {
	cl, ok := c.calls[m.Command.Seq]
	if !ok || !cl.read || cl.phase != readSlots {
		return
	}
	if len(c.cfg.Matchmakers) > 0 && c.liveTop.Less(m.Ballot) {
		// A newer round has begun, perhaps with other acceptors: ask the
		// matchmakers again.
		c.liveKnown = false
		c.sendRead(cl)
		return
	}
	cl.votes[m.From] = true
	cl.maxSlot = max(cl.maxSlot, m.Slot)
	for _, rc := range c.live {
		for _, g := range rc.Groups {
			if !g.IsReadQuorum(cl.votes) || (len(c.cfg.Matchmakers) > 0 && !g.IsWriteQuorum(cl.votes)) {
				return
			}
		}
	}
	cl.phase = readAtSlot
	cl.to = c.pickOther(c.cfg.Replicas, cl.to)
	c.send(Message{Kind: KindRead, To: cl.to, Slot: cl.maxSlot, Command: cl.cmd})
}

// pickOther picks one of roles at random, other than prev when there is
// another.
func (c *Client) pickOther(roles []string, prev string) string {
	if prev == "" || len(roles) < 2 || !slices.Contains(roles, prev) {
		return roles[c.rng.IntN(len(roles))]
	}
	r := roles[c.rng.IntN(len(roles)-1)]
	if r == prev {
		r = roles[len(roles)-1]
	}
	return r
}

// Tick retries calls that have waited twice ResendTicks, and then twice as
// long again each time (backoff): a saturated log then gets fewer copies
// of commands it has not yet had time to answer, instead of more.
func (c *Client) Tick() {
	c.now++
	base := 2 * c.cfg.ResendTicks
	if c.now-c.lastQuery >= base {
		// Perhaps the roles this client knows have left: while a call is
		// overdue, ask a member of its configuration for a newer one, at
		// this pace whatever the calls' own backoff.
		for _, cl := range c.calls {
			if c.now-cl.sentAt >= base {
				c.lastQuery = c.now
				members := slices.Concat(c.cfg.Leaders, c.cfg.Replicas, c.cfg.ProxyLeaders)
				c.send(Message{Kind: KindConfigQuery, To: members[c.rng.IntN(len(members))]})
				break
			}
		}
	}
	due := func(cl *call) bool { return c.now-cl.sentAt >= backoff(base, cl.tries) }
	for _, seq := range keysWhere(c.calls, due) {
		cl := c.calls[seq]
		cl.tries++
		c.Retries++
		c.resend(cl)
	}
}

// resend sends a call again, to where the configuration now says.
func (c *Client) resend(cl *call) {
	if cl.read {
		if len(c.cfg.Matchmakers) > 0 {
			c.liveKnown = false // the acceptors asked may be gone
		}
		c.sendRead(cl)
		return
	}
	if len(c.cfg.Batchers) == 0 && !c.hinted {
		c.leader = nextLeader(c.cfg.Leaders, "", c.leader)
	}
	c.hinted = false
	c.sendWrite(cl)
}

// Completed returns and clears the commands finished since the last call.
func (c *Client) Completed() []Completion {
	d := c.done
	c.done = nil
	return d
}

// Pending reports how many commands await replies.
func (c *Client) Pending() int { return len(c.calls) }

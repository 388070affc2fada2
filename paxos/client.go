package paxos

import "math/rand/v2"

// ReadMode says how a client reads.
type ReadMode uint8

const (
	// ReadThroughLog orders reads in the log like writes.
	ReadThroughLog ReadMode = iota
	// ReadQuorum reads without the leader (paper §3.4): ask a read quorum
	// of every acceptor group for the largest slot it accepted, then have a
	// replica execute the read once it has executed through that slot.
	ReadQuorum
)

type call struct {
	cmd    Command
	read   bool
	sentAt int
	// quorum reads
	votes   []map[string]bool
	maxSlot uint64
	phase2  bool
}

// Completion is a finished command.
type Completion struct {
	Seq    uint64
	Result []byte
}

// Client submits commands and retries them, with the same sequence number,
// until a reply arrives; replicas apply each (client, seq) once.
type Client struct {
	outbox
	cfg     Config
	id      uint64
	now     int
	seq     uint64
	rng     *rand.Rand
	calls   map[uint64]*call
	leader  int
	hinted  bool // the current leader came from a NotLeader hint
	done    []Completion
	Retries int
}

// NewClient returns a client with a unique id whose replies go to self.
func NewClient(cfg Config, self string, id uint64) *Client {
	cfg = cfg.withDefaults()
	return &Client{outbox: outbox{self: self}, cfg: cfg, id: id, calls: map[uint64]*call{},
		rng: rand.New(rand.NewPCG(id, 99))}
}

// ID returns the client's id.
func (c *Client) ID() uint64 { return c.id }

// Propose submits a command through the log and returns its sequence
// number.
func (c *Client) Propose(op []byte) uint64 {
	c.seq++
	cl := &call{cmd: Command{Client: c.id, Seq: c.seq, Op: op, ReplyTo: c.self}}
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
		b := c.cfg.Batchers[c.rng.IntN(len(c.cfg.Batchers))]
		c.send(Message{Kind: KindRequest, To: b, Command: cl.cmd})
		return
	}
	c.send(Message{Kind: KindRequest, To: c.cfg.Leaders[c.leader], Command: cl.cmd})
}

func (c *Client) sendRead(cl *call) {
	cl.sentAt = c.now
	cl.phase2 = false
	cl.maxSlot = 0
	cl.votes = make([]map[string]bool, len(c.cfg.Groups))
	for i, g := range c.cfg.Groups {
		cl.votes[i] = map[string]bool{}
		for _, a := range g.Acceptors {
			c.send(Message{Kind: KindMaxSlotRequest, To: a, Command: Command{Client: c.id, Seq: cl.cmd.Seq}})
		}
	}
}

// Step handles one message.
func (c *Client) Step(m Message) {
	switch m.Kind {
	case KindReply:
		if cl, ok := c.calls[m.Reply.Seq]; ok && m.Reply.Client == c.id {
			delete(c.calls, m.Reply.Seq)
			_ = cl
			c.done = append(c.done, Completion{Seq: m.Reply.Seq, Result: m.Reply.Result})
		}
	case KindNotLeader:
		c.leader = hintIndex(c.cfg.Leaders, m.Leader, c.leader)
		c.hinted = m.Leader != ""
	case KindMaxSlotReply:
		cl, ok := c.calls[m.Command.Seq]
		if !ok || !cl.read || cl.phase2 {
			return
		}
		for gi, g := range c.cfg.Groups {
			if g.index(m.From) >= 0 {
				cl.votes[gi][m.From] = true
			}
		}
		cl.maxSlot = max(cl.maxSlot, m.Slot)
		for gi, g := range c.cfg.Groups {
			if !g.IsReadQuorum(cl.votes[gi]) {
				return
			}
		}
		cl.phase2 = true
		r := c.cfg.Replicas[c.rng.IntN(len(c.cfg.Replicas))]
		c.send(Message{Kind: KindRead, To: r, Slot: cl.maxSlot, Command: cl.cmd})
	}
}

// Tick retries calls that have waited ResendTicks.
func (c *Client) Tick() {
	c.now++
	for _, seq := range sortedKeys(c.calls) {
		cl := c.calls[seq]
		if c.now-cl.sentAt < 2*c.cfg.ResendTicks {
			continue
		}
		c.Retries++
		if cl.read {
			c.sendRead(cl)
		} else {
			if len(c.cfg.Batchers) == 0 && !c.hinted {
				c.leader = (c.leader + 1) % len(c.cfg.Leaders)
			}
			c.hinted = false
			c.sendWrite(cl)
		}
	}
}

// Completed returns and clears the commands finished since the last call.
func (c *Client) Completed() []Completion {
	d := c.done
	c.done = nil
	return d
}

// Pending reports how many commands await replies.
func (c *Client) Pending() int { return len(c.calls) }

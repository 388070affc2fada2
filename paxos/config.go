package paxos

import (
	"errors"
	"fmt"
	"slices"
)

// Config is a deployment's configuration: the address of every role
// instance, the protocol's knobs, and an epoch. The configuration is state
// of the log itself: epoch e+1 is chosen in a slot of the log, by a
// reconfiguration command the active leader proposes (Value.Config), and
// every role learns it from the log or from a peer that already has it.
type Config struct {
	// Epoch numbers configurations: each reconfiguration chosen in the log
	// adds one. The configuration a deployment starts with is epoch 0.
	Epoch uint64 `msgpack:"ep"`

	// Matchmakers keep, for every leader round, the acceptor groups that
	// round uses (Matchmaker Paxos). A leader registers its groups with a
	// majority of them before phase 1 and learns every older round's groups
	// still live, so phase 1 covers every configuration a value may have
	// been chosen in. May be empty: acceptor groups then never change.
	Matchmakers []string `msgpack:"mm,omitempty"`
	// Batchers group client commands. May be empty: clients then send to
	// the leader directly, one command per slot.
	Batchers []string `msgpack:"ba,omitempty"`
	// Leaders are the proposers; one is active at a time.
	Leaders []string `msgpack:"le"`
	// LeaderIDs, if set, are the leaders' ballot ids, parallel to Leaders.
	// An id is never reused for another leader: two leaders sharing one
	// could propose different values in one ballot. Without it, a leader's
	// id is its index, which is only safe while Leaders never changes.
	LeaderIDs []uint32 `msgpack:"li,omitempty"`
	// NextLeaderID is the id the next leader added gets.
	NextLeaderID uint32 `msgpack:"ni,omitempty"`
	// ProxyLeaders relay phase 2 for the leader. At least one.
	ProxyLeaders []string `msgpack:"pl"`
	// Groups are the acceptor groups; slot s belongs to group s mod len.
	Groups []Group `msgpack:"gr"`
	// Replicas execute chosen commands in slot order.
	Replicas []string `msgpack:"re"`
	// Unbatchers return replies to clients. May be empty: replicas then
	// reply to clients directly.
	Unbatchers []string `msgpack:"ub,omitempty"`

	// BatchSize flushes a batch once it holds this many commands. Default
	// 500: a batcher under load waits for half its clients' outstanding
	// commands, up to this (see Batcher.Flush), and one client's command
	// leaves at once. (The original evaluation's best fixed size was 40;
	// on a 2-core machine, 200 with that wait made 25,400 writes/s at 100
	// clients against 20,500 without it, and 500 against 200 at 1000
	// clients cut the servers' CPU per write from 20.3 to 17.9 µs.)
	BatchSize int `msgpack:"bs,omitempty"`
	// BatchTicks flushes a non-empty batch after this many ticks. Default 1.
	BatchTicks int `msgpack:"bt,omitempty"`
	// HeartbeatTicks is the active leader's heartbeat period. Default 5.
	HeartbeatTicks int `msgpack:"hb,omitempty"`
	// ElectionTicks is the minimum silence after which a standby leader
	// campaigns; the actual timeout is random in [E, 2E). Default 30.
	ElectionTicks int `msgpack:"et,omitempty"`
	// ResendTicks is how long a role waits for a reply before sending again.
	// Default 10.
	ResendTicks int `msgpack:"rt,omitempty"`
	// SnapshotEvery makes replicas snapshot and truncate their log every
	// this many executed slots, or every m times this many for a large
	// state (m = 1 + keys/50,000). Default 1000.
	SnapshotEvery uint64 `msgpack:"se,omitempty"`
	// SessionSlots is how many slots a client session may stay silent
	// before replicas forget it (its last sequence number and result).
	// A forgotten session's later commands are refused, never applied
	// twice. Default 1<<22.
	SessionSlots uint64 `msgpack:"ss,omitempty"`
	// MaxWaiting bounds the commands a leader holds while it is not yet
	// active; beyond it, commands are dropped and their clients retry.
	// Default 65536.
	MaxWaiting int `msgpack:"mw,omitempty"`
	// FullFanout makes proxy leaders send phase 2a to every acceptor of
	// the group at once. By default (thrifty) a first send goes to a
	// write quorum only, in turn by slot, and to the rest if its votes
	// are late (see ProxyLeader).
	FullFanout bool `msgpack:"ff,omitempty"`

	// HTTP maps a role address to the HTTP address of its process
	// (status, metrics), for operators and tools. Optional.
	HTTP map[string]string `msgpack:"http,omitempty"`
	// History lists the latest changes, oldest first, at most
	// MaxHistory of them.
	History []Change `msgpack:"hist,omitempty"`
}

// Change records one reconfiguration, for `tide log status`.
type Change struct {
	Epoch uint64 `msgpack:"e"`
	What  string `msgpack:"w"` // e.g. "add proxy leader 127.0.0.1:7001"
	Why   string `msgpack:"y"` // who or what asked, e.g. "tide log scale"
	At    int64  `msgpack:"t"` // when it was proposed, Unix milliseconds
}

// MaxHistory is how many changes a configuration remembers.
const MaxHistory = 32

// Record appends a change to c's history.
func (c *Config) Record(what, why string, atMillis int64) {
	c.History = append(c.History, Change{Epoch: c.Epoch, What: what, Why: why, At: atMillis})
	if n := len(c.History); n > MaxHistory {
		c.History = slices.Clone(c.History[n-MaxHistory:])
	}
}

// withDefaults returns c with zero knobs set to their defaults.
func (c Config) withDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.BatchTicks == 0 {
		c.BatchTicks = 1
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 5
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 30
	}
	if c.ResendTicks == 0 {
		c.ResendTicks = 10
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = 1000
	}
	if c.SessionSlots == 0 {
		c.SessionSlots = 1 << 22
	}
	if c.MaxWaiting == 0 {
		c.MaxWaiting = 1 << 16
	}
	return c
}

// Validate checks that the deployment can run.
func (c Config) Validate() error {
	var errs []error
	if len(c.Leaders) == 0 {
		errs = append(errs, errors.New("no leaders"))
	}
	if c.LeaderIDs != nil {
		if len(c.LeaderIDs) != len(c.Leaders) {
			errs = append(errs, fmt.Errorf("%d leader ids for %d leaders", len(c.LeaderIDs), len(c.Leaders)))
		}
		ids := map[uint32]bool{}
		for _, id := range c.LeaderIDs {
			if ids[id] {
				errs = append(errs, fmt.Errorf("leader id %d used twice", id))
			}
			if id >= c.NextLeaderID {
				errs = append(errs, fmt.Errorf("leader id %d not below next leader id %d", id, c.NextLeaderID))
			}
			ids[id] = true
		}
	}
	if len(c.ProxyLeaders) == 0 {
		errs = append(errs, errors.New("no proxy leaders"))
	}
	if len(c.Groups) == 0 {
		errs = append(errs, errors.New("no acceptor groups"))
	}
	for i, g := range c.Groups {
		if err := g.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("group %d: %w", i, err))
		}
	}
	if len(c.Replicas) == 0 {
		errs = append(errs, errors.New("no replicas"))
	}
	if c.BatchSize < 0 || c.BatchTicks < 0 || c.HeartbeatTicks < 0 || c.ElectionTicks < 0 || c.ResendTicks < 0 || c.MaxWaiting < 0 {
		errs = append(errs, errors.New("negative knob"))
	}
	seen := map[string]bool{}
	for _, a := range c.All() {
		if a == "" {
			errs = append(errs, errors.New("empty address"))
		}
		if seen[a] {
			errs = append(errs, fmt.Errorf("address %q used by two roles", a))
		}
		seen[a] = true
	}
	return errors.Join(errs...)
}

// ValidateChange checks that next may follow c: the epoch goes up by one,
// leader ids stay unique across time, and acceptor groups change only when
// matchmakers can carry the change.
func (c Config) ValidateChange(next Config) error {
	if err := next.Validate(); err != nil {
		return err
	}
	if next.Epoch != c.Epoch+1 {
		return fmt.Errorf("%w: epoch %d cannot follow epoch %d", ErrStaleConfig, next.Epoch, c.Epoch)
	}
	if !slices.Equal(next.Matchmakers, c.Matchmakers) {
		return errors.New("matchmakers cannot change")
	}
	if len(c.Matchmakers) == 0 && !groupsEqual(c.Groups, next.Groups) {
		return errors.New("acceptor groups can change only in a deployment with matchmakers")
	}
	if next.NextLeaderID < c.NextLeaderID {
		return errors.New("next leader id went backwards")
	}
	for i, a := range next.Leaders {
		id := next.LeaderID(i)
		if j := slices.Index(c.Leaders, a); j >= 0 {
			if c.LeaderID(j) != id {
				return fmt.Errorf("leader %s changed id", a)
			}
		} else if id < c.NextLeaderID {
			return fmt.Errorf("new leader %s reuses id %d", a, id)
		}
	}
	return nil
}

// ErrStaleConfig says a reconfiguration was built on an epoch that is no
// longer current.
var ErrStaleConfig = errors.New("stale configuration")

// LeaderID returns the ballot id of leader i.
func (c Config) LeaderID(i int) uint32 {
	if c.LeaderIDs != nil {
		return c.LeaderIDs[i]
	}
	return uint32(i)
}

// Next returns a copy of c as the base of a reconfiguration: epoch + 1,
// slices copied, and leader ids made explicit. Call WithLeaders to change
// the leaders.
func (c Config) Next() Config {
	n := c.Clone()
	n.Epoch = c.Epoch + 1
	if n.LeaderIDs == nil {
		for i := range n.Leaders {
			n.LeaderIDs = append(n.LeaderIDs, uint32(i))
		}
		n.NextLeaderID = max(n.NextLeaderID, uint32(len(n.Leaders)))
	}
	return n
}

// WithLeaders sets the leaders, keeping the ids of those that stay and
// giving each new one a fresh id. c must come from Next.
func (c Config) WithLeaders(addrs []string) Config {
	ids := make([]uint32, len(addrs))
	for i, a := range addrs {
		if j := slices.Index(c.Leaders, a); j >= 0 {
			ids[i] = c.LeaderID(j)
		} else {
			ids[i] = c.NextLeaderID
			c.NextLeaderID++
		}
	}
	c.Leaders, c.LeaderIDs = slices.Clone(addrs), ids
	return c
}

// Clone returns a deep copy of c.
func (c Config) Clone() Config {
	n := c
	n.Matchmakers = slices.Clone(c.Matchmakers)
	n.Batchers = slices.Clone(c.Batchers)
	n.Leaders = slices.Clone(c.Leaders)
	n.LeaderIDs = slices.Clone(c.LeaderIDs)
	n.ProxyLeaders = slices.Clone(c.ProxyLeaders)
	n.Groups = cloneGroups(c.Groups)
	n.Replicas = slices.Clone(c.Replicas)
	n.Unbatchers = slices.Clone(c.Unbatchers)
	n.History = slices.Clone(c.History)
	if c.HTTP != nil {
		n.HTTP = make(map[string]string, len(c.HTTP))
		for k, v := range c.HTTP {
			n.HTTP[k] = v
		}
	}
	return n
}

func cloneGroups(gs []Group) []Group {
	out := make([]Group, len(gs))
	for i, g := range gs {
		out[i] = Group{Acceptors: slices.Clone(g.Acceptors), Rows: g.Rows, Cols: g.Cols}
	}
	return out
}

func groupsEqual(a, b []Group) bool {
	return slices.EqualFunc(a, b, func(x, y Group) bool {
		return x.Rows == y.Rows && x.Cols == y.Cols && slices.Equal(x.Acceptors, y.Acceptors)
	})
}

// All lists every role address.
func (c Config) All() []string {
	var out []string
	out = append(out, c.Matchmakers...)
	out = append(out, c.Batchers...)
	out = append(out, c.Leaders...)
	out = append(out, c.ProxyLeaders...)
	for _, g := range c.Groups {
		out = append(out, g.Acceptors...)
	}
	out = append(out, c.Replicas...)
	out = append(out, c.Unbatchers...)
	return out
}

// Has reports whether addr serves any role of c.
func (c Config) Has(addr string) bool {
	for _, l := range [][]string{c.Matchmakers, c.Batchers, c.Leaders, c.ProxyLeaders, c.Replicas, c.Unbatchers} {
		if slices.Contains(l, addr) {
			return true
		}
	}
	for _, g := range c.Groups {
		if slices.Contains(g.Acceptors, addr) {
			return true
		}
	}
	return false
}

// GroupOf returns the acceptor group of slot s.
func (c Config) GroupOf(s uint64) int { return int(s % uint64(len(c.Groups))) }

// replicaQuorum is f+1 for 2f+1 replicas: how many replicas must hold a
// slot durably before acceptors may forget it.
func (c Config) replicaQuorum() int { return len(c.Replicas)/2 + 1 }

// matchQuorum is how many matchmakers make a quorum: a majority.
func (c Config) matchQuorum() int { return len(c.Matchmakers)/2 + 1 }

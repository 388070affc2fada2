package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"tide/paxos"
)

// Operator is a simulated `tide log scale`: it proposes one configuration
// change at a time to the leaders, follows NotLeader hints, and retries
// until the change is chosen or refused.
type Operator struct {
	self    string
	cfg     paxos.Config // the newest configuration it knows chosen
	pending *paxos.Config
	leader  string
	now     int
	sentAt  int
	out     []paxos.Message
	// Done counts changes chosen; Refused counts changes given up.
	Done, Refused int
}

// NewOperator returns an operator at self that knows cfg.
func NewOperator(self string, cfg paxos.Config) *Operator {
	return &Operator{self: self, cfg: cfg, leader: cfg.Leaders[0]}
}

// Busy reports whether a change is in flight.
func (o *Operator) Busy() bool { return o.pending != nil }

// Config returns the newest configuration the operator knows chosen.
func (o *Operator) Config() paxos.Config { return o.cfg }

// Propose starts a change to next, built on Config().
func (o *Operator) Propose(next paxos.Config) {
	o.pending = &next
	o.send()
}

func (o *Operator) send() {
	o.sentAt = o.now
	c := o.pending.Clone()
	o.out = append(o.out, paxos.Message{Kind: paxos.KindReconfigure, From: o.self, To: o.leader, Config: &c})
}

// Step handles the leaders' answers.
func (o *Operator) Step(m paxos.Message) {
	if o.pending == nil {
		return
	}
	switch m.Kind {
	case paxos.KindNotLeader:
		if m.From == o.leader {
			// A hint names a member, perhaps one newer than what the
			// operator knows (the change it proposes may add it).
			if m.Leader != "" {
				o.leader = m.Leader
			} else {
				o.leader = nextAddr(o.leaders(), "", o.leader)
			}
			o.send()
		}
	case paxos.KindReconfigured:
		if m.Config == nil {
			return
		}
		got := *m.Config
		if got.Epoch == o.pending.Epoch && slices.Equal(got.All(), o.pending.All()) {
			o.cfg, o.pending = got, nil
			o.Done++
			return
		}
		if got.Epoch > o.cfg.Epoch {
			o.cfg = got
		}
		if got.Epoch >= o.pending.Epoch || !strings.Contains(m.Note, "retry") {
			// Another change got in first, or this one is refused: the
			// driver builds a new one on the newer configuration.
			o.pending = nil
			o.Refused++
		}
	}
}

func nextAddr(list []string, hint, cur string) string {
	if slices.Contains(list, hint) {
		return hint
	}
	return list[(slices.Index(list, cur)+1)%len(list)]
}

// Tick resends a change nobody answered, to the next leader.
func (o *Operator) Tick() {
	o.now++
	if o.pending != nil && o.now-o.sentAt >= 20 {
		o.leader = nextAddr(o.leaders(), "", o.leader)
		o.send()
	}
}

// leaders are the leaders of the configuration known and of the one
// proposed.
func (o *Operator) leaders() []string {
	out := slices.Clone(o.cfg.Leaders)
	if o.pending != nil {
		for _, l := range o.pending.Leaders {
			if !slices.Contains(out, l) {
				out = append(out, l)
			}
		}
	}
	return out
}

// Ready returns the operator's messages.
func (o *Operator) Ready() paxos.Ready {
	rd := paxos.Ready{Messages: o.out}
	o.out = nil
	return rd
}

// reconfigurer drives random configuration changes of every kind through
// an Operator and stops what they remove once it may stop: drained
// batchers, proxy leaders and unbatchers; leaders that handed over;
// replicas once a majority of those that stay executed the change; and
// acceptors once the active leader has retired the rounds that used them.
type reconfigurer struct {
	net     *PaxosNet
	op      *Operator
	rng     *rand.Rand
	fresh   int
	leaving map[string]uint64 // removed role -> epoch that removed it
	known   map[string]bool   // roles of some configuration known chosen
	settled uint64            // 1 + the epoch settle last noted removals for
	// groups lists every acceptor group of a configuration that may still
	// be live, for the crash rules.
	groups []paxos.Group
	// Changes lists the changes proposed, for failure reports.
	Changes []string
}

func newReconfigurer(net *PaxosNet, cfg paxos.Config, seed uint64) *reconfigurer {
	op := NewOperator("operator", cfg)
	net.AddClient("operator", op)
	rc := &reconfigurer{net: net, op: op, rng: rand.New(rand.NewPCG(seed, 0xc0f1)), leaving: map[string]uint64{},
		groups: slices.Clone(cfg.Groups), known: map[string]bool{}}
	for _, a := range cfg.All() {
		rc.known[a] = true
	}
	return rc
}

func (rc *reconfigurer) addr(kind string) string {
	rc.fresh++
	return fmt.Sprintf("new-%s%d", kind, rc.fresh)
}

// propose picks a random change of the newest configuration, starts the
// roles it adds, and proposes it.
func (rc *reconfigurer) propose() {
	if rc.op.Busy() {
		return
	}
	cur := rc.op.Config()
	next := cur.Next()
	var added []string
	addRole := func(kind string, list *[]string) {
		a := rc.addr(kind)
		*list = append(*list, a)
		added = append(added, kind+":"+a)
	}
	removeRole := func(list *[]string, keep int) bool {
		if len(*list) <= keep {
			return false
		}
		i := rc.rng.IntN(len(*list))
		*list = slices.Delete(slices.Clone(*list), i, i+1)
		return true
	}
	newGroup := func(shape paxos.Group) paxos.Group {
		g := paxos.Group{Rows: shape.Rows, Cols: shape.Cols}
		for range shape.Acceptors {
			a := rc.addr("acceptor")
			g.Acceptors = append(g.Acceptors, a)
			added = append(added, "acceptor:"+a)
		}
		return g
	}
	var what string
	switch k := rc.rng.IntN(12); k {
	case 0:
		what = "add batcher"
		addRole("batcher", &next.Batchers)
	case 1:
		what = "remove batcher"
		if !removeRole(&next.Batchers, 0) {
			return
		}
	case 2:
		what = "add proxy leader"
		addRole("proxy", &next.ProxyLeaders)
	case 3:
		what = "remove proxy leader"
		if !removeRole(&next.ProxyLeaders, 1) {
			return
		}
	case 4:
		what = "add replica"
		addRole("replica", &next.Replicas)
	case 5:
		what = "remove replica"
		if !removeRole(&next.Replicas, 1) {
			return
		}
	case 6:
		what = "add unbatcher or leader"
		if rc.rng.IntN(2) == 0 {
			addRole("unbatcher", &next.Unbatchers)
		} else {
			leaders := slices.Clone(next.Leaders)
			addRole("leader", &leaders)
			next = next.WithLeaders(leaders)
		}
	case 7:
		what = "remove unbatcher or leader"
		if rc.rng.IntN(2) == 0 {
			if !removeRole(&next.Unbatchers, 0) {
				return
			}
		} else {
			leaders := slices.Clone(next.Leaders)
			if !removeRole(&leaders, 1) {
				return
			}
			next = next.WithLeaders(leaders)
		}
	case 8:
		what = "add acceptor group"
		if len(next.Groups) >= 3 {
			return
		}
		next.Groups = append(next.Groups, newGroup(next.Groups[rc.rng.IntN(len(next.Groups))]))
	case 9:
		what = "remove acceptor group"
		if len(next.Groups) <= 1 {
			return
		}
		i := rc.rng.IntN(len(next.Groups))
		next.Groups = slices.Delete(next.Groups, i, i+1)
	case 10:
		what = "replace one acceptor"
		gi := rc.rng.IntN(len(next.Groups))
		ai := rc.rng.IntN(len(next.Groups[gi].Acceptors))
		a := rc.addr("acceptor")
		next.Groups[gi].Acceptors[ai] = a
		added = append(added, "acceptor:"+a)
	case 11:
		what = "replace an acceptor group"
		gi := rc.rng.IntN(len(next.Groups))
		next.Groups[gi] = newGroup(next.Groups[gi])
	}
	if err := cur.ValidateChange(next); err != nil {
		panic(fmt.Sprintf("simulator built a bad change (%s): %v", what, err))
	}
	for _, ka := range added {
		kind, a, _ := strings.Cut(ka, ":")
		rc.net.AddRole(kind, a, cur)
	}
	rc.groups = append(rc.groups, next.Groups...)
	rc.Changes = append(rc.Changes, fmt.Sprintf("t=%d epoch %d: %s", rc.net.Now, next.Epoch, what))
	rc.op.Propose(next)
}

// settle notes what the newest chosen configuration removed and stops
// each removed role once it may stop.
func (rc *reconfigurer) settle() {
	cfg := rc.op.Config()
	if rc.settled != cfg.Epoch+1 {
		// Once per configuration: until the next, known does not grow,
		// and what leaves leaving is gone.
		rc.settled = cfg.Epoch + 1
		for _, a := range cfg.All() {
			rc.known[a] = true
		}
		for _, a := range sortedKeysOf(rc.known) {
			if _, ok := rc.leaving[a]; ok || rc.net.Gone(a) || cfg.Has(a) {
				continue
			}
			// In a chosen configuration once, not in the newest: removed.
			rc.leaving[a] = cfg.Epoch
		}
	}
	retired := rc.retired(cfg)
	if retired {
		// Only the newest configuration's groups are live: the crash
		// rules need not protect older ones any longer.
		rc.groups = slices.Clone(cfg.Groups)
	}
	for _, a := range sortedKeysOf(rc.leaving) {
		epoch := rc.leaving[a]
		stop := false
		switch rc.net.Kind(a) {
		case "acceptor":
			stop = retired
		case "replica":
			n := 0
			for _, r := range cfg.Replicas {
				if rep, ok := rc.net.Role(r).(*paxos.Replica); ok && rep.LogEpoch() >= epoch {
					n++
				}
			}
			stop = n > len(cfg.Replicas)/2
		case "leader":
			if l, ok := rc.net.Role(a).(*paxos.Leader); ok {
				stop = !l.Active() && l.Config().Epoch >= epoch
			} else {
				stop = true
			}
		default:
			if d, ok := rc.net.Role(a).(interface{ Drained() bool }); ok {
				stop = d.Drained()
			} else {
				stop = true // down: it holds nothing
			}
		}
		if stop {
			rc.net.Remove(a)
			delete(rc.leaving, a)
		}
	}
}

// retired reports whether an active leader runs a round with cfg's
// acceptor groups and has retired every older round.
func (rc *reconfigurer) retired(cfg paxos.Config) bool {
	for _, a := range cfg.Leaders {
		if l, ok := rc.net.Role(a).(*paxos.Leader); ok && l.Active() {
			st := l.Status()
			if st.RoundEpoch >= cfg.Epoch && len(st.Live) == 1 && !st.Retiring {
				return true
			}
		}
	}
	return false
}

func sortedKeysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// members lists every role that may be crashed or cut off: every role
// started and not removed for good, matchmakers included, clients and the
// operator not.
func (rc *reconfigurer) members() []string {
	var out []string
	for _, a := range rc.net.Addrs() {
		switch rc.net.Kind(a) {
		case "client", "":
			continue
		}
		if !rc.net.Gone(a) {
			out = append(out, a)
		}
	}
	return out
}

// mayCrash reports whether crashing a keeps every possibly live acceptor
// group with a read and a write quorum up, and a majority of matchmakers.
func (rc *reconfigurer) mayCrash(a string) bool {
	switch rc.net.Kind(a) {
	case "acceptor":
		for _, g := range rc.groups {
			if slices.Contains(g.Acceptors, a) && !quorumsSurvive(g, rc.net, a) {
				return false
			}
		}
	case "matchmaker":
		down := 0
		for _, m := range rc.op.Config().Matchmakers {
			if rc.net.Down(m) {
				down++
			}
		}
		return (down+1)*2 < len(rc.op.Config().Matchmakers)
	}
	return true
}

// loseAcceptor loses an acceptor's disk, if its groups can spare it: it
// is stopped for good (an acceptor must never come back without the votes
// it gave), and the operator replaces it with a new one.
func (rc *reconfigurer) loseAcceptor() {
	cur := rc.op.Config()
	g := cur.Groups[rc.rng.IntN(len(cur.Groups))]
	a := g.Acceptors[rc.rng.IntN(len(g.Acceptors))]
	if rc.net.Gone(a) || !rc.mayCrash(a) {
		return
	}
	rc.net.Remove(a)
	next := cur.Next()
	fresh := rc.addr("acceptor")
	for gi := range next.Groups {
		if i := slices.Index(next.Groups[gi].Acceptors, a); i >= 0 {
			next.Groups[gi].Acceptors[i] = fresh
		}
	}
	rc.net.AddRole("acceptor", fresh, cur)
	rc.groups = append(rc.groups, next.Groups...)
	rc.Changes = append(rc.Changes, fmt.Sprintf("t=%d epoch %d: lost %s's disk, replace it", rc.net.Now, next.Epoch, a))
	rc.op.Propose(next)
}

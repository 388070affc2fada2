package sim

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"tide/paxos"
	"tide/paxos/node"
)

// PaxosNet is a deterministic simulation of a whole compartmentalized
// MultiPaxos deployment: every role of a paxos.Config, connected by a
// seeded network that drops, duplicates, delays and reorders messages, cuts
// links (both ways or one way), and crashes and restarts roles. Acceptors
// keep what they persisted across a crash; replicas keep their durable
// snapshots; every other role restarts empty.
type PaxosNet struct {
	Rand *rand.Rand
	Cfg  paxos.Config
	Now  int

	// UseStores keeps acceptors', leaders', matchmakers' and replicas'
	// durable state in pebble stores (in memory), through the same code
	// as the real driver (paxos/node.Store): what a role reloads after a
	// crash is what that code decodes. Set before the first Step.
	UseStores bool
	stores    map[string]*node.Store

	// Faults, changeable at any time.
	DropRate float64
	DupRate  float64
	MaxDelay int // extra ticks a message may wait; reordering follows

	roles   map[string]paxos.Role
	kind    map[string]string
	index   map[string]int
	durable map[string]*paxos.AcceptorState
	snaps   map[string][]byte // replicas' durable snapshots
	// matchmakers' durable state
	mmDurable map[string]*paxos.MatchmakerState
	// the configuration a role added at runtime starts (and restarts) with
	startCfg map[string]paxos.Config
	gone     map[string]bool // removed for good
	down     map[string]bool
	cut      map[[2]string]bool
	flight   []flight
	due      []flight // Step's buffer, reused
	order    []string // every address with a role, sorted; nil when stale
	addrs    []string // every address the network has known, sorted; nil when stale
	seed     uint64

	// Chosen is every slot any replica executed, with its value; announced
	// is every slot any role told a replica was chosen, with the first
	// announcement. Violations lists every slot two replicas executed
	// differently, and every slot announced with two different values.
	Chosen     map[uint64]paxos.Value
	announced  map[uint64]announcement
	Violations []string
	Delivered  int
	// Trace, if set, sees every delivered message.
	Trace func(now int, m paxos.Message)
}

type announcement struct {
	v        paxos.Value
	by       string
	at       int
	reported bool
}

type flight struct {
	m  paxos.Message
	at int
}

// NewPaxosNet builds every role of cfg.
func NewPaxosNet(cfg paxos.Config, seed uint64) *PaxosNet {
	n := &PaxosNet{
		Rand: rand.New(rand.NewPCG(seed, seed*31+7)), Cfg: cfg, seed: seed,
		roles: map[string]paxos.Role{}, kind: map[string]string{}, index: map[string]int{},
		durable: map[string]*paxos.AcceptorState{}, snaps: map[string][]byte{}, down: map[string]bool{}, cut: map[[2]string]bool{},
		Chosen: map[uint64]paxos.Value{}, announced: map[uint64]announcement{},
		mmDurable: map[string]*paxos.MatchmakerState{}, startCfg: map[string]paxos.Config{}, gone: map[string]bool{},
		stores: map[string]*node.Store{},
	}
	reg := func(kind string, addrs []string) {
		for i, a := range addrs {
			n.kind[a], n.index[a] = kind, i
		}
	}
	reg("matchmaker", cfg.Matchmakers)
	reg("batcher", cfg.Batchers)
	reg("leader", cfg.Leaders)
	reg("proxy", cfg.ProxyLeaders)
	for _, g := range cfg.Groups {
		reg("acceptor", g.Acceptors)
	}
	reg("replica", cfg.Replicas)
	reg("unbatcher", cfg.Unbatchers)
	for _, a := range cfg.All() {
		n.start(a)
	}
	return n
}

// AddRole starts a role of kind at addr that cfg need not list yet, as a
// process joining a running log does: it starts with cfg (the
// configuration it fetched) and so does it after a crash.
func (n *PaxosNet) AddRole(kind, addr string, cfg paxos.Config) {
	n.kind[addr], n.addrs = kind, nil
	n.startCfg[addr] = cfg
	n.start(addr)
}

// Remove stops the role at addr for good: it crashes and never restarts.
func (n *PaxosNet) Remove(addr string) {
	n.Crash(addr)
	n.gone[addr] = true
}

// Gone reports whether addr was removed for good.
func (n *PaxosNet) Gone(a string) bool { return n.gone[a] }

// start creates the role at addr, from durable state for an acceptor.
func (n *PaxosNet) start(a string) {
	n.order = nil
	cfg := n.Cfg
	if c, ok := n.startCfg[a]; ok {
		cfg = c
	}
	defer func() {
		if h, ok := n.roles[a].(interface{ SetInvariantHandler(func(string)) }); ok {
			h.SetInvariantHandler(func(msg string) {
				n.Violations = append(n.Violations, fmt.Sprintf("t=%d %s", n.Now, msg))
			})
		}
	}()
	switch n.kind[a] {
	case "matchmaker":
		st := n.mmDurable[a]
		if st == nil {
			st = &paxos.MatchmakerState{}
			n.mmDurable[a] = st
		}
		cp := *st
		cp.Rounds = slices.Clone(st.Rounds)
		if s := n.store(a); s != nil {
			var err error
			if cp, err = s.MatchmakerState(); err != nil {
				panic(err)
			}
		}
		n.roles[a] = paxos.NewMatchmaker(a, cp)
	case "batcher":
		n.roles[a] = paxos.NewBatcherAt(cfg, a)
	case "leader":
		var last paxos.Ballot
		var saved *paxos.Config
		if st := n.durable[a]; st != nil {
			last, saved = st.Promised, st.Config
		}
		if s := n.store(a); s != nil {
			var err error
			if last, err = s.Ballot(); err != nil {
				panic(err)
			}
			if saved, err = s.Config(); err != nil {
				panic(err)
			}
		}
		l := paxos.NewLeaderAt(cfg, a, n.Rand.Uint64(), last)
		if saved != nil {
			l.Restore(*saved)
		}
		l.Ready() // what it persists on start is persisted already
		n.roles[a] = l
	case "proxy":
		n.roles[a] = paxos.NewProxyLeaderAt(cfg, a)
	case "acceptor":
		st := n.durable[a]
		if st == nil {
			st = &paxos.AcceptorState{}
			n.durable[a] = st
		}
		cp := cloneState(*st)
		if s := n.store(a); s != nil {
			var err error
			if cp, err = s.AcceptorState(); err != nil {
				panic(err)
			}
		}
		n.roles[a] = paxos.NewAcceptor(a, cp)
	case "replica":
		snap := n.snaps[a]
		if s := n.store(a); s != nil {
			var err error
			if snap, err = s.Snapshot(); err != nil {
				panic(err)
			}
		}
		r, err := paxos.NewReplicaAt(cfg, a, paxos.NewKV(), snap)
		if err != nil {
			panic(err)
		}
		r.Executed = func(slot uint64, v paxos.Value) {
			if prev, ok := n.Chosen[slot]; ok {
				if !reflect.DeepEqual(normalize(prev), normalize(v)) {
					n.Violations = append(n.Violations, fmt.Sprintf("t=%d slot %d: replica %s executed %s, another executed %s", n.Now, slot, a, fmtValue(v), fmtValue(prev)))
				}
				return
			}
			n.Chosen[slot] = v
		}
		n.roles[a] = r
	case "unbatcher":
		n.roles[a] = paxos.NewUnbatcherAt(cfg, a)
	}
}

// fmtValue shows a value as its commands' client.seq ids, as the paxos
// transcripts do.
func fmtValue(v paxos.Value) string {
	if v.Noop {
		return "noop"
	}
	ids := make([]string, len(v.Commands))
	for i, c := range v.Commands {
		ids[i] = fmt.Sprintf("%d.%d", c.Client, c.Seq)
	}
	return "[" + strings.Join(ids, " ") + "]"
}

func normalize(v paxos.Value) paxos.Value {
	if len(v.Commands) == 0 {
		v.Commands = nil
	}
	if v.Config != nil {
		// A configuration decoded from a store may hold nil where the
		// original held an empty list: compare their encodings' decodings.
		b, err := msgpack.Marshal(v.Config)
		if err != nil {
			panic(err)
		}
		var c paxos.Config
		if err := msgpack.Unmarshal(b, &c); err != nil {
			panic(err)
		}
		v.Config = &c
	}
	for i := range v.Commands {
		if len(v.Commands[i].Op) == 0 {
			v.Commands[i].Op = nil
		}
	}
	return v
}

func cloneState(s paxos.AcceptorState) paxos.AcceptorState {
	c := paxos.AcceptorState{Promised: s.Promised, GCBelow: s.GCBelow, Accepted: map[uint64]paxos.Entry{}}
	for k, v := range s.Accepted {
		c.Accepted[k] = v
	}
	return c
}

// AddClient registers a client role at addr, a paxos.Client or a
// ClientHost (clients never crash).
func (n *PaxosNet) AddClient(addr string, c paxos.Role) {
	n.roles[addr] = c
	n.order = nil
	n.kind[addr], n.addrs = "client", nil
}

// Crash stops the role at addr: it loses every message to it and all
// volatile state.
func (n *PaxosNet) Crash(a string) {
	n.down[a] = true
	delete(n.roles, a)
	n.order = nil
}

// WipeDisk crashes the replica at a and loses its disk: it restarts with
// no snapshot and must recover everything from its peers.
func (n *PaxosNet) WipeDisk(a string) {
	n.Crash(a)
	delete(n.snaps, a)
	if s := n.stores[a]; s != nil {
		s.Close()
		delete(n.stores, a)
	}
}

// store returns the pebble store of the role at a, when the network keeps
// durable state in pebble (UseStores) and the role has durable state.
func (n *PaxosNet) store(a string) *node.Store {
	if !n.UseStores {
		return nil
	}
	switch n.kind[a] {
	case "acceptor", "leader", "replica", "matchmaker":
	default:
		return nil
	}
	if s := n.stores[a]; s != nil {
		return s
	}
	s, err := node.OpenMemStore()
	if err != nil {
		panic(err)
	}
	n.stores[a] = s
	return s
}

// Close releases the pebble stores.
func (n *PaxosNet) Close() {
	for a, s := range n.stores {
		s.Close()
		delete(n.stores, a)
	}
}

// Restart brings a crashed role back.
func (n *PaxosNet) Restart(a string) {
	if !n.down[a] || n.gone[a] {
		return
	}
	delete(n.down, a)
	n.start(a)
}

// Down reports whether addr is crashed.
func (n *PaxosNet) Down(a string) bool { return n.down[a] }

// Kind returns the role kind at addr.
func (n *PaxosNet) Kind(a string) string { return n.kind[a] }

// Role returns the live role at addr, or nil.
func (n *PaxosNet) Role(a string) paxos.Role { return n.roles[a] }

// Partition cuts the link between a and b both ways.
func (n *PaxosNet) Partition(a, b string) {
	n.cut[[2]string{a, b}] = true
	n.cut[[2]string{b, a}] = true
}

// Cut cuts the link from a to b only: b still reaches a.
func (n *PaxosNet) Cut(a, b string) { n.cut[[2]string{a, b}] = true }

// Heal restores every link.
func (n *PaxosNet) Heal() { clear(n.cut) }

// RestartAll brings every crashed role back.
func (n *PaxosNet) RestartAll() {
	for _, a := range sortedStrings(n.down) {
		n.Restart(a)
	}
}

func sortedStrings(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// collect takes a role's output into the network. An acceptor's persisted
// state is made durable before its messages leave.
func (n *PaxosNet) collect(a string, r paxos.Role) {
	rd := r.Ready()
	if s := n.store(a); s != nil && (len(rd.Persist) > 0 || rd.Snapshot != nil) {
		if err := s.Save(rd.Persist, rd.Snapshot); err != nil {
			panic(err)
		}
	}
	if rd.Snapshot != nil {
		n.snaps[a] = rd.Snapshot
	}
	if len(rd.Persist) > 0 && n.kind[a] == "matchmaker" {
		st := n.mmDurable[a]
		for _, op := range rd.Persist {
			st.Apply(op)
		}
	} else if len(rd.Persist) > 0 {
		st := n.durable[a]
		if st == nil {
			st = &paxos.AcceptorState{}
			n.durable[a] = st
		}
		for _, op := range rd.Persist {
			st.Apply(op)
		}
	}
	for _, m := range rd.Messages {
		if m.Kind == paxos.KindChosen && n.kind[m.To] == "replica" {
			n.checkAnnounced(a, m)
		}
		if n.DropRate > 0 && n.Rand.Float64() < n.DropRate {
			continue
		}
		copies := 1
		if n.DupRate > 0 && n.Rand.Float64() < n.DupRate {
			copies = 2
		}
		for range copies {
			delay := 1
			if n.MaxDelay > 0 {
				delay += n.Rand.IntN(n.MaxDelay + 1)
			}
			n.flight = append(n.flight, flight{m: m, at: n.Now + delay})
		}
	}
	if rc, ok := r.(paxos.Recycler); ok {
		rc.Recycle(rd.Messages)
	}
}

// checkAnnounced records the values m tells a replica are chosen (a proxy
// leader's news, a leader's or a peer's recovery answer) and reports, once,
// a slot announced with two different values: consensus broken, whether
// or not any replica goes on to execute both.
func (n *PaxosNet) checkAnnounced(from string, m paxos.Message) {
	check := func(slot uint64, v paxos.Value) {
		prev, ok := n.announced[slot]
		if !ok {
			n.announced[slot] = announcement{v: v, by: from, at: n.Now}
			return
		}
		if !prev.reported && !reflect.DeepEqual(normalize(prev.v), normalize(v)) {
			prev.reported = true
			n.announced[slot] = prev
			n.Violations = append(n.Violations, fmt.Sprintf("t=%d slot %d: %s announced %s chosen to %s; %s announced %s at t=%d",
				n.Now, slot, from, fmtValue(v), m.To, prev.by, fmtValue(prev.v), prev.at))
		}
	}
	if len(m.Entries) == 0 {
		check(m.Slot, m.Value)
	}
	for _, e := range m.Entries {
		check(e.Slot, e.Value)
	}
}

// Step advances the simulation by one tick: due messages are delivered in
// a random order, then every live role ticks, in a fixed order.
func (n *PaxosNet) Step() {
	n.Now++
	// Split the messages due from the rest in place, keeping both in
	// order: a simulation run must be a pure function of its seed.
	due, later := n.due[:0], n.flight[:0]
	for _, f := range n.flight {
		if f.at <= n.Now {
			due = append(due, f)
		} else {
			later = append(later, f)
		}
	}
	clear(n.flight[len(later):])
	n.flight = later
	defer func() { clear(due); n.due = due[:0] }()
	n.Rand.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	for _, f := range due {
		m := f.m
		if n.down[m.To] || n.cut[[2]string{m.From, m.To}] {
			continue
		}
		r := n.roles[m.To]
		if r == nil {
			continue
		}
		n.Delivered++
		if n.Trace != nil {
			n.Trace(n.Now, m)
		}
		r.Step(m)
		n.collect(m.To, r)
	}
	for _, a := range n.sortedRoles() {
		r := n.roles[a]
		if f, ok := r.(paxos.Flusher); ok && n.Rand.IntN(2) == 0 {
			f.Flush()
		}
		r.Tick()
		n.collect(a, r)
	}
}

// sortedRoles returns the addresses of the live roles in order. Step
// calls it every tick, so the list is kept until a role comes or goes.
func (n *PaxosNet) sortedRoles() []string {
	if n.order == nil {
		n.order = slices.Sorted(maps.Keys(n.roles))
	}
	return n.order
}

// Send injects a client's output (after Propose or Read) into the network.
func (n *PaxosNet) Send(addr string) {
	if r := n.roles[addr]; r != nil {
		n.collect(addr, r)
	}
}

// Addrs lists every role address the network has known, in order. The
// list is kept until a role is added; callers must not change it.
func (n *PaxosNet) Addrs() []string {
	if n.addrs == nil {
		n.addrs = slices.Sorted(maps.Keys(n.kind))
	}
	return n.addrs
}

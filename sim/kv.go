package sim

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"

	"tide/kv"
)

// KVNet is a deterministic simulation of replicated KV nodes on a static
// ring, connected by a seeded network that drops, duplicates, delays and
// reorders messages and cuts links; nodes crash (losing everything but
// their storage and hints) and restart.
type KVNet struct {
	Rand     *rand.Rand
	Cfg      kv.Config
	Ring     *kv.StaticRing
	Now      int
	DropRate float64
	DupRate  float64
	MaxDelay int

	nodes  map[string]*kv.Node
	stores map[string]*kv.MemStorage
	hints  map[string]map[string]kv.Hint
	down   map[string]bool
	cut    map[[2]string]bool
	flight []kvFlight
	// Client receives every KindClientResp.
	Client func(m kv.Message)
	// StartRing, if set, is the ring a node starts (or restarts) with;
	// otherwise Ring. A node started with a StartRing holds client
	// requests until it is given a ring with SetRingOf, as the store's
	// nodes do until their first ring walk.
	StartRing func(a string) kv.Ring
	unready   map[string]bool
	// lagged holds, by node, a ring view SetMembersLagged has not given
	// it yet, and the tick it will.
	lagged map[string]laggedView
	// full holds the nodes whose disks are full (SetFull).
	full map[string]bool
}

type laggedView struct {
	ring *kv.StaticRing
	at   int
}

type kvFlight struct {
	m  kv.Message
	at int
}

// NewKVNet builds nodes n0..n(k-1) at random tokens.
func NewKVNet(cfg kv.Config, k int, seed uint64) *KVNet {
	net := &KVNet{Rand: rand.New(rand.NewPCG(seed, 77)), Cfg: cfg, nodes: map[string]*kv.Node{},
		stores: map[string]*kv.MemStorage{}, hints: map[string]map[string]kv.Hint{}, down: map[string]bool{}, cut: map[[2]string]bool{}}
	pos := kv.Partitioners["md5-low32"]
	var ms []kv.Member
	for i := range k {
		ms = append(ms, kv.Member{Addr: fmt.Sprintf("n%d", i), Token: net.Rand.Uint32()})
	}
	net.Ring = kv.NewStaticRing(pos, ms)
	for _, m := range ms {
		net.stores[m.Addr] = kv.NewMemStorage(pos)
		net.hints[m.Addr] = map[string]kv.Hint{}
		net.start(m.Addr)
	}
	return net
}

func (net *KVNet) start(a string) {
	var hs []kv.Hint
	for _, k := range sortedKeys(net.hints[a]) {
		hs = append(hs, net.hints[a][k])
	}
	clock := func() uint64 { return uint64(net.Now) * 1000 }
	var ring kv.Ring = net.Ring
	if net.StartRing != nil {
		ring = net.StartRing(a)
		if net.unready == nil {
			net.unready = map[string]bool{}
		}
		net.unready[a] = true
	}
	if net.Now == 0 {
		net.nodes[a] = kv.NewNode(net.Cfg, a, ring, net.stores[a], clock, hs)
		return
	}
	// A node started later (a join, a restart) starts as the store's
	// nodes do: with a ring of itself alone, then the ring it learns.
	var self []kv.Member
	for _, m := range ring.Members() {
		if m.Addr == a {
			self = append(self, m)
		}
	}
	n := kv.NewNode(net.Cfg, a, kv.NewStaticRing(net.Ring.Pos, self), net.stores[a], clock, hs)
	n.SetRing(ring)
	net.nodes[a] = n
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Addrs lists the nodes.
func (net *KVNet) Addrs() []string { return sortedKeys(net.stores) }

// Crash stops a node; its storage and persisted hints survive.
func (net *KVNet) Crash(a string) {
	tracef("%d %s crashes", net.Now, a)
	net.down[a] = true
	delete(net.nodes, a)
}

// Restart brings a node back from its storage.
func (net *KVNet) Restart(a string) {
	if net.down[a] {
		tracef("%d %s restarts with %v", net.Now, a, net.Ring.Members())
	}
	if net.down[a] {
		delete(net.down, a)
		net.start(a)
	}
}

// SetFull fills a node's disk (on) or frees it: while full, it refuses
// writes as the store's driver does (store/kvserver, space.go). A
// client's write is answered "disk full" unstored; a peer's write is
// refused (kv.Node.Refuse); a push of records is dropped. Deletes are
// taken.
func (net *KVNet) SetFull(a string, on bool) {
	if net.full == nil {
		net.full = map[string]bool{}
	}
	if on {
		net.full[a] = true
	} else {
		delete(net.full, a)
	}
}

// refused reports whether full node to turns m away, and answers it as
// the driver would.
func (net *KVNet) refused(n *kv.Node, m kv.Message) bool {
	if !net.full[m.To] || m.StoredBytes() == 0 {
		return false
	}
	switch m.Kind {
	case kv.KindClientPut:
		net.enqueue(kv.Message{Kind: kv.KindClientResp, From: m.To, To: m.From, ID: m.ID, Err: "disk full: simulated"})
	case kv.KindPut, kv.KindPutBatch:
		n.Refuse(m, "disk full: simulated")
		net.collect(m.To)
	}
	return true
}

// Down reports whether a node is crashed.
func (net *KVNet) Down(a string) bool { return net.down[a] }

// Partition cuts a link both ways; Heal restores all links.
func (net *KVNet) Partition(a, b string) {
	net.cut[[2]string{a, b}], net.cut[[2]string{b, a}] = true, true
}

// Heal restores every link.
func (net *KVNet) Heal() { clear(net.cut) }

// Node returns a live node.
func (net *KVNet) Node(a string) *kv.Node { return net.nodes[a] }

// Store returns a node's storage.
func (net *KVNet) Store(a string) *kv.MemStorage { return net.stores[a] }

// Send injects a message (from a client) into the network.
func (net *KVNet) Send(m kv.Message) { net.enqueue(m) }

func (net *KVNet) enqueue(m kv.Message) {
	if net.DropRate > 0 && net.Rand.Float64() < net.DropRate {
		return
	}
	copies := 1
	if net.DupRate > 0 && net.Rand.Float64() < net.DupRate {
		copies = 2
	}
	for range copies {
		d := 1
		if net.MaxDelay > 0 {
			d += net.Rand.IntN(net.MaxDelay + 1)
		}
		net.flight = append(net.flight, kvFlight{m: m, at: net.Now + d})
	}
}

func (net *KVNet) collect(a string) {
	n := net.nodes[a]
	rd := n.Ready()
	net.stores[a].Apply(rd.Persist)
	for _, op := range rd.Persist {
		if op.Hint != nil {
			net.hints[a][op.Hint.Target+"/"+string(op.Hint.Rec.Key)] = *op.Hint
		}
		if op.DoneHint != nil {
			delete(net.hints[a], op.DoneHint.Target+"/"+string(op.DoneHint.Rec.Key))
		}
	}
	for _, m := range rd.Messages {
		net.enqueue(m)
	}
}

// Step advances one tick: due messages are delivered in random order, then
// every live node ticks.
func (net *KVNet) Step() {
	net.Now++
	for _, a := range sortedKeys(net.lagged) {
		if lv := net.lagged[a]; lv.at <= net.Now {
			delete(net.lagged, a)
			if n := net.nodes[a]; n != nil {
				n.SetRing(lv.ring)
				tracef("%d %s runs with %v", net.Now, a, lv.ring.Members())
				delete(net.unready, a)
			}
		}
	}
	var due, later []kvFlight
	for _, f := range net.flight {
		if f.at <= net.Now {
			due = append(due, f)
		} else {
			later = append(later, f)
		}
	}
	net.flight = later
	net.Rand.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	for _, f := range due {
		m := f.m
		if net.cut[[2]string{m.From, m.To}] || net.down[m.From] {
			continue
		}
		if m.Kind == kv.KindClientResp && net.stores[m.To] == nil {
			if net.Client != nil {
				net.Client(m)
			}
			continue
		}
		n := net.nodes[m.To]
		if n == nil {
			continue
		}
		if net.unready[m.To] && net.stores[m.From] == nil {
			// A client's request waits for the node's first ring.
			net.flight = append(net.flight, kvFlight{m: m, at: net.Now + 1})
			continue
		}
		if net.refused(n, m) {
			continue
		}
		traceMsg(net.Now, m)
		n.Step(m)
		net.collect(m.To)
	}
	for _, a := range net.Addrs() {
		if n := net.nodes[a]; n != nil {
			n.Tick()
			net.collect(a)
		}
	}
}

// SetMembers changes the ring: new members start empty; every node's view
// is replaced. A node absent from members keeps running with a ring that
// leaves it out, which makes it hand everything off (a drain).
func (net *KVNet) SetMembers(ms []kv.Member) {
	net.Ring = kv.NewStaticRing(net.Ring.Pos, ms)
	for _, m := range ms {
		if _, ok := net.stores[m.Addr]; !ok {
			net.stores[m.Addr] = kv.NewMemStorage(net.Ring.Pos)
			net.hints[m.Addr] = map[string]kv.Hint{}
			net.start(m.Addr)
		}
	}
	for a, n := range net.nodes {
		n.SetRing(net.Ring)
		delete(net.unready, a)
	}
}

// SetMembersLagged is SetMembers with each running node learning of the
// change at a random tick within maxLag (new members start with it), as
// membership spreads through a real ring: meanwhile nodes run with views
// that disagree. A node that restarts meanwhile starts with the new ring.
func (net *KVNet) SetMembersLagged(ms []kv.Member, maxLag int) {
	net.Ring = kv.NewStaticRing(net.Ring.Pos, ms)
	if net.lagged == nil {
		net.lagged = map[string]laggedView{}
	}
	for _, a := range sortedKeys(net.nodes) {
		net.lagged[a] = laggedView{ring: net.Ring, at: net.Now + net.Rand.IntN(maxLag+1)}
	}
	for _, m := range ms {
		if _, ok := net.stores[m.Addr]; !ok {
			net.stores[m.Addr] = kv.NewMemStorage(net.Ring.Pos)
			net.hints[m.Addr] = map[string]kv.Hint{}
			net.start(m.Addr)
		}
	}
}

// SetRingOf gives a live node a ring view of its own (a ring walk).
func (net *KVNet) SetRingOf(a string, r kv.Ring) {
	if n := net.nodes[a]; n != nil {
		n.SetRing(r)
		delete(net.unready, a)
	}
}

// Remove takes a node out of the network for good.
func (net *KVNet) Remove(a string) {
	delete(net.nodes, a)
	delete(net.stores, a)
	delete(net.hints, a)
}

// traceKey, from TIDE_KV_TRACE, names a key whose messages the KV
// simulations print to stderr as they are delivered, with the nodes'
// crashes, restarts and lagged ring views: to follow a failing seed.
var traceKey = os.Getenv("TIDE_KV_TRACE")

func tracef(format string, args ...any) {
	if traceKey != "" {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
}

// traceMsg prints m if it is about traceKey: its tick, sender, receiver,
// kind and ID, its record, and the versions of the key it carries.
func traceMsg(now int, m kv.Message) {
	if traceKey == "" {
		return
	}
	hit := string(m.Rec.Key) == traceKey || slices.ContainsFunc(m.Keys, func(k []byte) bool { return string(k) == traceKey })
	var vs []string
	for _, r := range m.Records {
		if string(r.Key) == traceKey {
			hit = true
			vs = append(vs, fmt.Sprintf("%q@%d", r.Value, r.Version))
		}
	}
	for _, v := range m.Versions {
		if string(v.Key) == traceKey {
			hit = true
			vs = append(vs, fmt.Sprintf("@%d", v.Version))
		}
	}
	if hit {
		fmt.Fprintf(os.Stderr, "%d %s->%s %s id=%d rec=%q@%d found=%v err=%q ballot=%d carries=%v\n",
			now, m.From, m.To, m.Kind, m.ID, m.Rec.Value, m.Rec.Version, m.Found, m.Err, m.Ballot, vs)
	}
}

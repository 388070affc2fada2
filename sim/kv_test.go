package sim

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/anishathalye/porcupine"

	"tide/kv"
)

var kvSeeds = flag.Int("kv.seeds", envInt("TIDE_KV_SEEDS", 200), "seeds for the KV simulation")

// The ring-follows-failures simulation is slower per seed; the race half
// of the suite runs few, and `make test` runs many more without -race.
var kvRingSeeds = flag.Int("kv.ringseeds", envInt("TIDE_KV_RING_SEEDS", 20), "seeds for the KV simulation whose ring views follow failures")

type kvCall struct {
	in    KVInput
	call  int64
	start int
	coord string
}

// RunKV simulates one seed: 5 nodes, N=3 W=2 R=2, clients each writing
// their own keys and reading everyone's, under message loss, duplication,
// delay, partitions and node crashes; then faults heal. It returns the
// history and, after healing, whether every replica converged.
func RunKV(t *testing.T, seed uint64, faultTicks int) {
	runKV(t, seed, faultTicks, kvRunOpts{nodes: 5})
}

// kvRunOpts vary a KV simulation.
type kvRunOpts struct {
	nodes int
	// ringFollowsFailures gives each node the view a store node's ring
	// walk gives it: every walkTicks, at a phase of its own, a node
	// leaves out the members that have been down since its last walk,
	// and takes back those that answer again. A node restarts with a ring
	// of itself alone and finds the others at its first walk, a tick
	// later.
	ringFollowsFailures bool
	// lagging: clients keep running through the join and the drain, and
	// one node (the second) runs meanwhile with a view of its own that
	// misses the joining node and another member, as a node whose
	// partition has just healed may for a while (the chaos suite's
	// autoscale scenario).
	lagging bool
}

func runKV(t *testing.T, seed uint64, faultTicks int, opts kvRunOpts) {
	cfg := kv.Config{N: 3, W: 2, R: 2, ResendTicks: 5, TimeoutTicks: 60, HintTicks: 20, SyncTicks: 25, Buckets: 8, MigrationBytesPerTick: 4096}
	net := NewKVNet(cfg, opts.nodes, seed)
	const walkTicks = 100
	full := net.Ring.Members()
	var events []string // crashes, restarts and view changes, for a failure's report
	downSince := map[string]int{}
	phase := map[string]int{}
	views := map[string]string{}
	for _, m := range full {
		phase[m.Addr] = net.Rand.IntN(walkTicks)
	}
	walked := map[string]int{}
	viewOf := func(a string) []kv.Member {
		var ms []kv.Member
		for _, m := range full {
			if d, down := downSince[m.Addr]; m.Addr == a || !down || net.Now-d < walkTicks {
				ms = append(ms, m)
			}
		}
		return ms
	}
	if opts.ringFollowsFailures {
		net.StartRing = func(a string) kv.Ring {
			for _, m := range full {
				if m.Addr == a {
					walked[a] = net.Now
					return kv.NewStaticRing(net.Ring.Pos, []kv.Member{m})
				}
			}
			return net.Ring
		}
	}
	walk := func() {
		for _, a := range net.Addrs() {
			n := net.Node(a)
			if n == nil || (net.Now-walked[a] < walkTicks && (net.Now+phase[a])%walkTicks != 0 && net.Now-walked[a] != 1) {
				continue
			}
			walked[a] = net.Now
			ms := viewOf(a)
			if v := fmt.Sprint(ms); v != views[a] {
				views[a] = v
				net.SetRingOf(a, kv.NewStaticRing(net.Ring.Pos, ms))
				events = append(events, fmt.Sprintf("tick %d: %s's view: %s", net.Now, a, v))
			}
		}
	}
	net.DropRate, net.DupRate, net.MaxDelay = 0.05, 0.03, 3
	const clients = 3
	var clock int64
	pending := map[uint64]*kvCall{}
	var history []porcupine.Operation
	var vias []string // for each operation of history: when, which client, through which node
	record := func(op porcupine.Operation, c *kvCall, done string) {
		history = append(history, op)
		vias = append(vias, fmt.Sprintf("ticks %d..%s  c%d via %s", c.start, done, op.ClientId, c.coord))
	}
	var nextID uint64
	busy := make([]bool, clients)
	owner := map[uint64]int{}
	net.Client = func(m kv.Message) {
		c := pending[m.ID]
		if c == nil {
			return
		}
		delete(pending, m.ID)
		ci := owner[m.ID]
		busy[ci] = false
		clock++
		op := porcupine.Operation{ClientId: ci, Input: c.in, Call: c.call, Return: clock}
		if m.Err != "" {
			if c.in.Op == "get" {
				return // a failed read has no effect
			}
			op.Output, op.Return = nil, math.MaxInt64
		} else if c.in.Op == "get" {
			op.Output = KVOutput{OK: true, Found: m.Found, Value: string(m.Rec.Value)}
		} else {
			op.Output = KVOutput{OK: true, Found: true}
		}
		record(op, c, fmt.Sprint(net.Now))
	}
	addrs := net.Addrs()
	seq := 0
	issue := func(ci int) {
		nextID++
		seq++
		// Writes spread over 8 keys per client; reads touch only the first
		// two, so the others converge only through hints and anti-entropy.
		key := fmt.Sprintf("c%d-k%d", ci, net.Rand.IntN(8))
		in := KVInput{Key: key}
		m := kv.Message{From: fmt.Sprintf("client%d", ci), ID: nextID, Rec: kv.Record{Key: []byte(key)}}
		if net.Rand.IntN(2) == 0 {
			in.Op, in.Value = "put", fmt.Sprintf("v%d", seq)
			m.Kind, m.Rec.Value = kv.KindClientPut, []byte(in.Value)
		} else {
			in.Op = "get"
			m.Kind = kv.KindClientGet
			in.Key = fmt.Sprintf("c%d-k%d", ci, net.Rand.IntN(2))
			m.Rec.Key = []byte(in.Key)
			// read someone else's key too
			if net.Rand.IntN(2) == 0 {
				in.Key = fmt.Sprintf("c%d-k%d", net.Rand.IntN(clients), net.Rand.IntN(2))
				m.Rec.Key = []byte(in.Key)
			}
		}
		coord := addrs[net.Rand.IntN(len(addrs))]
		m.To = coord
		clock++
		pending[nextID] = &kvCall{in: in, call: clock, start: net.Now, coord: coord}
		owner[nextID] = ci
		busy[ci] = true
		net.Send(m)
	}
	lag := func() {
		if !opts.lagging {
			return
		}
		var ms []kv.Member
		for _, m := range net.Ring.Members() {
			if m.Addr != "n5" && m.Addr != addrs[2] {
				ms = append(ms, m)
			}
		}
		net.SetRingOf(addrs[1], kv.NewStaticRing(net.Ring.Pos, ms))
		events = append(events, fmt.Sprintf("tick %d: %s's view: %v", net.Now, addrs[1], ms))
	}
	fullRand := rand.New(rand.NewPCG(seed, 91))
	fullDisk := map[string]bool{}
	total := faultTicks + 2000
	for tick := 0; tick < total; tick++ {
		faulty := tick < faultTicks
		if tick == faultTicks {
			for _, a := range addrs {
				net.Restart(a)
			}
			if opts.ringFollowsFailures {
				// Healed: every view is the whole ring again before the
				// join and the drain below change it.
				clear(downSince)
				net.StartRing = nil
				net.SetMembers(full)
			}
			net.Heal()
			for a := range fullDisk {
				net.SetFull(a, false)
			}
			clear(fullDisk)
			net.DropRate, net.DupRate, net.MaxDelay = 0, 0, 0
		}
		if faulty && net.Rand.IntN(30) == 0 {
			a := addrs[net.Rand.IntN(len(addrs))]
			switch net.Rand.IntN(4) {
			case 0:
				down := 0
				for _, x := range addrs {
					if net.Down(x) {
						down++
					}
				}
				if down < 2 && !net.Down(a) {
					net.Crash(a)
					downSince[a] = net.Now
					events = append(events, fmt.Sprintf("tick %d: %s crashed", net.Now, a))
				}
			case 1:
				if net.Down(a) {
					events = append(events, fmt.Sprintf("tick %d: %s restarted", net.Now, a))
					delete(downSince, a)
					views[a] = ""
					net.Restart(a)
				}
			case 2:
				net.Partition(a, addrs[net.Rand.IntN(len(addrs))])
			default:
				net.Heal()
			}
		}
		// Disks fill and free, on a random stream of their own so that
		// the faults above stay what each seed made them before.
		if faulty && fullRand.IntN(150) == 0 {
			a := addrs[fullRand.IntN(len(addrs))]
			on := !fullDisk[a] && len(fullDisk) < 2
			if on {
				fullDisk[a] = true
			} else {
				delete(fullDisk, a)
			}
			net.SetFull(a, on)
			events = append(events, fmt.Sprintf("tick %d: %s's disk full: %v", net.Now, a, on))
		}
		// A client whose coordinator vanished gives up after a while: its
		// operation's outcome is unknown.
		for id, c := range pending {
			if net.Now-c.start > 200 {
				delete(pending, id)
				busy[owner[id]] = false
				if c.in.Op != "get" {
					record(porcupine.Operation{ClientId: owner[id], Input: c.in, Call: c.call, Output: nil, Return: math.MaxInt64}, c, "never")
				}
			}
		}
		if opts.ringFollowsFailures && faulty {
			walk()
		}
		for ci := range clients {
			if !busy[ci] && (tick < faultTicks+300 || opts.lagging && tick < faultTicks+1300) && net.Rand.IntN(4) == 0 {
				issue(ci)
			}
		}
		switch tick {
		case faultTicks + 400:
			// A sixth node joins at a random token.
			ms := net.Ring.Members()
			net.SetMembers(append(append([]kv.Member(nil), ms...), kv.Member{Addr: "n5", Token: net.Rand.Uint32()}))
			lag()
		case faultTicks + 900:
			// n0 drains: the ring leaves it out; it hands everything off.
			var ms []kv.Member
			for _, m := range net.Ring.Members() {
				if m.Addr != "n0" {
					ms = append(ms, m)
				}
			}
			net.SetMembers(ms)
			lag()
		case faultTicks + 1200:
			if opts.lagging {
				net.SetRingOf(addrs[1], net.Ring)
				events = append(events, fmt.Sprintf("tick %d: %s's view: the ring's", net.Now, addrs[1]))
			}
		case faultTicks + 1900:
			if k := net.Store("n0").Len(); k != 0 {
				t.Errorf("seed %d: drained node still holds %d records", seed, k)
			}
			// It has handed everything off: it says it left, and goes.
			for _, a := range net.Addrs() {
				if n := net.Node(a); n != nil {
					n.MemberLeft("n0")
				}
			}
			net.Remove("n0")
		}
		net.Step()
	}
	addrs = net.Addrs()
	if err := linearizable(history, linearizeTimeout); err != nil {
		t.Errorf("seed %d: %v", seed, err)
		for _, k := range IllegalKeys(history, func(i int) string { return vias[i] }) {
			t.Log(k)
		}
		for _, e := range events {
			t.Log(e)
		}
	}
	// Convergence: every key's replicas hold identical records, and no
	// node holds a key it does not replicate.
	keys := map[string]bool{}
	for _, a := range addrs {
		net.Store(a).Scan(0, 0, func(_ uint32, r kv.Record) bool { keys[string(r.Key)] = true; return true })
	}
	for _, a := range addrs {
		net.Store(a).Scan(0, 0, func(pos uint32, r kv.Record) bool {
			if pref := net.Ring.Preference(pos, cfg.N); !slices.Contains(pref, a) {
				t.Errorf("seed %d: %s still holds %s, which it does not replicate", seed, a, r.Key)
			}
			return true
		})
	}
	for k := range keys {
		pref := net.Ring.Preference(net.Ring.Position([]byte(k)), cfg.N)
		var first *kv.Record
		for _, a := range pref {
			r, ok, _ := net.Store(a).Get([]byte(k))
			if !ok {
				t.Errorf("seed %d: key %s missing on replica %s after healing", seed, k, a)
				continue
			}
			if first == nil {
				first = &r
			} else if r.Version != first.Version {
				t.Errorf("seed %d: key %s diverged: %d on %s vs %d", seed, k, r.Version, a, first.Version)
			}
		}
	}
	// The counts a driver keeps from the persisted ops (Had, HadBytes)
	// match what each store held.
	for _, a := range addrs {
		if c := net.Store(a).Miscounts; c > 0 {
			t.Errorf("seed %d: %d persisted ops on %s misreported what the key held before", seed, c, a)
		}
	}
	if t.Failed() {
		t.Logf("reproduce: go test ./sim -run TestKVSimulation -kv.seeds=%d (seed %d)", seed+1, seed)
	}
}

// TestKVRingFollowsFailures runs the simulation with the ring a store
// node builds from its walk: a crashed node leaves every view once the
// walk misses it, and rejoins when it restarts.
func TestKVRingFollowsFailures(t *testing.T) {
	for seed := range uint64(*kvRingSeeds) {
		runKV(t, seed, 1500, kvRunOpts{nodes: 4, ringFollowsFailures: true})
		if t.Failed() {
			t.Logf("reproduce: go test ./sim -run TestKVRingFollowsFailures -kv.ringseeds=%d (seed %d)", seed+1, seed)
			return
		}
	}
}

// TestKVLaggingViewUnderLoad runs clients through a join and a drain
// while one node runs with a view that misses the new node and another
// member.
func TestKVLaggingViewUnderLoad(t *testing.T) {
	for seed := range uint64(*kvRingSeeds) {
		runKV(t, seed, 1500, kvRunOpts{nodes: 5, lagging: true, ringFollowsFailures: true})
		if t.Failed() {
			t.Logf("reproduce: go test ./sim -run TestKVLaggingViewUnderLoad -kv.ringseeds=%d (seed %d)", seed+1, seed)
			return
		}
	}
}

func TestKVSimulation(t *testing.T) {
	for seed := range uint64(*kvSeeds) {
		RunKV(t, seed, 1500)
		if t.Failed() {
			return
		}
	}
}

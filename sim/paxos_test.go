package sim

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"

	"tide/paxos"
)

// paxosSeeds is how many seeds TestPaxosSimulation runs: -paxos.seeds, or
// TIDE_PAXOS_SEEDS, or 200. -paxos.seed=N runs seed N alone, which is how a
// failing seed is reproduced:
//
//	go test ./sim -run TestPaxosSimulation -paxos.seed=N -v
var (
	paxosSeeds = flag.Int("paxos.seeds", envInt("TIDE_PAXOS_SEEDS", 200), "seeds for the Paxos simulation")
	paxosSeed  = flag.Int("paxos.seed", -1, "run only this Paxos simulation seed")
	// -paxos.from explores seeds CI does not run: -paxos.from=2000
	// -paxos.seeds=4000 runs seeds 2000 to 5999.
	paxosFrom = flag.Int("paxos.from", envInt("TIDE_PAXOS_FROM", 0), "first seed of the Paxos simulation")
)

// paxosConfig is a full compartmentalized deployment: 3 leaders, 3 proxy
// leaders and 3 replicas, with acceptors, batchers and unbatchers shaped by
// variant (taken mod 5).
func paxosConfig(variant int) paxos.Config {
	cfg := paxos.Config{
		Leaders:      []string{"leader0", "leader1", "leader2"},
		ProxyLeaders: []string{"proxy0", "proxy1", "proxy2"},
		Groups: []paxos.Group{
			{Acceptors: []string{"acc0.0", "acc0.1", "acc0.2"}},
			{Acceptors: []string{"acc1.0", "acc1.1", "acc1.2"}},
		},
		Replicas:      []string{"replica0", "replica1", "replica2"},
		BatchSize:     4,
		SnapshotEvery: 16,
	}
	switch variant % 5 {
	case 0: // batched, with unbatchers
		cfg.Batchers = []string{"batcher0", "batcher1"}
		cfg.Unbatchers = []string{"unbatcher0", "unbatcher1"}
	case 1: // no batchers: clients talk to the leader, replicas to clients
	case 2: // one group as a 2x2 grid
		cfg.Batchers = []string{"batcher0"}
		cfg.Groups = []paxos.Group{{Acceptors: []string{"g00", "g01", "g10", "g11"}, Rows: 2, Cols: 2}}
	case 3: // one group as a 2x3 grid: read quorums of 3, write quorums of 2
		cfg.Batchers = []string{"batcher0"}
		cfg.Unbatchers = []string{"unbatcher0"}
		cfg.Groups = []paxos.Group{{Acceptors: []string{"g00", "g01", "g02", "g10", "g11", "g12"}, Rows: 2, Cols: 3}}
	case 4: // a 3x2 grid (read quorums of 2, write quorums of 3) beside a majority group
		cfg.Groups = []paxos.Group{
			{Acceptors: []string{"g00", "g01", "g10", "g11", "g20", "g21"}, Rows: 3, Cols: 2},
			{Acceptors: []string{"acc1.0", "acc1.1", "acc1.2"}},
		}
	}
	return cfg
}

// Scenario is what one simulated run exercises besides its seed.
type Scenario struct {
	// Variant is the deployment's shape (see paxosConfig).
	Variant int
	// Hosts lists, for each client address, how many sessions it holds
	// (see ClientHost): a host with several keeps several commands in
	// flight at once.
	Hosts []int
	// OneWay lets a partition cut a link in one direction only, and lets
	// partitions cut clients off as well as roles.
	OneWay bool
	// Duel cuts the leaders off from each other while faults last (every
	// other role still reaches all of them) and shortens election
	// timeouts, so that leaders keep preempting each other, in phase 1 and
	// in the middle of phase 2: slots collect different values accepted in
	// different ballots, and every phase 1 must pick the right one.
	Duel bool
	// Reconfig adds matchmakers and, while faults last, changes the
	// configuration every so often: roles of every kind join and leave,
	// acceptor groups are added, removed and replaced (one member or the
	// whole group), and what leaves is stopped for good once it may be.
	Reconfig bool
	// Wipe loses one replica's disk once while faults last (it restarts
	// empty), and in reconfiguration runs loses an acceptor's disk too,
	// which the operator answers by replacing the acceptor.
	Wipe bool
	// Stores keeps durable state in pebble through paxos/node.Store, as
	// the real driver does, so restarts reload what that code decodes.
	Stores bool
}

func (sc Scenario) String() string {
	return fmt.Sprintf("variant %d, hosts %v, one-way %v, duel %v, reconfig %v, wipe %v, stores %v", sc.Variant%5, sc.Hosts, sc.OneWay, sc.Duel, sc.Reconfig, sc.Wipe, sc.Stores)
}

// legacyScenario is what every seed ran before scenarios existed: four
// one-session clients, two-way partitions, no duels, three shapes. The
// regression seeds were found under it and keep it.
func legacyScenario(seed uint64) Scenario {
	return Scenario{Variant: int(seed % 3), Hosts: []int{1, 1, 1, 1}}
}

// scenarioFor is TestPaxosSimulation's mix: every shape (seed mod 5), a
// duel on every fourth seed (seed mod 4 == 3, so every shape duels), one-way
// cuts always, and three client hosts of one to three sessions.
func scenarioFor(seed uint64) Scenario {
	r := rand.New(rand.NewPCG(seed, 0x5ce7a210))
	return Scenario{
		Variant:  int(seed % 5),
		Hosts:    []int{1, 1 + r.IntN(3), 1 + r.IntN(3)},
		OneWay:   true,
		Duel:     seed%4 == 3,
		Reconfig: seed%3 != 2,
		Wipe:     true,
		Stores:   seed%10 == 5,
	}
}

// traceHook, when set by a debugging test, sees every delivered message.
var traceHook func(now int, m paxos.Message)

type simOp struct {
	seq  uint64
	in   KVInput
	call int64
}

// simSession is one client session: one command in flight at a time.
type simSession struct {
	name string // the prefix of the values it writes
	host string
	c    *paxos.Client
	op   *simOp
	next int
}

// PaxosRun is the outcome of one simulated run.
type PaxosRun struct {
	History    []porcupine.Operation
	Violations []string
	Completed  int
	Stuck      string // non-empty if progress did not resume
	Net        *PaxosNet
	reconf     *reconfigurer
}

// RunPaxos simulates one seed: client sessions issue random operations on a
// few keys while the network drops, duplicates, delays and reorders
// messages, links are cut, and roles crash and restart (never so many
// acceptors of a group that no read or no write quorum is left up); then
// every fault is healed and all operations must complete.
func RunPaxos(seed uint64, sc Scenario, faultTicks, healTicks int) PaxosRun {
	var run PaxosRun
	cfg := paxosConfig(sc.Variant)
	if sc.Duel {
		// A leader campaigns after 6 to 11 silent ticks, one or two phase 2
		// round trips (a hop takes 1 to 4 ticks): 6 caught a leader that
		// re-proposed the wrong value of a slot most often among 2 to 20.
		// Heartbeats every tick keep a leader in place once the leaders
		// hear each other again.
		cfg.HeartbeatTicks, cfg.ElectionTicks = 1, 6
	}
	if sc.Reconfig {
		cfg.Matchmakers = []string{"mm0", "mm1", "mm2"}
	}
	net := NewPaxosNet(cfg, seed)
	net.UseStores = sc.Stores
	defer net.Close()
	if traceHook != nil {
		net.Trace = traceHook
	}
	var rc *reconfigurer
	if sc.Reconfig {
		rc = newReconfigurer(net, cfg, seed)
		run.reconf = rc
	}
	net.DropRate = 0.05
	net.DupRate = 0.03
	net.MaxDelay = 3
	var sessions []*simSession
	var hosts []string
	for i, n := range sc.Hosts {
		addr := fmt.Sprintf("client%d", i)
		h := NewClientHost(cfg, addr, uint64(len(sessions)+1), n)
		net.AddClient(addr, h)
		hosts = append(hosts, addr)
		for j, c := range h.Sessions {
			name := addr
			if n > 1 {
				name = fmt.Sprintf("%s.%d", addr, j)
			}
			sessions = append(sessions, &simSession{name: name, host: addr, c: c})
		}
	}
	var clock int64
	keys := []string{"a", "b", "c"}
	issue := func(ss *simSession) {
		if ss.c.Pending() > 0 {
			panic(fmt.Sprintf("session %s would have two commands in flight", ss.name))
		}
		ss.next++
		in := KVInput{Key: keys[net.Rand.IntN(len(keys))]}
		var seq uint64
		switch r := net.Rand.IntN(10); {
		case r < 3:
			in.Op = "put"
			in.Value = fmt.Sprintf("%s-%d", ss.name, ss.next)
			seq = ss.c.Propose(paxos.EncodeKV(paxos.KVOp{Op: "put", Key: in.Key, Value: []byte(in.Value)}))
		case r < 5:
			in.Op = "get"
			seq = ss.c.Propose(paxos.EncodeKV(paxos.KVOp{Op: "get", Key: in.Key}))
		case r < 7:
			in.Op = "get"
			seq = ss.c.Read(paxos.EncodeKV(paxos.KVOp{Op: "get", Key: in.Key}), paxos.ReadQuorum)
		case r < 8:
			in.Op = "del"
			seq = ss.c.Propose(paxos.EncodeKV(paxos.KVOp{Op: "del", Key: in.Key}))
		default:
			in.Op = "cas"
			in.Value = fmt.Sprintf("%s-%d", ss.name, ss.next)
			var expect []byte
			if net.Rand.IntN(3) > 0 {
				e := fmt.Sprintf("%s-%d", sessions[net.Rand.IntN(len(sessions))].name, net.Rand.IntN(ss.next+1))
				if net.Rand.IntN(2) == 0 {
					e = fmt.Sprintf("%s-%d", ss.name, ss.next-1)
				}
				in.Expect = &e
				expect = []byte(e)
			}
			seq = ss.c.Propose(paxos.EncodeKV(paxos.KVOp{Op: "cas", Key: in.Key, Value: []byte(in.Value), Expect: expect}))
		}
		clock++
		ss.op = &simOp{seq: seq, in: in, call: clock}
		net.Send(ss.host)
	}
	harvest := func() {
		for i, ss := range sessions {
			for _, done := range ss.c.Completed() {
				if ss.op == nil || done.Seq != ss.op.seq {
					continue
				}
				res, err := paxos.DecodeKVResult(done.Result)
				if err != nil || res.Err != "" {
					run.Violations = append(run.Violations, fmt.Sprintf("bad result for %+v: %v %s", ss.op.in, err, res.Err))
				}
				clock++
				run.History = append(run.History, porcupine.Operation{
					ClientId: i, Input: ss.op.in, Call: ss.op.call, Return: clock,
					Output: KVOutput{OK: res.OK, Found: res.Found, Value: string(res.Value)},
				})
				run.Completed++
				ss.op = nil
			}
		}
	}
	all := cfg.All()
	// Partitions may cut clients off too in the broader fault model.
	ends := all
	if sc.OneWay {
		ends = append(slices.Clip(all), hosts...)
	}
	acceptorGroup := map[string]int{}
	for gi, g := range cfg.Groups {
		for _, a := range g.Acceptors {
			acceptorGroup[a] = gi
		}
	}
	wipeAt := -1
	if sc.Wipe {
		wipeAt = net.Rand.IntN(faultTicks / 2)
	}
	for t := 0; t < faultTicks+healTicks; t++ {
		faulty := t < faultTicks
		if t == faultTicks {
			net.RestartAll()
			net.Heal()
			net.DropRate, net.DupRate, net.MaxDelay = 0, 0, 0
		}
		if rc != nil {
			if faulty && net.Rand.IntN(80) == 0 {
				rc.propose()
			}
			rc.settle()
			all = rc.members()
			if sc.OneWay {
				ends = append(slices.Clip(all), hosts...)
			}
		}
		if sc.Wipe && t == wipeAt {
			// Lose a replica's disk. A replica that stays down for good
			// is the same to the others; this one comes back empty.
			// Only while the others can cover for it: replicas let
			// acceptors forget a slot once a quorum of them holds it, so
			// of 3 or more, one may lose everything.
			replicas := cfg.Replicas
			if rc != nil {
				replicas = rc.op.Config().Replicas
			}
			if r := replicas[net.Rand.IntN(len(replicas))]; len(replicas) >= 3 && !net.Gone(r) {
				net.WipeDisk(r)
			}
		}
		if sc.Wipe && rc != nil && t == wipeAt+faultTicks/4 && !rc.op.Busy() {
			rc.loseAcceptor()
		}
		if faulty && net.Rand.IntN(25) == 0 {
			a := all[net.Rand.IntN(len(all))]
			switch r := net.Rand.IntN(6); {
			case r < 2:
				if rc != nil {
					if !rc.mayCrash(a) {
						break
					}
				} else if gi, isAcc := acceptorGroup[a]; isAcc && !quorumsSurvive(cfg.Groups[gi], net, a) {
					break
				}
				net.Crash(a)
			case r < 4:
				for _, d := range sortedStrings(net.down) {
					net.Restart(d)
					break
				}
			case r < 5:
				b := ends[net.Rand.IntN(len(ends))]
				if sc.OneWay && net.Rand.IntN(2) == 0 {
					if net.Rand.IntN(2) == 0 {
						a, b = b, a
					}
					net.Cut(a, b)
				} else {
					net.Partition(a, b)
				}
			default:
				net.Heal()
			}
		}
		if faulty && sc.Duel {
			leaders := cfg.Leaders
			if rc != nil {
				leaders = rc.op.Config().Leaders
			}
			for i, a := range leaders {
				for _, b := range leaders[i+1:] {
					net.Partition(a, b)
				}
			}
		}
		for _, ss := range sessions {
			if ss.op == nil && (faulty || t < faultTicks+healTicks/2) && net.Rand.IntN(3) == 0 {
				issue(ss)
			}
		}
		net.Step()
		harvest()
		if !faulty {
			pending := 0
			for _, ss := range sessions {
				if ss.op != nil {
					pending++
				}
			}
			if t >= faultTicks+healTicks/2 && pending == 0 && (rc == nil || !rc.op.Busy()) {
				break
			}
		}
	}
	for _, ss := range sessions {
		if ss.op != nil && run.Stuck == "" {
			run.Stuck = fmt.Sprintf("%s still waiting for %+v after faults stopped %d ticks ago", ss.name, ss.op.in, healTicks)
		}
	}
	if rc != nil && rc.op.Busy() && run.Stuck == "" {
		run.Stuck = fmt.Sprintf("reconfiguration to epoch %d still not chosen after faults stopped %d ticks ago", rc.op.pending.Epoch, healTicks)
	}
	run.Violations = append(run.Violations, net.Violations...)
	run.Net = net
	return run
}

// quorumsSurvive reports whether g keeps both a read quorum and a write
// quorum of live acceptors if crash goes down as well: a majority, or for
// a grid a full row and a full column. While they survive, a leader with
// the network healed enough can always finish phase 1 and phase 2.
func quorumsSurvive(g paxos.Group, net *PaxosNet, crash string) bool {
	live := map[string]bool{}
	for _, a := range g.Acceptors {
		if a != crash && !net.Down(a) {
			live[a] = true
		}
	}
	return g.IsReadQuorum(live) && g.IsWriteQuorum(live)
}

// checkRun fails t unless run was safe (no violation), live (every
// operation completed once faults healed) and linearizable. repro is the
// command that runs the seed again.
func checkRun(t *testing.T, seed uint64, sc Scenario, run PaxosRun, repro string) {
	t.Helper()
	for i, v := range run.Violations {
		if i == 10 {
			t.Errorf("seed %d: %d more safety violations", seed, len(run.Violations)-i)
			break
		}
		t.Errorf("seed %d (%s): safety: %s", seed, sc, v)
	}
	if run.Stuck != "" {
		// Operations still pending may or may not have taken effect; the
		// history cannot be judged without them.
		t.Errorf("seed %d (%s): liveness: %s", seed, sc, run.Stuck)
	} else if err := linearizable(run.History, linearizeTimeout); err != nil {
		t.Errorf("seed %d (%s): %v", seed, sc, err)
	}
	if t.Failed() {
		if run.reconf != nil {
			t.Logf("seed %d: %d changes chosen, %d refused:\n%s", seed, run.reconf.op.Done, run.reconf.op.Refused, strings.Join(run.reconf.Changes, "\n"))
		}
		t.Logf("reproduce: %s", repro)
	}
}

func TestPaxosSimulation(t *testing.T) {
	repro := func(seed uint64) string {
		return fmt.Sprintf("go test ./sim -run TestPaxosSimulation -paxos.seed=%d -v", seed)
	}
	if *paxosSeed >= 0 {
		seed := uint64(*paxosSeed)
		sc := scenarioFor(seed)
		run := RunPaxos(seed, sc, 1500, 3000)
		t.Logf("seed %d (%s): %d operations completed", seed, sc, run.Completed)
		checkRun(t, seed, sc, run, repro(seed))
		return
	}
	total := 0
	for i := range uint64(*paxosSeeds) {
		seed := uint64(*paxosFrom) + i
		sc := scenarioFor(seed)
		run := RunPaxos(seed, sc, 1500, 3000)
		total += run.Completed
		checkRun(t, seed, sc, run, repro(seed))
		if t.Failed() {
			return
		}
	}
	t.Logf("%d seeds, %d operations checked", *paxosSeeds, total)
}

// TestPaxosRegressionSeeds pins the seeds on which the simulator found
// bugs, whatever the seed count, each in the scenario it was found in:
//   - 0: a leader that learned a slot chosen in an older ballot counted it
//     without knowing its value, so replicas that missed it never got it;
//     and replicas restarted empty after acceptors had forgotten the log
//     (replica snapshots are durable now, and GC follows them).
//   - 43: a restarted leader reused its old ballot (ballots are persisted
//     now); and a GC'd slot left the leader's watermark stuck.
//   - 116: a re-elected leader kept assigning slots past holes it had
//     handed out under a preempted ballot, which nothing ever filled.
//
// And of the reconfiguring scenarios:
//   - 714 (with resend backoff): the leader that chose epochs 4-6 was
//     removed; the standbys, at epoch 3, were refused by the matchmakers
//     forever, since every role they asked for the newer configuration
//     was behind too (matchmakers now keep the newest configuration a
//     round registered under and hand it to a refused leader).
//   - 1324 (with client backoff): a leader learnt epoch 9 while its
//     round, registered under epoch 5, was being refused, and resent
//     that round forever (it now registers a new one under epoch 9).
//   - 1519 (with client backoff): a candidate resent phase 1a to the
//     removed acceptors of rounds a newer leader had retired since, and
//     never heard back (phase 1 that stalls now matches again).
//   - 1341 (once a restarted first leader stopped campaigning at once):
//     a leader removed by epoch 2, whom no one told, led under epoch 1
//     and its heartbeats held off the others (a role that hears a
//     heartbeat of an older epoch now sends its configuration back).
//   - 2322 (with client backoff): a client whose batcher had left asked
//     for a newer configuration only every other backed-off resend, and
//     its command outlived the run (clients now ask at the base pace, and
//     resend at once on a new configuration).
func TestPaxosRegressionSeeds(t *testing.T) {
	for _, seed := range []uint64{0, 43, 116} {
		sc := legacyScenario(seed)
		checkRun(t, seed, sc, RunPaxos(seed, sc, 1500, 3000), "go test ./sim -run TestPaxosRegressionSeeds -v")
	}
	for _, seed := range []uint64{714, 1324, 1519, 1341, 2322} {
		sc := scenarioFor(seed)
		checkRun(t, seed, sc, RunPaxos(seed, sc, 1500, 3000), "go test ./sim -run TestPaxosRegressionSeeds -v")
	}
}

package sim

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"tide/kv"
)

// casSeeds: 60 seeds, or 6 under the race detector (make test runs the
// suite with -race; the mutants and TIDE_CAS_SEEDS=300 run it plain).
var casSeeds = flag.Int("cas.seeds", envInt("TIDE_CAS_SEEDS", map[bool]int{false: 60, true: 6}[raceEnabled]), "seeds for the lightweight transaction simulation")

// RunCas simulates one seed of lightweight transactions: 5 nodes, N=3
// W=2 R=2, four clients racing INCRBY, SETNX, GETSET and APPEND on a few
// shared keys through random coordinators, and reading them with plain
// GETs, under message loss, duplication, delay, partitions, crashes and
// ring changes (a node joins during the faults, another drains). APPEND
// runs too, on a key of its own. The
// history must be linearizable (CasModel), and after healing every
// counter must equal the sum of the increments acknowledged, plus some of
// those whose outcome is unknown.
func RunCas(t *testing.T, seed uint64, faultTicks int) {
	cfg := kv.Config{N: 3, W: 2, R: 2, ResendTicks: 5, TimeoutTicks: 80, HintTicks: 20, SyncTicks: 25, Buckets: 8, MigrationBytesPerTick: 4096}
	net := NewKVNet(cfg, 5, seed)
	net.DropRate, net.DupRate, net.MaxDelay = 0.05, 0.03, 3
	const clients = 4
	var clock int64
	type call struct {
		in    CasInput
		call  int64
		start int
	}
	pending := map[uint64]*call{}
	owner := map[uint64]int{}
	busy := make([]bool, clients)
	var history []porcupine.Operation
	var nextID uint64
	acked := map[string]int64{} // counter key -> sum of acknowledged increments
	unknown := map[string]int64{}
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
		d, _ := strconv.ParseInt(c.in.Value, 10, 64)
		switch {
		case m.Err != "" && c.in.Op == "get":
			return
		case m.Err != "":
			op.Output, op.Return = nil, math.MaxInt64
			if c.in.Op == "incr" {
				unknown[c.in.Key] += d
			}
		case c.in.Op == "get":
			op.Output = CasOutput{Found: m.Found, Value: string(m.Rec.Value)}
		case c.in.Op == "incr" || c.in.Op == "append":
			op.Output = CasOutput{Value: string(m.Rec.Value)}
			if c.in.Op == "incr" {
				acked[c.in.Key] += d
			}
		case c.in.Op == "setnx":
			op.Output = CasOutput{Found: m.Found}
		case c.in.Op == "getset":
			out := CasOutput{}
			if len(m.Records) == 1 {
				out = CasOutput{Found: true, Value: string(m.Records[0].Value)}
			}
			op.Output = out
		}
		history = append(history, op)
	}
	addrs := net.Addrs()
	seq := 0
	issue := func(ci int) {
		nextID++
		seq++
		in := CasInput{}
		m := kv.Message{From: fmt.Sprintf("client%d", ci), ID: nextID, Kind: kv.KindClientCas}
		switch r := net.Rand.IntN(10); {
		case r < 4:
			in = CasInput{Op: "incr", Key: fmt.Sprintf("ctr%d", net.Rand.IntN(3)), Value: strconv.Itoa(1 + net.Rand.IntN(3))}
			m.Keys = kv.Op{[]byte(kv.OpIncrBy), []byte(in.Value)}
		case r < 5:
			in = CasInput{Op: "setnx", Key: fmt.Sprintf("str%d", net.Rand.IntN(3)), Value: fmt.Sprintf("s%d", seq)}
			m.Keys = kv.OpSetArgs([]byte(in.Value), "nx", 0, false)
		case r < 6:
			in = CasInput{Op: "getset", Key: fmt.Sprintf("str%d", net.Rand.IntN(3)), Value: fmt.Sprintf("g%d", seq)}
			m.Keys = kv.OpSetArgs([]byte(in.Value), "", 0, false)
		case r < 7:
			// APPEND's results depend on which unknown outcomes took
			// effect, which porcupine would have to try in every
			// combination: it has a key of its own, and one client.
			if ci != 0 {
				in = CasInput{Op: "incr", Key: "ctr0", Value: "1"}
				m.Keys = kv.Op{[]byte(kv.OpIncrBy), []byte(in.Value)}
				break
			}
			in = CasInput{Op: "append", Key: "app", Value: fmt.Sprintf("+%d", seq)}
			m.Keys = kv.Op{[]byte(kv.OpAppend), []byte(in.Value)}
		default:
			keys := []string{"ctr0", "ctr1", "ctr2", "str0", "str1", "str2", "app"}
			in = CasInput{Op: "get", Key: keys[net.Rand.IntN(len(keys))]}
			m.Kind = kv.KindClientGet
		}
		m.Rec.Key = []byte(in.Key)
		m.To = addrs[net.Rand.IntN(len(addrs))]
		clock++
		pending[nextID] = &call{in: in, call: clock, start: net.Now}
		owner[nextID] = ci
		busy[ci] = true
		net.Send(m)
	}
	total := faultTicks + 1500
	for tick := 0; tick < total; tick++ {
		faulty := tick < faultTicks
		if tick == faultTicks {
			for _, a := range addrs {
				net.Restart(a)
			}
			net.Heal()
			net.DropRate, net.DupRate, net.MaxDelay = 0, 0, 0
		}
		if faulty && net.Rand.IntN(40) == 0 {
			a := addrs[net.Rand.IntN(len(addrs))]
			switch net.Rand.IntN(4) {
			case 0:
				down := 0
				for _, x := range addrs {
					if net.Down(x) {
						down++
					}
				}
				if down < 1 {
					net.Crash(a)
				}
			case 1:
				net.Restart(a)
			case 2:
				net.Partition(a, addrs[net.Rand.IntN(len(addrs))])
			default:
				net.Heal()
			}
		}
		for id, c := range pending {
			if net.Now-c.start > 300 {
				delete(pending, id)
				busy[owner[id]] = false
				if c.in.Op != "get" {
					history = append(history, porcupine.Operation{ClientId: owner[id], Input: c.in, Call: c.call, Output: nil, Return: math.MaxInt64})
					if c.in.Op == "incr" {
						d, _ := strconv.ParseInt(c.in.Value, 10, 64)
						unknown[c.in.Key] += d
					}
				}
			}
		}
		for ci := range clients {
			if !busy[ci] && tick < faultTicks+300 && net.Rand.IntN(3) == 0 {
				issue(ci)
			}
		}
		switch tick {
		case faultTicks / 2:
			// A sixth node joins at a random token, during the faults.
			ms := net.Ring.Members()
			net.SetMembers(append(append([]kv.Member(nil), ms...), kv.Member{Addr: "n5", Token: net.Rand.Uint32()}))
			addrs = net.Addrs()
		case faultTicks + 400:
			// n1 drains: the ring leaves it out; it hands everything off.
			var ms []kv.Member
			for _, m := range net.Ring.Members() {
				if m.Addr != "n1" {
					ms = append(ms, m)
				}
			}
			net.SetMembers(ms)
		}
		net.Step()
	}
	// After healing, a last read of each counter through every node.
	for _, key := range []string{"ctr0", "ctr1", "ctr2"} {
		for _, a := range net.Addrs() {
			if a == "n1" {
				continue
			}
			var got *kv.Message
			net.Client = func(m kv.Message) { got = &m }
			net.Send(kv.Message{Kind: kv.KindClientGet, From: "checker", To: a, ID: 1 << 40, Rec: kv.Record{Key: []byte(key)}})
			for i := 0; i < 300 && got == nil; i++ {
				net.Step()
			}
			if got == nil || got.Err != "" {
				t.Errorf("seed %d: final read of %s through %s failed: %+v", seed, key, a, got)
				continue
			}
			v, _ := strconv.ParseInt(string(got.Rec.Value), 10, 64)
			if v < acked[key] || v > acked[key]+unknown[key] {
				t.Errorf("seed %d: %s is %d through %s; acknowledged increments sum to %d, unknown ones to %d", seed, key, v, a, acked[key], unknown[key])
			}
		}
	}
	switch res := porcupine.CheckOperationsTimeout(CasModel, history, linearizeTimeout); res {
	case porcupine.Ok:
	case porcupine.Illegal:
		t.Errorf("seed %d: history of %d operations is not linearizable", seed, len(history))
	default:
		t.Errorf("seed %d: porcupine could not decide a history of %d operations (result %v)", seed, len(history), res)
	}
	if testing.Verbose() {
		t.Logf("seed %d: %d ops, counters %v acknowledged, %v unknown", seed, len(history), acked, unknown)
	}
	if t.Failed() {
		t.Logf("reproduce: go test ./sim -run TestCasSimulation -cas.seeds=%d (seed %d)", seed+1, seed)
	}
}

func TestCasSimulation(t *testing.T) {
	start := time.Now()
	ops := 0
	for seed := range uint64(*casSeeds) {
		RunCas(t, seed, 1200)
		if t.Failed() {
			return
		}
		ops++
	}
	t.Logf("%d seeds in %s", ops, time.Since(start).Round(time.Millisecond))
}

package sim

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/anishathalye/porcupine"

	"tide/kv"
)

// RunKVHalfWrite simulates one seed of a write left half done, which
// RunKV's random faults almost never make: a key holds v0 on its three
// replicas; a write of v1, through a coordinator cut off from two of them,
// reaches only the third before the coordinator crashes, so its outcome is
// unknown. Then clients read the key, concurrently and one after another,
// through nodes on either side of a partition. Whichever answer comes
// first may be v0 or v1, but once a read has answered v1, no later one may
// answer v0: a read that finds v1 on one replica must make a write quorum
// hold it before answering (its write-back), or a later read of the other
// two replicas answers v0, new then old, which porcupine rejects.
func RunKVHalfWrite(t *testing.T, seed uint64) {
	// Anti-entropy is all but off (SyncTicks): it could finish the half
	// write in the background, and reads must not count on it.
	cfg := kv.Config{N: 3, W: 2, R: 2, ResendTicks: 5, TimeoutTicks: 60, HintTicks: 20, SyncTicks: 1 << 20, Buckets: 8, MigrationBytesPerTick: 4096}
	net := NewKVNet(cfg, 5, seed)
	net.MaxDelay = 2
	const key = "k"
	var clock int64
	var history []porcupine.Operation
	type call struct {
		client int
		in     KVInput
		at     int64
	}
	pending := map[uint64]call{}
	var nextID uint64
	net.Client = func(m kv.Message) {
		c, ok := pending[m.ID]
		if !ok {
			return
		}
		delete(pending, m.ID)
		clock++
		if m.Err != "" {
			if c.in.Op == "put" {
				history = append(history, porcupine.Operation{ClientId: c.client, Input: c.in, Call: c.at, Return: math.MaxInt64})
			}
			return // a failed read has no effect
		}
		out := KVOutput{OK: true, Found: true}
		if c.in.Op == "get" {
			out = KVOutput{OK: true, Found: m.Found, Value: string(m.Rec.Value)}
		}
		history = append(history, porcupine.Operation{ClientId: c.client, Input: c.in, Output: out, Call: c.at, Return: clock})
	}
	send := func(client int, in KVInput, to string) uint64 {
		nextID++
		clock++
		pending[nextID] = call{client, in, clock}
		m := kv.Message{Kind: kv.KindClientGet, From: fmt.Sprintf("client%d", client), To: to, ID: nextID, Rec: kv.Record{Key: []byte(key)}}
		if in.Op == "put" {
			m.Kind, m.Rec.Value = kv.KindClientPut, []byte(in.Value)
		}
		net.Send(m)
		return nextID
	}
	stepUntil := func(what string, cond func() bool) bool {
		for range 1000 {
			if cond() {
				return true
			}
			net.Step()
		}
		t.Errorf("seed %d: %s did not happen in 1000 ticks", seed, what)
		return false
	}
	holds := func(a, v string) bool {
		r, ok, _ := net.Store(a).Get([]byte(key))
		return ok && string(r.Value) == v
	}
	addrs := net.Addrs()
	replicas := net.Ring.Preference(net.Ring.Position([]byte(key)), cfg.N)
	var outside []string
	for _, a := range addrs {
		if !slices.Contains(replicas, a) {
			outside = append(outside, a)
		}
	}

	// v0, on every replica.
	id := send(0, KVInput{Op: "put", Key: key, Value: "v0"}, addrs[net.Rand.IntN(len(addrs))])
	if !stepUntil("the write of v0", func() bool {
		_, waiting := pending[id]
		return !waiting && holds(replicas[0], "v0") && holds(replicas[1], "v0") && holds(replicas[2], "v0")
	}) {
		return
	}

	// v1, on one replica only: its coordinator crashes before any other
	// replica hears of it.
	coord := outside[net.Rand.IntN(len(outside))]
	reached := replicas[net.Rand.IntN(len(replicas))]
	for _, r := range replicas {
		if r != reached {
			net.Partition(coord, r)
		}
	}
	id = send(0, KVInput{Op: "put", Key: key, Value: "v1"}, coord)
	if !stepUntil("the write of v1 reaching "+reached, func() bool { return holds(reached, "v1") }) {
		return
	}
	net.Crash(coord)
	net.Heal()
	// Its client gives up: the outcome is unknown.
	c := pending[id]
	delete(pending, id)
	history = append(history, porcupine.Operation{ClientId: c.client, Input: c.in, Call: c.at, Return: math.MaxInt64})

	// Clients 1 and 2 read the key in turn, each as soon as the other's
	// read has answered. The replica holding v1 is cut off from the
	// replica its own reads ask first, and client 1 reads through it: such
	// a read hears v1 from itself and v0 from the third replica (asked
	// after SpeculateTicks), and answers v1, after writing it back to the
	// third. Client 2 reads through the node outside the replicas that is
	// still up, cut off from the replica holding v1: its reads hear the
	// other two, so they answer v0 until a write quorum holds v1, which a
	// read that answered v1 has made sure of. Client 3 reads over and over
	// meanwhile, through the replica cut off from the one holding v1. Anti-
	// entropy is off, and the crashed coordinator keeps no hints: only
	// reads finish the write.
	partner := replicas[0]
	if partner == reached {
		partner = replicas[1]
	}
	other := outside[0]
	if other == coord {
		other = outside[1]
	}
	net.Partition(reached, partner)
	net.Partition(other, reached)
	var background uint64
	for round := range 4 {
		for client, via := range []string{reached, other} {
			id := send(1+client, KVInput{Op: "get", Key: key}, via)
			if !stepUntil(fmt.Sprintf("round %d's read through %s", round, via), func() bool {
				if _, waiting := pending[background]; !waiting {
					background = send(3, KVInput{Op: "get", Key: key}, partner)
				}
				_, waiting := pending[id]
				return !waiting
			}) {
				return
			}
		}
	}
	if err := linearizable(history, linearizeTimeout); err != nil {
		t.Errorf("seed %d: %v (v1 reached only %s of %v; coordinator %s crashed)", seed, err, reached, replicas, coord)
		for _, op := range history {
			t.Logf("  client %d [%d, %d] %s", op.ClientId, op.Call, op.Return, KVModel.DescribeOperation(op.Input, op.Output))
		}
	}
}

func TestKVHalfWrite(t *testing.T) {
	for seed := range uint64(*kvSeeds) {
		RunKVHalfWrite(t, seed)
		if t.Failed() {
			t.Logf("reproduce: go test ./sim -run TestKVHalfWrite -kv.seeds=%d (seed %d)", seed+1, seed)
			return
		}
	}
}

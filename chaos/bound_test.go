package chaos

import (
	"math"
	"testing"

	"github.com/anishathalye/porcupine"

	"tide/sim"
)

// TestBoundUnknown: a write whose outcome is unknown may take effect no
// later than its client's next acknowledged write of the key returns; one
// with no such write after it, or another client's write, leaves it
// unbounded. A read that sees it after that is then not linearizable.
func TestBoundUnknown(t *testing.T) {
	put := func(client int, key, v string, call, ret int64, acked bool) porcupine.Operation {
		op := porcupine.Operation{ClientId: client, Input: sim.KVInput{Op: "put", Key: key, Value: v}, Call: call, Return: ret}
		if acked {
			op.Output = sim.KVOutput{OK: true}
		}
		return op
	}
	h := []porcupine.Operation{
		put(0, "k", "1", 0, math.MaxInt64, false),
		put(1, "k", "x", 5, 6, true),   // another client's
		put(0, "j", "2", 10, 11, true), // another key
		put(0, "k", "3", 20, 30, true), // the bound
		put(0, "k", "5", 40, 45, true),
		put(0, "k", "6", 50, math.MaxInt64, false),
	}
	boundUnknown(h)
	if h[0].Return != 30 {
		t.Fatalf("bounded at %d, want 30 (the return of client 0's next acknowledged write of k)", h[0].Return)
	}
	if h[5].Return != math.MaxInt64 {
		t.Fatalf("a write with no acknowledged write after it bounded at %d", h[5].Return)
	}
	// A read that finds the unknown write's value after a later write
	// has been acknowledged and replaced by another: the value came back.
	read := porcupine.Operation{ClientId: 2, Input: sim.KVInput{Op: "get", Key: "k"}, Output: sim.KVOutput{OK: true, Found: true, Value: "1"}, Call: 46, Return: 47}
	if porcupine.CheckOperations(sim.KVModel, append(h[:5:5], read)) {
		t.Fatal("a read of the unknown write's value after two later acknowledged writes passed the check")
	}
	read.Call, read.Return = 1, 2
	if !porcupine.CheckOperations(sim.KVModel, append(h[:5:5], read)) {
		t.Fatal("a read of the unknown write's value before the bound failed the check")
	}
}

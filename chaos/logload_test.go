package chaos

import (
	"math"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"

	"tide/sim"
)

// TestCheckChains: the chain check passes a clean history of
// compare-and-sets, and catches a value held twice, a compare-and-set
// that found its own value, and an acknowledged one missing from the
// chain that ends in the final value.
func TestCheckChains(t *testing.T) {
	str := func(s string) *string { return &s }
	cas := func(expect *string, val string, ok bool, before *string) porcupine.Operation {
		out := sim.KVOutput{OK: ok, Found: before != nil}
		if before != nil {
			out.Value = *before
		}
		return porcupine.Operation{Input: sim.KVInput{Op: "cas", Key: "s0", Value: val, Expect: expect}, Output: out, Return: 1}
	}
	unknown := func(expect *string, val string) porcupine.Operation {
		return porcupine.Operation{Input: sim.KVInput{Op: "cas", Key: "s0", Value: val, Expect: expect}, Return: math.MaxInt64}
	}
	for _, c := range []struct {
		name      string
		h         []porcupine.Operation
		final     string
		lost      int
		twice     string // in the evidence; "" for none
		lostMatch string
	}{
		{name: "clean", final: "c2", h: []porcupine.Operation{
			cas(nil, "c1", true, nil), cas(nil, "x", false, str("c1")), cas(str("c1"), "c2", true, str("c1")),
			unknown(str("c1"), "c3"), // never applied: c2 replaced c1
		}},
		{name: "an unanswered one that took effect", final: "c4", h: []porcupine.Operation{
			cas(nil, "c1", true, nil), unknown(str("c1"), "c3"), cas(str("c3"), "c4", true, str("c3")),
		}},
		{name: "a value replaced twice", final: "c3", lost: 1, twice: `"c1" was replaced 2 times`, lostMatch: `["c2"]`, h: []porcupine.Operation{
			cas(nil, "c1", true, nil), cas(str("c1"), "c2", true, str("c1")), cas(str("c1"), "c3", true, str("c1")),
		}},
		{name: "a cas that found its own value", final: "c2", twice: `failed, finding its own value`, h: []porcupine.Operation{
			cas(nil, "c1", true, nil), cas(str("c1"), "c2", false, str("c2")),
		}},
		{name: "an acknowledged cas lost", final: "c1", lost: 1, lostMatch: `["c2"]`, h: []porcupine.Operation{
			cas(nil, "c1", true, nil), cas(str("c1"), "c2", true, str("c1")),
		}},
		{name: "a value no command wrote", final: "zz", lost: 2, lostMatch: "no command wrote", h: []porcupine.Operation{
			cas(nil, "c1", true, nil),
		}},
	} {
		lost, lostKeys, twice := checkChains(c.h, map[string]*string{"s0": str(c.final)})
		if lost != c.lost || (c.lostMatch != "" && !strings.Contains(strings.Join(lostKeys, "\n"), c.lostMatch)) {
			t.Errorf("%s: lost %d %q, want %d (%s)", c.name, lost, lostKeys, c.lost, c.lostMatch)
		}
		if (c.twice == "") != (len(twice) == 0) || !strings.Contains(strings.Join(twice, "\n"), c.twice) {
			t.Errorf("%s: applied twice %q, want %q", c.name, twice, c.twice)
		}
	}
}

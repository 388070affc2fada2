package chaos

import (
	"math"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"

	"tide/sim"
)

// TestIllegalKeysNamesTheStaleRead: a read that answers an older value
// after a newer write was acknowledged makes its key, and only it, show up
// with every operation on it.
func TestIllegalKeysNamesTheStaleRead(t *testing.T) {
	h := []porcupine.Operation{
		{ClientId: 0, Input: sim.KVInput{Op: "put", Key: "a", Value: "1"}, Output: sim.KVOutput{OK: true}, Call: 0, Return: 10},
		{ClientId: 0, Input: sim.KVInput{Op: "put", Key: "a", Value: "2"}, Output: sim.KVOutput{OK: true}, Call: 20, Return: 30},
		{ClientId: 1, Input: sim.KVInput{Op: "get", Key: "a"}, Output: sim.KVOutput{Found: true, Value: "1"}, Call: 40, Return: 50},
		{ClientId: 0, Input: sim.KVInput{Op: "put", Key: "b", Value: "1"}, Call: 0, Return: math.MaxInt64},
		{ClientId: 1, Input: sim.KVInput{Op: "get", Key: "b"}, Output: sim.KVOutput{Found: true, Value: "1"}, Call: 40, Return: 50},
	}
	vias := []string{"c0 resp via n1", "c0 resp via n1", "c1 http via n2", "c0 resp via n3", "c1 http via n2"}
	got := illegalKeys(h, vias)
	if len(got) != 1 {
		t.Fatalf("illegal keys: %q, want only a's", got)
	}
	if !strings.HasPrefix(got[0], "key a ") || strings.Count(got[0], "\n") != 4 || !strings.Contains(got[0], "via n2") {
		t.Errorf("description of a:\n%s", got[0])
	}
}

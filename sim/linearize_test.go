package sim

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// linearizeTimeout bounds one porcupine check. KVModel partitions a history
// by key, so a run's check takes milliseconds; the bound is far above that
// so that only a pathological history reaches it, and then the run fails.
const linearizeTimeout = 60 * time.Second

// linearizable checks history against KVModel. A history porcupine cannot
// decide within timeout is an error like an illegal one: a checker that
// gave up has checked nothing.
func linearizable(history []porcupine.Operation, timeout time.Duration) error {
	switch res := porcupine.CheckOperationsTimeout(KVModel, history, timeout); res {
	case porcupine.Ok:
		return nil
	case porcupine.Illegal:
		return fmt.Errorf("history of %d operations is not linearizable", len(history))
	default:
		return fmt.Errorf("porcupine could not decide a history of %d operations within %s (result %v)", len(history), timeout, res)
	}
}

// TestUndecidedHistoryFails checks that a check which times out is a
// failure, not a pass: 30 concurrent puts of distinct values and a get of
// a value nobody wrote leave porcupine 2^30 orders to rule out, far more
// than it can in 100ms.
func TestUndecidedHistoryFails(t *testing.T) {
	var history []porcupine.Operation
	for i := range 30 {
		history = append(history, porcupine.Operation{ClientId: i, Call: 0, Return: 100,
			Input: KVInput{Op: "put", Key: "k", Value: fmt.Sprint(i)}, Output: KVOutput{OK: true}})
	}
	history = append(history, porcupine.Operation{ClientId: 30, Call: 1, Return: 99,
		Input: KVInput{Op: "get", Key: "k"}, Output: KVOutput{Found: true, Value: "never written"}})
	err := linearizable(history, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "could not decide") {
		t.Fatalf("undecided check: got %v, want a could-not-decide error", err)
	}
}

// TestIllegalKeysNamesTheStaleRead: a read that answers an older value
// after a newer write was acknowledged makes its key, and only it, show up
// with every operation on it.
func TestIllegalKeysNamesTheStaleRead(t *testing.T) {
	h := []porcupine.Operation{
		{ClientId: 0, Input: KVInput{Op: "put", Key: "a", Value: "1"}, Output: KVOutput{OK: true}, Call: 0, Return: 10},
		{ClientId: 0, Input: KVInput{Op: "put", Key: "a", Value: "2"}, Output: KVOutput{OK: true}, Call: 20, Return: 30},
		{ClientId: 1, Input: KVInput{Op: "get", Key: "a"}, Output: KVOutput{Found: true, Value: "1"}, Call: 40, Return: 50},
		{ClientId: 0, Input: KVInput{Op: "put", Key: "b", Value: "1"}, Call: 0, Return: math.MaxInt64},
		{ClientId: 1, Input: KVInput{Op: "get", Key: "b"}, Output: KVOutput{Found: true, Value: "1"}, Call: 40, Return: 50},
	}
	vias := []string{"c0 via n1", "c0 via n1", "c1 via n2", "c0 via n3", "c1 via n2"}
	got := IllegalKeys(h, func(i int) string { return vias[i] })
	if len(got) != 1 {
		t.Fatalf("illegal keys: %q, want only a's", got)
	}
	if !strings.HasPrefix(got[0], "key a ") || strings.Count(got[0], "\n") != 4 || !strings.Contains(got[0], "via n2") {
		t.Errorf("description of a:\n%s", got[0])
	}
}

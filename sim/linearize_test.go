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

// TestCasUnknownAndValueBefore: a cas whose client never heard back may
// take effect later, as a cas would there (so a later read may see its
// value, but only if the key held what it expected); an answered cas must
// report the value before it.
func TestCasUnknownAndValueBefore(t *testing.T) {
	v1 := "1"
	absent := (*string)(nil)
	unknown := func(expect *string, val string) porcupine.Operation {
		return porcupine.Operation{ClientId: 0, Input: KVInput{Op: "cas", Key: "k", Value: val, Expect: expect}, Call: 20, Return: math.MaxInt64}
	}
	put1 := porcupine.Operation{ClientId: 1, Input: KVInput{Op: "put", Key: "k", Value: "1"}, Output: KVOutput{OK: true}, Call: 0, Return: 10}
	read := func(val string) porcupine.Operation {
		return porcupine.Operation{ClientId: 2, Input: KVInput{Op: "get", Key: "k"}, Output: KVOutput{Found: true, Value: val}, Call: 40, Return: 50}
	}
	for _, c := range []struct {
		name  string
		h     []porcupine.Operation
		legal bool
	}{
		{"an unanswered cas whose expectation held, seen later", []porcupine.Operation{put1, unknown(&v1, "2"), read("2")}, true},
		{"an unanswered cas that never happened", []porcupine.Operation{put1, unknown(&v1, "2"), read("1")}, true},
		{"an unanswered cas whose expectation never held, seen", []porcupine.Operation{put1, unknown(absent, "2"), read("2")}, false},
		{"a cas reporting the value before", []porcupine.Operation{put1, {ClientId: 0, Input: KVInput{Op: "cas", Key: "k", Value: "2", Expect: &v1},
			Output: KVOutput{OK: true, Found: true, Value: "1"}, Call: 20, Return: 30}}, true},
		{"a failed cas reporting a value the key never held", []porcupine.Operation{put1, {ClientId: 0, Input: KVInput{Op: "cas", Key: "k", Value: "3", Expect: absent},
			Output: KVOutput{OK: false, Found: true, Value: "3"}, Call: 20, Return: 30}}, false},
	} {
		err := linearizable(c.h, 10*time.Second)
		if (err == nil) != c.legal {
			t.Errorf("%s: %v, want legal=%v", c.name, err, c.legal)
		}
	}
}

// TestIllegalKeysCutsALongHistory: of a key with 200 sequential puts and
// one stale read among them, only the operations around the stale read
// are shown, and it is marked as where the linearizable order ends.
func TestIllegalKeysCutsALongHistory(t *testing.T) {
	var h []porcupine.Operation
	for i := range 200 {
		h = append(h, porcupine.Operation{ClientId: 0, Input: KVInput{Op: "put", Key: "a", Value: fmt.Sprint(i)}, Output: KVOutput{OK: true},
			Call: int64(10 * i), Return: int64(10*i + 5)})
	}
	h = append(h, porcupine.Operation{ClientId: 1, Input: KVInput{Op: "get", Key: "a"}, Output: KVOutput{Found: true, Value: "3"}, Call: 1001, Return: 1004})
	got := IllegalKeys(h, func(i int) string { return fmt.Sprintf("op%d", i) })
	if len(got) != 1 {
		t.Fatalf("illegal keys: %q", got)
	}
	lines := strings.Split(strings.TrimSpace(got[0]), "\n")
	if len(lines) > 2*excerptOps || !strings.Contains(got[0], "of its 201 operations") {
		t.Fatalf("%d lines for 201 operations, want an excerpt:\n%s", len(lines), got[0])
	}
	var marked []string
	for _, l := range lines {
		if strings.Contains(l, "the first outside") && !strings.HasPrefix(l, "key ") {
			marked = append(marked, l)
		}
	}
	if len(marked) != 1 || !strings.Contains(marked[0], "op200 ") {
		t.Fatalf("marked %q, want the stale read (op200):\n%s", marked, got[0])
	}
}

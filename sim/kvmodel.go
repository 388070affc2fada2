package sim

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// KVInput is one operation of a history checked against KVModel.
type KVInput struct {
	Op     string // get, put, del, cas
	Key    string
	Value  string
	Expect *string // cas: required current value, nil for "absent"
}

// KVOutput is an operation's observed result.
type KVOutput struct {
	OK    bool
	Found bool
	Value string // get: the value; cas: the value before
}

type kvState struct {
	present bool
	value   string
}

// KVModel is a linearizable single-copy key-value map, partitioned by key,
// for porcupine.
var KVModel = porcupine.Model{
	Partition: partitionBy(func(in any) string { return in.(KVInput).Key }),
	Init:      func() any { return kvState{} },
	Step: func(state, input, output any) (bool, any) {
		s := state.(kvState)
		in := input.(KVInput)
		if output == nil {
			// The operation's outcome is unknown (its client gave up): it
			// may take effect at any point after its call.
			switch in.Op {
			case "put":
				return true, kvState{present: true, value: in.Value}
			case "del":
				return true, kvState{}
			case "get":
				return true, s
			case "cas":
				// Where it takes effect, it applies as a cas does then.
				if (in.Expect == nil && !s.present) || (in.Expect != nil && s.present && *in.Expect == s.value) {
					return true, kvState{present: true, value: in.Value}
				}
				return true, s
			}
			return false, s
		}
		out := output.(KVOutput)
		switch in.Op {
		case "get":
			return out.Found == s.present && (!s.present || out.Value == s.value), s
		case "put":
			// Whether the key existed is not part of a put's contract.
			return out.OK, kvState{present: true, value: in.Value}
		case "del":
			return out.OK == s.present && out.Found == s.present, kvState{}
		case "cas":
			match := (in.Expect == nil && !s.present) || (in.Expect != nil && s.present && *in.Expect == s.value)
			// Its output's value is the one before it.
			if out.OK != match || out.Found != s.present || (s.present && out.Value != s.value) {
				return false, s
			}
			if match {
				return true, kvState{present: true, value: in.Value}
			}
			return true, s
		}
		return false, s
	},
	DescribeOperation: func(input, output any) string {
		in := input.(KVInput)
		if output == nil {
			return fmt.Sprintf("%s(%s, %q) -> unknown", in.Op, in.Key, in.Value)
		}
		out := output.(KVOutput)
		exp := "<absent>"
		if in.Expect != nil {
			exp = *in.Expect
		}
		switch in.Op {
		case "get":
			return fmt.Sprintf("get(%s) -> %v %q", in.Key, out.Found, out.Value)
		case "put":
			return fmt.Sprintf("put(%s, %q) -> found=%v", in.Key, in.Value, out.Found)
		case "del":
			return fmt.Sprintf("del(%s) -> %v", in.Key, out.OK)
		}
		before := "<absent>"
		if out.Found {
			before = strconv.Quote(out.Value)
		}
		return fmt.Sprintf("cas(%s, %s -> %q) -> %v, held %s", in.Key, exp, in.Value, out.OK, before)
	},
}

// IllegalKeys checks each key's history on its own and, for every key
// that is not linearizable, describes its operations in call order, each
// after what via(i) says of operation i (when, which client, through
// which node). A long history is cut to the operations around the first
// one (in call order) outside the longest order porcupine could
// linearize, which is marked: near where the history goes wrong.
func IllegalKeys(history []porcupine.Operation, via func(i int) string) []string {
	byKey := map[string][]int{}
	var keys []string
	for i, op := range history {
		key := op.Input.(KVInput).Key
		if byKey[key] == nil {
			keys = append(keys, key)
		}
		byKey[key] = append(byKey[key], i)
	}
	slices.Sort(keys)
	var out []string
	for _, key := range keys {
		idx := byKey[key]
		ops := make([]porcupine.Operation, len(idx))
		for j, i := range idx {
			ops[j] = history[i]
		}
		res, info := porcupine.CheckOperationsVerbose(KVModel, ops, 10*time.Second)
		if res != porcupine.Illegal {
			continue
		}
		// The first operation, in call order, outside the longest
		// partial linearization is where every order got stuck.
		stuck := -1
		if parts := info.PartialLinearizations(); len(parts) == 1 {
			var longest []int
			for _, l := range parts[0] {
				if len(l) > len(longest) {
					longest = l
				}
			}
			in := map[int]bool{}
			for _, j := range longest {
				in[j] = true
			}
			for j := range ops {
				if !in[j] && (stuck < 0 || ops[j].Call < history[stuck].Call) {
					stuck = idx[j]
				}
			}
		}
		slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(history[a].Call, history[b].Call) })
		shown := idx
		if p := slices.Index(idx, stuck); p >= 0 && len(idx) > 2*excerptOps {
			shown = idx[max(0, p-excerptOps):min(len(idx), p+excerptOps/2)]
		}
		var b strings.Builder
		fmt.Fprintf(&b, "key %s is not linearizable; ", key)
		if len(shown) < len(idx) {
			fmt.Fprintf(&b, "%d of its %d operations, around where the longest linearizable order ends:\n", len(shown), len(idx))
		} else {
			fmt.Fprintf(&b, "its %d operations:\n", len(idx))
		}
		for _, i := range shown {
			op := history[i]
			mark := ""
			if i == stuck {
				mark = "  <- the first outside the longest linearizable order"
			}
			fmt.Fprintf(&b, "    %s  %s%s\n", via(i), KVModel.DescribeOperation(op.Input, op.Output), mark)
		}
		out = append(out, b.String())
	}
	return out
}

// excerptOps is how many operations before the first outside the longest
// linearizable order IllegalKeys shows of a long history (and half as
// many after).
const excerptOps = 30

// partitionBy splits a history into one per key, keys in order of first
// appearance, for a porcupine model partitioned by key.
func partitionBy(key func(input any) string) func([]porcupine.Operation) [][]porcupine.Operation {
	return func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := key(op.Input)
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	}
}

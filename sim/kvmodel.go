package sim

import (
	"cmp"
	"fmt"
	"slices"
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
	Value string
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
			if out.OK != match || out.Found != s.present {
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
		return fmt.Sprintf("cas(%s, %s -> %q) -> %v", in.Key, exp, in.Value, out.OK)
	},
}

// IllegalKeys checks each key's history on its own and, for every key
// that is not linearizable, describes its operations in call order, each
// after what via(i) says of operation i (when, which client, through
// which node).
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
		if porcupine.CheckOperationsTimeout(KVModel, ops, 10*time.Second) != porcupine.Illegal {
			continue
		}
		slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(history[a].Call, history[b].Call) })
		var b strings.Builder
		fmt.Fprintf(&b, "key %s is not linearizable; its %d operations:\n", key, len(idx))
		for _, i := range idx {
			op := history[i]
			fmt.Fprintf(&b, "    %s  %s\n", via(i), KVModel.DescribeOperation(op.Input, op.Output))
		}
		out = append(out, b.String())
	}
	return out
}

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

package sim

import (
	"fmt"

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
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(KVInput).Key
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
	},
	Init: func() any { return kvState{} },
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

package sim

import (
	"fmt"
	"strconv"

	"github.com/anishathalye/porcupine"
)

// CasInput is one operation of a history checked against CasModel: the
// read-modify-writes of lightweight transactions, and plain reads.
type CasInput struct {
	Op    string // incr, setnx, getset, append, get
	Key   string
	Value string // setnx, getset, append: the value; incr: the delta
}

// CasOutput is an operation's observed result.
type CasOutput struct {
	Found bool   // get, getset: the key held a value; setnx: it was set
	Value string // get, incr, append: the value after; getset: the one before
}

// CasModel is a linearizable single-copy map of strings with Redis's
// INCRBY, SETNX, GETSET and APPEND, partitioned by key, for porcupine.
// An incr of a value that is not an integer fails and is not recorded.
var CasModel = porcupine.Model{
	Partition: partitionBy(func(in any) string { return in.(CasInput).Key }),
	Init:      func() any { return kvState{} },
	Step: func(state, input, output any) (bool, any) {
		s := state.(kvState)
		in := input.(CasInput)
		next := s
		var want CasOutput
		switch in.Op {
		case "get":
			want = CasOutput{Found: s.present, Value: s.value}
		case "incr":
			v := int64(0)
			if s.present {
				var err error
				if v, err = strconv.ParseInt(s.value, 10, 64); err != nil {
					return false, s
				}
			}
			d, _ := strconv.ParseInt(in.Value, 10, 64)
			next = kvState{true, strconv.FormatInt(v+d, 10)}
			want = CasOutput{Value: next.value}
		case "setnx":
			if !s.present {
				next = kvState{true, in.Value}
			}
			want = CasOutput{Found: !s.present}
		case "getset":
			next = kvState{true, in.Value}
			want = CasOutput{Found: s.present, Value: s.value}
		case "append":
			next = kvState{true, s.value + in.Value}
			want = CasOutput{Value: next.value}
		default:
			return false, s
		}
		if output == nil { // outcome unknown: it may take effect at any point
			return true, next
		}
		if output.(CasOutput) != want {
			return false, s
		}
		return true, next
	},
	DescribeOperation: func(input, output any) string {
		in := input.(CasInput)
		if output == nil {
			return fmt.Sprintf("%s(%s, %q) -> unknown", in.Op, in.Key, in.Value)
		}
		out := output.(CasOutput)
		return fmt.Sprintf("%s(%s, %q) -> %v %q", in.Op, in.Key, in.Value, out.Found, out.Value)
	},
}

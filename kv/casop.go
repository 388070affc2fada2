// Read-modify-write operations: what a conditional write or a counter does
// to the record it finds. They are pure functions of that record and the
// time; lwt.go runs them linearizably, through Paxos on the key's
// replicas.

package kv

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// An Op is one read-modify-write of a key, as a client sends it in a
// KindClientCas message (Message.Keys): the operation's name, then its
// arguments.
//
//	set VALUE MODE EXPIRE   MODE "" (always), "nx" (if absent), "xx" (if present);
//	                        EXPIRE a deadline in Unix ns, "0" none, "keep" the current one
//	incrby DELTA            DELTA a signed 64-bit integer
//	incrbyfloat DELTA       DELTA a float
//	append VALUE
//	expire DEADLINE COND    DEADLINE Unix ns (at or before now: the key is deleted);
//	                        COND "", "nx", "xx", "gt" or "lt" as Redis's EXPIRE
//	persist                 drop the deadline
//	getdel                  delete, answering the value
//
// The answer (KindClientResp): Found says whether the op wrote; Rec is
// the key's record after it (Version 0: absent); Records holds the record
// before it, when the key was present.
type Op [][]byte

// Op names.
const (
	OpSet         = "set"
	OpIncrBy      = "incrby"
	OpIncrByFloat = "incrbyfloat"
	OpAppend      = "append"
	OpExpire      = "expire"
	OpPersist     = "persist"
	OpGetDel      = "getdel"
)

// ErrNotInteger is what INCR and its kin answer for a value that is not a
// 64-bit integer, or a result out of range (Redis's words).
var ErrNotInteger = errors.New("value is not an integer or out of range")

// ErrNotFloat is INCRBYFLOAT's answer for a value that is not a float.
var ErrNotFloat = errors.New("value is not a valid float")

// OpSetArgs builds a set op.
func OpSetArgs(value []byte, mode string, expire uint64, keepTTL bool) Op {
	x := strconv.FormatUint(expire, 10)
	if keepTTL {
		x = "keep"
	}
	return Op{[]byte(OpSet), value, []byte(mode), []byte(x)}
}

// Check reports whether the op is well formed.
func (op Op) Check() error {
	if len(op) == 0 {
		return errors.New("empty operation")
	}
	want := map[string]int{OpSet: 4, OpIncrBy: 2, OpIncrByFloat: 2, OpAppend: 2, OpExpire: 3, OpPersist: 1, OpGetDel: 1}
	n, ok := want[string(op[0])]
	if !ok {
		return fmt.Errorf("unknown operation %q", op[0])
	}
	if len(op) != n {
		return fmt.Errorf("operation %s takes %d arguments, not %d", op[0], n-1, len(op)-1)
	}
	return nil
}

// apply computes what op does to cur (nil: the key is absent, deleted or
// expired) at now: the record to write (with Key, Value and Expire; the
// caller versions it), whether to write, and a failure to answer.
func (op Op) apply(key []byte, cur *Record, now uint64) (next Record, write bool, err error) {
	if err := op.Check(); err != nil {
		return Record{}, false, err
	}
	next = Record{Key: key}
	if cur != nil {
		next.Value, next.Expire = cur.Value, cur.Expire
	}
	switch string(op[0]) {
	case OpSet:
		mode := string(op[2])
		if (mode == "nx" && cur != nil) || (mode == "xx" && cur == nil) {
			return Record{}, false, nil
		}
		next.Value = op[1]
		switch x := string(op[3]); {
		case x == "keep":
		default:
			if next.Expire, err = strconv.ParseUint(x, 10, 64); err != nil {
				return Record{}, false, fmt.Errorf("set: deadline %q: %w", x, err)
			}
		}
		return next, true, nil
	case OpIncrBy:
		delta, err := strconv.ParseInt(string(op[1]), 10, 64)
		if err != nil {
			return Record{}, false, ErrNotInteger
		}
		var v int64
		if cur != nil {
			if v, err = parseInt(cur.Value); err != nil {
				return Record{}, false, err
			}
		}
		if (delta > 0 && v > math.MaxInt64-delta) || (delta < 0 && v < math.MinInt64-delta) {
			return Record{}, false, errors.New("increment or decrement would overflow")
		}
		next.Value = strconv.AppendInt(nil, v+delta, 10)
		return next, true, nil
	case OpIncrByFloat:
		delta, err := strconv.ParseFloat(string(op[1]), 64)
		if err != nil || math.IsNaN(delta) || math.IsInf(delta, 0) {
			return Record{}, false, ErrNotFloat
		}
		var v float64
		if cur != nil {
			if v, err = strconv.ParseFloat(strings.TrimSpace(string(cur.Value)), 64); err != nil || len(cur.Value) == 0 {
				return Record{}, false, ErrNotFloat
			}
		}
		r := v + delta
		if math.IsNaN(r) || math.IsInf(r, 0) {
			return Record{}, false, errors.New("increment would produce NaN or Infinity")
		}
		next.Value = strconv.AppendFloat(nil, r, 'f', -1, 64)
		return next, true, nil
	case OpAppend:
		next.Value = append(append([]byte(nil), next.Value...), op[1]...)
		return next, true, nil
	case OpExpire:
		if cur == nil {
			return Record{}, false, nil
		}
		at, err := strconv.ParseUint(string(op[1]), 10, 64)
		if err != nil {
			return Record{}, false, fmt.Errorf("expire: deadline %q: %w", op[1], err)
		}
		has := cur.Expire != 0
		switch string(op[2]) {
		case "nx":
			if has {
				return Record{}, false, nil
			}
		case "xx":
			if !has {
				return Record{}, false, nil
			}
		case "gt": // no deadline counts as infinite
			if !has || at <= cur.Expire {
				return Record{}, false, nil
			}
		case "lt":
			if has && at >= cur.Expire {
				return Record{}, false, nil
			}
		}
		if at <= now {
			return Record{Key: key, Tomb: true}, true, nil
		}
		next.Expire = at
		return next, true, nil
	case OpPersist:
		if cur == nil || cur.Expire == 0 {
			return Record{}, false, nil
		}
		next.Expire = 0
		return next, true, nil
	case OpGetDel:
		if cur == nil {
			return Record{}, false, nil
		}
		return Record{Key: key, Tomb: true}, true, nil
	}
	return Record{}, false, fmt.Errorf("unknown operation %q", op[0])
}

// parseInt reads a value as Redis reads a counter: a decimal 64-bit
// integer, no spaces, no leading plus or zeros.
func parseInt(b []byte) (int64, error) {
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || len(b) == 0 || b[0] == '+' || (len(b) > 1 && b[0] == '0') || bytes.HasPrefix(b, []byte("-0")) {
		return 0, ErrNotInteger
	}
	return v, nil
}

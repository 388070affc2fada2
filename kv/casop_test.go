package kv

import (
	"errors"
	"strconv"
	"testing"
)

// TestOpApply checks each read-modify-write against what Redis does.
func TestOpApply(t *testing.T) {
	rec := func(v string, x uint64) *Record {
		return &Record{Key: []byte("k"), Value: []byte(v), Version: 5, Expire: x}
	}
	const now = 1000
	for _, c := range []struct {
		name    string
		op      Op
		cur     *Record
		write   bool
		value   string
		tomb    bool
		expire  uint64
		wantErr error
	}{
		{"set on absent", OpSetArgs([]byte("a"), "", 0, false), nil, true, "a", false, 0, nil},
		{"set clears ttl", OpSetArgs([]byte("a"), "", 0, false), rec("b", 2000), true, "a", false, 0, nil},
		{"set keepttl", OpSetArgs([]byte("a"), "", 0, true), rec("b", 2000), true, "a", false, 2000, nil},
		{"set with deadline", OpSetArgs([]byte("a"), "", 3000, false), nil, true, "a", false, 3000, nil},
		{"set nx on present", OpSetArgs([]byte("a"), "nx", 0, false), rec("b", 0), false, "", false, 0, nil},
		{"set nx on absent", OpSetArgs([]byte("a"), "nx", 0, false), nil, true, "a", false, 0, nil},
		{"set xx on absent", OpSetArgs([]byte("a"), "xx", 0, false), nil, false, "", false, 0, nil},
		{"incr absent", Op{[]byte(OpIncrBy), []byte("1")}, nil, true, "1", false, 0, nil},
		{"incr keeps ttl", Op{[]byte(OpIncrBy), []byte("-3")}, rec("10", 2000), true, "7", false, 2000, nil},
		{"incr word", Op{[]byte(OpIncrBy), []byte("1")}, rec("abc", 0), false, "", false, 0, ErrNotInteger},
		{"incr leading zero", Op{[]byte(OpIncrBy), []byte("1")}, rec("07", 0), false, "", false, 0, ErrNotInteger},
		{"incr overflow", Op{[]byte(OpIncrBy), []byte("1")}, rec(strconv.FormatInt(1<<63-1, 10), 0), false, "", false, 0, errors.New("increment or decrement would overflow")},
		{"incrbyfloat", Op{[]byte(OpIncrByFloat), []byte("0.5")}, rec("10", 0), true, "10.5", false, 0, nil},
		{"incrbyfloat word", Op{[]byte(OpIncrByFloat), []byte("0.5")}, rec("x", 0), false, "", false, 0, ErrNotFloat},
		{"append", Op{[]byte(OpAppend), []byte("cd")}, rec("ab", 0), true, "abcd", false, 0, nil},
		{"expire", Op{[]byte(OpExpire), []byte("5000"), nil}, rec("a", 0), true, "a", false, 5000, nil},
		{"expire absent", Op{[]byte(OpExpire), []byte("5000"), nil}, nil, false, "", false, 0, nil},
		{"expire in the past deletes", Op{[]byte(OpExpire), []byte("10"), nil}, rec("a", 0), true, "", true, 0, nil},
		{"expire nx with ttl", Op{[]byte(OpExpire), []byte("5000"), []byte("nx")}, rec("a", 2000), false, "", false, 0, nil},
		{"expire xx without ttl", Op{[]byte(OpExpire), []byte("5000"), []byte("xx")}, rec("a", 0), false, "", false, 0, nil},
		{"expire gt later", Op{[]byte(OpExpire), []byte("5000"), []byte("gt")}, rec("a", 2000), true, "a", false, 5000, nil},
		{"expire gt without ttl", Op{[]byte(OpExpire), []byte("5000"), []byte("gt")}, rec("a", 0), false, "", false, 0, nil},
		{"expire lt without ttl", Op{[]byte(OpExpire), []byte("5000"), []byte("lt")}, rec("a", 0), true, "a", false, 5000, nil},
		{"persist", Op{[]byte(OpPersist)}, rec("a", 2000), true, "a", false, 0, nil},
		{"persist without ttl", Op{[]byte(OpPersist)}, rec("a", 0), false, "", false, 0, nil},
		{"getdel", Op{[]byte(OpGetDel)}, rec("a", 0), true, "", true, 0, nil},
	} {
		next, write, err := c.op.apply([]byte("k"), c.cur, now)
		if (err == nil) != (c.wantErr == nil) || (err != nil && err.Error() != c.wantErr.Error()) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.wantErr)
			continue
		}
		if write != c.write {
			t.Errorf("%s: write %v, want %v", c.name, write, c.write)
			continue
		}
		if write && (string(next.Value) != c.value || next.Tomb != c.tomb || next.Expire != c.expire) {
			t.Errorf("%s: wrote %q tomb=%v expire=%d, want %q tomb=%v expire=%d", c.name, next.Value, next.Tomb, next.Expire, c.value, c.tomb, c.expire)
		}
	}
	if err := (Op{[]byte("nope")}).Check(); err == nil {
		t.Error("an unknown op passed Check")
	}
	if err := (Op{[]byte(OpIncrBy)}).Check(); err == nil {
		t.Error("incrby without its delta passed Check")
	}
}

func FuzzOpApply(f *testing.F) {
	f.Add("incrby", "5", "", "12", uint64(0))
	f.Add("set", "v", "nx", "0", uint64(7))
	f.Fuzz(func(t *testing.T, name, a1, a2, cur string, x uint64) {
		for _, op := range []Op{{[]byte(name)}, {[]byte(name), []byte(a1)}, {[]byte(name), []byte(a1), []byte(a2)}, {[]byte(name), []byte(a1), []byte(a2), []byte(cur)}} {
			op.apply([]byte("k"), &Record{Key: []byte("k"), Value: []byte(cur), Expire: x}, 100) // must not panic
			op.apply([]byte("k"), nil, 100)
		}
	})
}

// The commands beyond plain GET and SET: expiry (SET's options, EXPIRE,
// TTL and their kin), conditional writes and counters (run by the backend
// as lightweight transactions, linearizable per key), and scans.

package resp

import (
	"context"
	"math"
	"strconv"
	"strings"
	"time"

	"tide/kv"
)

// oneKey lists the commands whose only key is their first argument.
var oneKey = map[string]bool{
	"SETNX": true, "SETEX": true, "PSETEX": true, "GETSET": true, "GETDEL": true, "INCR": true, "DECR": true,
	"INCRBY": true, "DECRBY": true, "INCRBYFLOAT": true, "APPEND": true, "STRLEN": true, "TYPE": true,
	"EXPIRE": true, "PEXPIRE": true, "EXPIREAT": true, "PEXPIREAT": true, "PERSIST": true, "TTL": true,
	"PTTL": true, "EXPIRETIME": true, "PEXPIRETIME": true,
}

// arity is the number of arguments of each command here (negative: at
// least that many).
var arity = map[string]int{
	"SETNX": 2, "SETEX": 3, "PSETEX": 3, "GETSET": 2, "GETDEL": 1, "INCR": 1, "DECR": 1, "INCRBY": 2, "DECRBY": 2,
	"INCRBYFLOAT": 2, "APPEND": 2, "STRLEN": 1, "TYPE": 1, "EXPIRE": -2, "PEXPIRE": -2, "EXPIREAT": -2,
	"PEXPIREAT": -2, "PERSIST": 1, "TTL": 1, "PTTL": 1, "EXPIRETIME": 1, "PEXPIRETIME": 1, "SCAN": -1,
	"KEYS": 1, "DBSIZE": 0,
}

func errReply(msg string) reply { return func(w writer) { w.err(msg) } }

func intReply(v int64) reply { return func(w writer) { w.int(v) } }

var (
	errSyntax     = errReply("ERR syntax error")
	errNotInteger = errReply("ERR value is not an integer or out of range")
)

func nowNanos() uint64 { return uint64(time.Now().UnixNano()) }

// deadline turns an expiry argument into a Unix ns deadline: unit is the
// nanoseconds of one unit of v, and abs says v is a Unix time rather than
// a span from now. ok is false for a value Redis refuses.
func deadline(v []byte, unit int64, abs bool) (uint64, bool) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n > math.MaxInt64/unit || n < math.MinInt64/unit {
		return 0, false
	}
	d := n * unit
	if abs {
		return uint64(max(d, 1)), true
	}
	now := int64(nowNanos())
	if d > 0 && now > math.MaxInt64-d {
		return 0, false
	}
	return uint64(max(now+d, 1)), true
}

// execSet runs SET with options: NX, XX, GET, and one of EX, PX, EXAT, PXAT
// and KEEPTTL. A SET whose only option is a deadline is a plain write;
// the rest read what the key holds, and run as lightweight transactions.
func (srv *Server) execSet(ctx context.Context, args [][]byte) reply {
	var mode string
	var get, keep bool
	var expire uint64
	expiry := false
	for i := 3; i < len(args); i++ {
		opt := strings.ToUpper(string(args[i]))
		switch opt {
		case "NX", "XX":
			if mode != "" {
				return errSyntax
			}
			mode = strings.ToLower(opt)
		case "GET":
			get = true
		case "KEEPTTL":
			if expiry {
				return errSyntax
			}
			keep, expiry = true, true
		case "EX", "PX", "EXAT", "PXAT":
			if expiry || i+1 >= len(args) {
				return errSyntax
			}
			i++
			unit := int64(time.Second)
			if opt[0] == 'P' {
				unit = int64(time.Millisecond)
			}
			n, err := strconv.ParseInt(string(args[i]), 10, 64)
			if err != nil {
				return errNotInteger
			}
			if n <= 0 {
				return errReply("ERR invalid expire time in 'set' command")
			}
			x, ok := deadline(args[i], unit, strings.HasSuffix(opt, "AT"))
			if !ok {
				return errReply("ERR invalid expire time in 'set' command")
			}
			expire, expiry = x, true
		default:
			return errSyntax
		}
	}
	if mode == "" && !get && !keep {
		if err := srv.kv.Write(ctx, kv.Record{Key: args[1], Value: args[2], Expire: expire}); err != nil {
			return errReply("ERR " + err.Error())
		}
		return replyOK
	}
	r, err := srv.kv.Cas(ctx, args[1], kv.OpSetArgs(args[2], mode, expire, keep))
	if err != nil {
		return srv.casErr(err)
	}
	if get {
		return prevReply(r)
	}
	if !r.Found {
		return replyNil
	}
	return replyOK
}

// prevReply answers the value a key held before an op, or nil.
func prevReply(r kv.Message) reply {
	if len(r.Records) == 1 {
		v := r.Records[0].Value
		return func(w writer) { w.bulk(v) }
	}
	return replyNil
}

func (srv *Server) casErr(err error) reply {
	if srv.kv.IsOpError(err) {
		return errReply("ERR " + err.Error())
	}
	return errReply("ERR " + err.Error())
}

// execData runs the commands of this file; ok is false for any other.
func (srv *Server) execData(ctx context.Context, name string, args [][]byte) (reply, bool) {
	n, known := arity[name]
	if !known {
		return nil, false
	}
	argc := len(args) - 1
	if (n >= 0 && argc != n) || (n < 0 && argc < -n) {
		return errReply("ERR wrong number of arguments for '" + strings.ToLower(name) + "' command"), true
	}
	cas := func(op kv.Op) (kv.Message, reply) {
		r, err := srv.kv.Cas(ctx, args[1], op)
		if err != nil {
			return r, srv.casErr(err)
		}
		return r, nil
	}
	switch name {
	case "SETNX":
		r, fail := cas(kv.OpSetArgs(args[2], "nx", 0, false))
		if fail != nil {
			return fail, true
		}
		return intReply(b2i(r.Found)), true
	case "SETEX", "PSETEX":
		unit := int64(time.Second)
		if name == "PSETEX" {
			unit = int64(time.Millisecond)
		}
		if v, err := strconv.ParseInt(string(args[2]), 10, 64); err != nil {
			return errNotInteger, true
		} else if v <= 0 {
			return errReply("ERR invalid expire time in '" + strings.ToLower(name) + "' command"), true
		}
		x, ok := deadline(args[2], unit, false)
		if !ok {
			return errReply("ERR invalid expire time in '" + strings.ToLower(name) + "' command"), true
		}
		if err := srv.kv.Write(ctx, kv.Record{Key: args[1], Value: args[3], Expire: x}); err != nil {
			return errReply("ERR " + err.Error()), true
		}
		return replyOK, true
	case "GETSET":
		r, fail := cas(kv.OpSetArgs(args[2], "", 0, false))
		if fail != nil {
			return fail, true
		}
		return prevReply(r), true
	case "GETDEL":
		r, fail := cas(kv.Op{[]byte(kv.OpGetDel)})
		if fail != nil {
			return fail, true
		}
		return prevReply(r), true
	case "INCR", "DECR", "INCRBY", "DECRBY":
		delta := int64(1)
		if len(args) == 3 {
			d, err := strconv.ParseInt(string(args[2]), 10, 64)
			if err != nil {
				return errNotInteger, true
			}
			delta = d
		}
		if name[0] == 'D' {
			if delta == math.MinInt64 {
				return errReply("ERR decrement would overflow"), true
			}
			delta = -delta
		}
		r, fail := cas(kv.Op{[]byte(kv.OpIncrBy), strconv.AppendInt(nil, delta, 10)})
		if fail != nil {
			return fail, true
		}
		v, _ := strconv.ParseInt(string(r.Rec.Value), 10, 64)
		return intReply(v), true
	case "INCRBYFLOAT":
		if _, err := strconv.ParseFloat(string(args[2]), 64); err != nil {
			return errReply("ERR value is not a valid float"), true
		}
		r, fail := cas(kv.Op{[]byte(kv.OpIncrByFloat), args[2]})
		if fail != nil {
			return fail, true
		}
		v := r.Rec.Value
		return func(w writer) { w.bulk(v) }, true
	case "APPEND":
		r, fail := cas(kv.Op{[]byte(kv.OpAppend), args[2]})
		if fail != nil {
			return fail, true
		}
		return intReply(int64(len(r.Rec.Value))), true
	case "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT":
		unit := int64(time.Second)
		if name[0] == 'P' {
			unit = int64(time.Millisecond)
		}
		if _, err := strconv.ParseInt(string(args[2]), 10, 64); err != nil {
			return errNotInteger, true
		}
		x, ok := deadline(args[2], unit, strings.HasSuffix(name, "AT"))
		if !ok {
			return errReply("ERR invalid expire time in '" + strings.ToLower(name) + "' command"), true
		}
		cond := ""
		for _, a := range args[3:] {
			c := strings.ToLower(string(a))
			if (c != "nx" && c != "xx" && c != "gt" && c != "lt") || cond != "" {
				return errReply("ERR Unsupported option " + string(a)), true
			}
			cond = c
		}
		r, fail := cas(kv.Op{[]byte(kv.OpExpire), strconv.AppendUint(nil, x, 10), []byte(cond)})
		if fail != nil {
			return fail, true
		}
		return intReply(b2i(r.Found)), true
	case "PERSIST":
		r, fail := cas(kv.Op{[]byte(kv.OpPersist)})
		if fail != nil {
			return fail, true
		}
		return intReply(b2i(r.Found)), true
	case "TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME", "STRLEN", "TYPE":
		rec, found, err := srv.kv.Get(ctx, args[1])
		if err != nil {
			return errReply("ERR " + err.Error()), true
		}
		return keyInfo(name, rec, found), true
	case "SCAN":
		return srv.execScan(ctx, args), true
	case "KEYS", "DBSIZE":
		pat := []byte("*")
		if name == "KEYS" {
			pat = args[1]
		}
		var keys [][]byte
		cursor := uint64(0)
		for {
			recs, next, err := srv.kv.Scan(ctx, cursor, 1000)
			if err != nil {
				return errReply("ERR " + err.Error()), true
			}
			for _, r := range recs {
				if name == "DBSIZE" || Glob(pat, r.Key) {
					keys = append(keys, r.Key)
				}
			}
			if next == 0 {
				break
			}
			cursor = next
		}
		if name == "DBSIZE" {
			return intReply(int64(len(keys))), true
		}
		return arrayReply(keys), true
	}
	return nil, false
}

// keyInfo answers TTL, PTTL, EXPIRETIME, PEXPIRETIME, STRLEN and TYPE from a
// key's record.
func keyInfo(name string, rec kv.Record, found bool) reply {
	switch name {
	case "STRLEN":
		return intReply(int64(len(rec.Value)))
	case "TYPE":
		t := "none"
		if found {
			t = "string"
		}
		return func(w writer) { w.simple(t) }
	}
	if !found {
		return intReply(-2)
	}
	if rec.Expire == 0 {
		return intReply(-1)
	}
	switch name {
	case "EXPIRETIME":
		return intReply(int64(rec.Expire+5e8) / 1e9)
	case "PEXPIRETIME":
		return intReply(int64(rec.Expire+5e5) / 1e6)
	}
	left := int64(rec.Expire) - int64(nowNanos())
	left = max(left, 0)
	if name == "TTL" {
		return intReply((left + 5e8) / 1e9) // rounded, as Redis does
	}
	return intReply((left + 5e5) / 1e6)
}

// execScan runs SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]. The cursor
// is a ring position, so a scan survives ring changes: a key may come
// twice, and none that exists throughout is missed.
func (srv *Server) execScan(ctx context.Context, args [][]byte) reply {
	cursor, err := strconv.ParseUint(string(args[1]), 10, 64)
	if err != nil {
		return errReply("ERR invalid cursor")
	}
	count := 10
	var pat []byte
	typ := ""
	for i := 2; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return errSyntax
		}
		switch strings.ToUpper(string(args[i])) {
		case "MATCH":
			pat = args[i+1]
		case "COUNT":
			c, err := strconv.Atoi(string(args[i+1]))
			if err != nil {
				return errNotInteger
			}
			if c < 1 {
				return errSyntax
			}
			count = min(c, 100000)
		case "TYPE":
			typ = strings.ToLower(string(args[i+1]))
		default:
			return errSyntax
		}
	}
	recs, next, err := srv.kv.Scan(ctx, cursor, count)
	if err != nil {
		return errReply("ERR " + err.Error())
	}
	var keys [][]byte
	for _, r := range recs {
		if (pat == nil || Glob(pat, r.Key)) && (typ == "" || typ == "string") {
			keys = append(keys, r.Key)
		}
	}
	nc := []byte(strconv.FormatUint(next, 10))
	return func(w writer) {
		w.array(2)
		w.bulk(nc)
		w.array(len(keys))
		for _, k := range keys {
			w.bulk(k)
		}
	}
}

func arrayReply(vs [][]byte) reply {
	return func(w writer) {
		w.array(len(vs))
		for _, v := range vs {
			w.bulk(v)
		}
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// Glob reports whether s matches a Redis glob pattern: * and ? , [abc],
// [^abc] and [a-z] classes, and \ quoting the next character. Every
// element but * matches exactly one byte, so a mismatch only ever needs to
// go back to the last * seen: the time is at most len(pat)*len(s), however
// many stars the pattern holds (Redis's own matcher backtracks into every
// star, exponentially on patterns like *a*a*a*b).
func Glob(pat, s []byte) bool {
	p, i := 0, 0
	starP, starI := -1, 0 // after the last * seen, and the byte it matched up to
	for i < len(s) {
		if p < len(pat) && pat[p] == '*' {
			for p < len(pat) && pat[p] == '*' {
				p++
			}
			if p == len(pat) {
				return true
			}
			starP, starI = p, i
			continue
		}
		if p < len(pat) {
			if ok, n := globOne(pat[p:], s[i]); ok {
				p += n
				i++
				continue
			}
		}
		if starP < 0 {
			return false
		}
		// The last * takes one more byte; what follows it starts over.
		starI++
		p, i = starP, starI
	}
	for p < len(pat) && pat[p] == '*' {
		p++
	}
	return p == len(pat)
}

// globOne matches the pattern element at the start of pat (any but *)
// against c: whether it matches, and the element's length in pat. A class
// without its ] runs to the end of the pattern, as in Redis.
func globOne(pat []byte, c byte) (bool, int) {
	switch pat[0] {
	case '?':
		return true, 1
	case '[':
		k := 1
		not := k < len(pat) && pat[k] == '^'
		if not {
			k++
		}
		match := false
		for k < len(pat) && pat[k] != ']' {
			switch {
			case pat[k] == '\\' && k+1 < len(pat):
				match = match || pat[k+1] == c
				k += 2
			case k+2 < len(pat) && pat[k+1] == '-' && pat[k+2] != ']':
				lo, hi := pat[k], pat[k+2]
				if lo > hi {
					lo, hi = hi, lo
				}
				match = match || (c >= lo && c <= hi)
				k += 3
			default:
				match = match || pat[k] == c
				k++
			}
		}
		if k < len(pat) {
			k++ // the ]
		}
		return match != not, k
	case '\\':
		if len(pat) > 1 {
			return pat[1] == c, 2
		}
	}
	return pat[0] == c, 1
}

package chaos

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/anishathalye/porcupine"

	"tide/paxos"
	"tide/paxos/node"
	"tide/sim"
)

// Log is a tide log workload: Clients clients, each a log client of its
// own (one session: one command in flight), mixing
//
//   - puts of increasing values on the client's own KeysPerClient keys,
//     of which it is the only writer;
//   - compare-and-sets on Shared keys that every client writes: each
//     expects the value the client last saw there (nil, absent, at
//     first) and writes a value no other command writes;
//   - gets of any key, through the log or by quorum read, alternately.
type Log struct {
	Clients       int
	KeysPerClient int
	Shared        int
	// Reads is the fraction of operations that are gets (0.3 if 0).
	Reads float64
}

// LogResult is what a log workload saw and what its checks found.
type LogResult struct {
	Counts
	// Linearizable is porcupine's verdict on the history (every key, the
	// final reads included): "ok", "illegal" or "unknown" (the checker
	// ran out of time: a failure).
	Linearizable string `json:"linearizable"`
	// LostKeys names the own keys whose final value was older than their
	// last acknowledged put, and the shared keys missing an acknowledged
	// compare-and-set from the chain of values that ends in their final
	// value.
	LostKeys []string `json:"lost_keys,omitempty"`
	// Twice lists the evidence of a command applied twice: a shared key
	// holding one value at two times (two successful compare-and-sets
	// replaced it), or a compare-and-set that failed on finding the very
	// value it writes. Values are unique, so either means the command
	// that wrote the value took effect twice.
	Twice []string `json:"applied_twice,omitempty"`
	// Illegal lists, for each key whose own history is not linearizable,
	// every operation on it in call order.
	Illegal []string       `json:"illegal,omitempty"`
	Errors  map[string]int `json:"errors,omitempty"`
}

// OK reports whether the log lost nothing, applied nothing twice and
// kept a linearizable history.
func (r *LogResult) OK() bool {
	return r.Lost == 0 && len(r.Twice) == 0 && r.Linearizable == "ok"
}

// logRun is a log workload in progress.
type logRun struct {
	cfg     Log
	d       node.Deployment
	timeout time.Duration
	tally   *tally
	// recorder's via says, for each operation, the client and how it
	// ended; acked is by own key the highest acknowledged put.
	*recorder
}

func sharedKey(j int) string { return fmt.Sprintf("s%d", j) }

// logDo runs one KV command through c.
func logDo(ctx context.Context, c *node.Client, op paxos.KVOp, mode paxos.ReadMode) (paxos.KVResult, error) {
	b, err := c.Do(ctx, paxos.EncodeKV(op), op.Op == "get", mode)
	if err != nil {
		return paxos.KVResult{}, err
	}
	r, err := paxos.DecodeKVResult(b)
	if err == nil && r.Err != "" {
		err = &statusErr{0, fmt.Sprintf("%s %s: %s", op.Op, op.Key, r.Err)}
	}
	return r, err
}

// classifyLog tells a command the log refused (not applied: its session
// had expired) from one whose client gave up waiting (it may have been
// applied, or may be yet).
func classifyLog(err error) Outcome {
	var se *statusErr
	switch {
	case err == nil:
		return Acked
	case errors.Is(err, node.ErrRefused), errors.As(err, &se):
		return Failed
	}
	return Unanswered
}

// run drives one client until ctx ends.
func (l *logRun) run(ctx context.Context, id int) {
	c, err := node.NewClient(l.d, "", 1)
	if err != nil {
		l.tally.record(id, "", time.Now(), time.Now(), Failed, err)
		return
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(uint64(id), 11))
	reads := l.cfg.Reads
	if reads == 0 {
		reads = 0.3
	}
	seen := map[string]*string{} // shared key -> the value this client last saw there
	seq, gets := 0, 0
	for ctx.Err() == nil {
		octx, cancel := context.WithTimeout(ctx, l.timeout)
		var in sim.KVInput
		var op paxos.KVOp
		mode, how := paxos.ReadThroughLog, ""
		switch p := rng.Float64(); {
		case p < reads:
			var key string
			if rng.IntN(2) == 0 {
				key = sharedKey(rng.IntN(l.cfg.Shared))
			} else {
				key = kvKey(rng.IntN(l.cfg.Clients), rng.IntN(l.cfg.KeysPerClient))
			}
			gets++
			if gets%2 == 0 {
				mode, how = paxos.ReadQuorum, " (quorum read)"
			}
			in, op = sim.KVInput{Op: "get", Key: key}, paxos.KVOp{Op: "get", Key: key}
		case p < reads+(1-reads)/3:
			seq++
			key := kvKey(id, seq%l.cfg.KeysPerClient)
			val := strconv.Itoa(seq)
			in, op = sim.KVInput{Op: "put", Key: key, Value: val}, paxos.KVOp{Op: "put", Key: key, Value: []byte(val)}
		default:
			seq++
			key := sharedKey(rng.IntN(l.cfg.Shared))
			val := fmt.Sprintf("c%d-%d", id, seq)
			in = sim.KVInput{Op: "cas", Key: key, Value: val, Expect: seen[key]}
			op = paxos.KVOp{Op: "cas", Key: key, Value: []byte(val)}
			if e := seen[key]; e != nil {
				op.Expect = []byte(*e)
			}
		}
		start := time.Now()
		r, err := logDo(octx, c, op, mode)
		end := time.Now()
		cancel()
		outcome := classifyLog(err)
		if ctx.Err() != nil && outcome == Unanswered {
			// The run ended under this command: its outcome is unknown.
			if in.Op != "get" {
				l.add(porcupine.Operation{ClientId: id, Input: in, Call: l.ns(start), Return: math.MaxInt64}, l.describe(id, how, err))
			}
			return
		}
		l.tally.record(id, "log"+how, start, end, outcome, err)
		switch {
		case outcome == Acked:
			out := sim.KVOutput{OK: r.OK, Found: r.Found}
			if in.Op == "get" || in.Op == "cas" {
				out.Value = string(r.Value)
			}
			l.add(porcupine.Operation{ClientId: id, Input: in, Output: out, Call: l.ns(start), Return: l.ns(end)}, l.describe(id, how, nil))
			switch in.Op {
			case "put":
				l.mu.Lock()
				l.acked[in.Key] = seq
				l.mu.Unlock()
			case "cas":
				// The key now holds this client's value, or the one the
				// failed compare-and-set found.
				v := in.Value
				if !r.OK {
					v = string(r.Value)
				}
				if r.OK || r.Found {
					seen[in.Key] = &v
				} else {
					seen[in.Key] = nil
				}
			case "get":
				if in.Key[0] == 's' {
					if r.Found {
						v := string(r.Value)
						seen[in.Key] = &v
					} else {
						seen[in.Key] = nil
					}
				}
			}
		case outcome == Unanswered && in.Op != "get":
			// It may take effect at any later point: the log may still
			// choose it.
			l.add(porcupine.Operation{ClientId: id, Input: in, Call: l.ns(start), Return: math.MaxInt64}, l.describe(id, how, err))
		}
	}
}

func (l *logRun) describe(client int, how string, err error) string {
	s := fmt.Sprintf("c%d%s", client, how)
	if err != nil {
		s += " (" + err.Error() + ")"
	}
	return s
}

// verify reads every key through the log once the faults are healed,
// checks that no acknowledged write is lost and no command was applied
// twice, and checks the whole history.
func (l *logRun) verify(ctx context.Context, end time.Time) LogResult {
	res := LogResult{Counts: l.tally.close(end)}
	c, err := node.NewClient(l.d, "", 1)
	if err != nil {
		res.LostKeys = append(res.LostKeys, "no client for the final reads: "+err.Error())
		res.Lost++
		return res
	}
	defer c.Close()
	final := map[string]*string{}
	var keys []string
	for j := range l.cfg.Shared {
		keys = append(keys, sharedKey(j))
	}
	for i := range l.cfg.Clients {
		for j := range l.cfg.KeysPerClient {
			keys = append(keys, kvKey(i, j))
		}
	}
	for _, key := range keys {
		var r paxos.KVResult
		var start time.Time
		var err error
		for try := 0; ; try++ {
			start = time.Now()
			octx, cancel := context.WithTimeout(ctx, 2*l.timeout)
			r, err = logDo(octx, c, paxos.KVOp{Op: "get", Key: key}, paxos.ReadThroughLog)
			cancel()
			if err == nil || try >= 20 || ctx.Err() != nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			res.LostKeys = append(res.LostKeys, key+": unreadable: "+err.Error())
			res.Lost++
			continue
		}
		l.add(porcupine.Operation{ClientId: l.cfg.Clients, Input: sim.KVInput{Op: "get", Key: key},
			Output: sim.KVOutput{Found: r.Found, Value: string(r.Value)}, Call: l.ns(start), Return: l.ns(time.Now())}, "final read")
		if r.Found {
			v := string(r.Value)
			final[key] = &v
		}
		if key[0] == 'c' {
			l.mu.Lock()
			want := l.acked[key]
			l.mu.Unlock()
			got, _ := strconv.Atoi(string(r.Value))
			if want > 0 && (!r.Found || got < want) {
				res.Lost++
				res.LostKeys = append(res.LostKeys, fmt.Sprintf("%s: read %q, acknowledged %d", key, r.Value, want))
			}
		}
	}
	l.mu.Lock()
	history, vias := slices.Clone(l.history), slices.Clone(l.via)
	l.mu.Unlock()
	lost, lostKeys, twice := checkChains(history, final)
	res.Lost += lost
	res.LostKeys = append(res.LostKeys, lostKeys...)
	res.Twice = twice
	switch porcupine.CheckOperationsTimeout(sim.KVModel, history, time.Minute) {
	case porcupine.Ok:
		res.Linearizable = "ok"
	case porcupine.Illegal:
		res.Linearizable = "illegal"
		res.Illegal = sim.IllegalKeys(history, func(i int) string {
			op := history[i]
			ret := "never answered"
			if op.Return != math.MaxInt64 {
				ret = fmt.Sprintf("%.3fs", time.Duration(op.Return).Seconds())
			}
			return fmt.Sprintf("%.3fs..%s  %s", time.Duration(op.Call).Seconds(), ret, vias[i])
		})
	default:
		res.Linearizable = "unknown"
	}
	l.tally.mu.Lock()
	res.Errors = l.tally.errs
	l.tally.mu.Unlock()
	return res
}

// checkChains checks the shared keys, which only compare-and-sets write,
// each with a value of its own. Every value such a key held was written
// by one command, which expected the value before it; so the values form
// one chain per key, from absent to the final value, each value replaced
// at most once. Walking back from final (the values read at the end) by
// what each value's command expected must reach absent, and pass every
// acknowledged compare-and-set's value (lost otherwise). A value
// replaced twice, a walk that comes round to a value again, or a
// compare-and-set that failed on finding its own value means a command
// took effect twice (twice). lost counts the missing values.
func checkChains(history []porcupine.Operation, final map[string]*string) (lost int, lostKeys, twice []string) {
	type cas struct {
		expect *string
		acked  bool // acknowledged, and it succeeded
	}
	writes := map[string]map[string]cas{}    // key -> value -> its compare-and-set
	observed := map[string]map[string]bool{} // key -> values a command saw there
	replaced := map[string]map[string][]string{}
	var keys []string
	for _, op := range history {
		in := op.Input.(sim.KVInput)
		if in.Key[0] != 's' {
			continue
		}
		if writes[in.Key] == nil {
			keys = append(keys, in.Key)
			writes[in.Key], observed[in.Key], replaced[in.Key] = map[string]cas{}, map[string]bool{}, map[string][]string{}
		}
		out, answered := op.Output.(sim.KVOutput)
		if in.Op == "cas" {
			writes[in.Key][in.Value] = cas{expect: in.Expect, acked: answered && out.OK}
			if answered && !out.OK && out.Found && out.Value == in.Value {
				twice = append(twice, fmt.Sprintf("%s: cas(%s -> %q) failed, finding its own value there", in.Key, describeExpect(in.Expect), in.Value))
			}
		}
		if answered && out.Found {
			observed[in.Key][out.Value] = true
		}
	}
	slices.Sort(keys)
	for _, key := range keys {
		// A compare-and-set took effect if it was acknowledged to, or if
		// its value was seen.
		for v, w := range writes[key] {
			if w.acked || observed[key][v] || (final[key] != nil && *final[key] == v) {
				e := "<absent>"
				if w.expect != nil {
					e = *w.expect
				}
				replaced[key][e] = append(replaced[key][e], v)
			}
		}
		for e, by := range replaced[key] {
			if len(by) > 1 {
				slices.Sort(by)
				twice = append(twice, fmt.Sprintf("%s: %q was replaced %d times (by %q): the key held it more than once", key, e, len(by), by))
			}
		}
		chain := map[string]bool{}
		cur := final[key]
		for cur != nil {
			if chain[*cur] {
				twice = append(twice, fmt.Sprintf("%s: the chain of values comes round to %q again", key, *cur))
				break
			}
			chain[*cur] = true
			w, ok := writes[key][*cur]
			if !ok {
				lost++
				lostKeys = append(lostKeys, fmt.Sprintf("%s: held %q, which no command wrote", key, *cur))
				break
			}
			cur = w.expect
		}
		var missing []string
		for v, w := range writes[key] {
			if w.acked && !chain[v] {
				missing = append(missing, v)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			lost += len(missing)
			lostKeys = append(lostKeys, fmt.Sprintf("%s: acknowledged compare-and-sets %q are not in the chain of values ending in %s", key, missing, describeExpect(final[key])))
		}
	}
	return lost, lostKeys, twice
}

func describeExpect(v *string) string {
	if v == nil {
		return "<absent>"
	}
	return strconv.Quote(*v)
}

package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"

	"tide/sim"
)

// KV is a key-value workload: Clients clients, half over RESP and half
// over HTTP, each the only writer of its KeysPerClient keys, writing
// increasing values and reading any client's keys.
type KV struct {
	Clients       int
	KeysPerClient int
	// Reads is the fraction of operations that are reads (0.5 if 0).
	Reads float64
}

// KVResult is what a KV workload saw and what its checks found.
type KVResult struct {
	Counts
	// Linearizable is porcupine's verdict on the history: "ok",
	// "illegal" or "unknown" (the checker ran out of time: a failure).
	Linearizable string `json:"linearizable"`
	// CheckSeconds is how long the check took.
	CheckSeconds float64 `json:"check_seconds"`
	// LostKeys names the keys whose final value was older than their
	// last acknowledged write.
	LostKeys []string `json:"lost_keys,omitempty"`
	// Illegal lists, for each key whose own history is not linearizable,
	// every operation on it in call order: when, which client through
	// which node, and what it saw. It is what a failure is debugged from.
	Illegal []string       `json:"illegal,omitempty"`
	Errors  map[string]int `json:"errors,omitempty"`
}

// kvClient talks to one node at a time over HTTP or RESP.
type kvClient interface {
	get(ctx context.Context, n *Node, key string) (string, bool, error)
	put(ctx context.Context, n *Node, key, val string) error
	close()
}

type httpKV struct{ hc *http.Client }

func (h httpKV) do(ctx context.Context, method, url string, body io.Reader) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return "", 0, err
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", 0, err
	}
	return string(b), resp.StatusCode, nil
}

func (h httpKV) get(ctx context.Context, n *Node, key string) (string, bool, error) {
	b, code, err := h.do(ctx, http.MethodGet, "http://"+n.HTTP+"/kv/"+key, nil)
	switch {
	case err != nil:
		return "", false, err
	case code == http.StatusNotFound:
		return "", false, nil
	case code != http.StatusOK:
		return "", false, &statusErr{code, fmt.Sprintf("GET %s: %d %s", key, code, strings.TrimSpace(b))}
	}
	return b, true, nil
}

func (h httpKV) put(ctx context.Context, n *Node, key, val string) error {
	b, code, err := h.do(ctx, http.MethodPut, "http://"+n.HTTP+"/kv/"+key, strings.NewReader(val))
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return &statusErr{code, fmt.Sprintf("PUT %s: %d %s", key, code, strings.TrimSpace(b))}
	}
	return nil
}

func (httpKV) close() {}

// respKV keeps a connection pool per node.
type respKV struct {
	timeout time.Duration
	mu      sync.Mutex
	conns   map[string]*redis.Client
}

func (r *respKV) client(n *Node) *redis.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.conns[n.RESP]
	if c == nil {
		c = redis.NewClient(&redis.Options{Addr: n.RESP, MaxRetries: -1, DialTimeout: r.timeout,
			ReadTimeout: r.timeout, WriteTimeout: r.timeout, PoolSize: 2, Protocol: 2, DisableIdentity: true})
		r.conns[n.RESP] = c
	}
	return c
}

func (r *respKV) get(ctx context.Context, n *Node, key string) (string, bool, error) {
	v, err := r.client(n).Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	return v, err == nil, respErr(err)
}

func (r *respKV) put(ctx context.Context, n *Node, key, val string) error {
	return respErr(r.client(n).Set(ctx, key, val, 0).Err())
}

// respErr marks an error the server answered (-ERR ...) as a status.
func respErr(err error) error {
	var re redis.Error
	if errors.As(err, &re) {
		return &statusErr{0, re.Error()}
	}
	return err
}

func (r *respKV) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
}

// kvRun is a KV workload in progress.
type kvRun struct {
	cfg     KV
	cluster *Cluster
	timeout time.Duration
	tally   *tally
	// recorder's via says, for each operation, the client, its protocol
	// and the node it went through; acked is by key the highest
	// acknowledged sequence number.
	*recorder
}

func kvKey(client, j int) string { return fmt.Sprintf("c%d-k%d", client, j) }

func protoOf(i int) string {
	if i%2 == 0 {
		return "resp"
	}
	return "http"
}

func (k *kvRun) clientOf(i int) kvClient {
	if protoOf(i) == "resp" {
		return &respKV{timeout: k.timeout, conns: map[string]*redis.Client{}}
	}
	return httpKV{&http.Client{Timeout: k.timeout}}
}

// run drives one client until ctx ends.
func (k *kvRun) run(ctx context.Context, id int) {
	cl := k.clientOf(id)
	defer cl.close()
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	reads := k.cfg.Reads
	if reads == 0 {
		reads = 0.5
	}
	seq, entry := 0, id
	for ctx.Err() == nil {
		live := k.cluster.Live()
		if len(live) == 0 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		n := live[entry%len(live)]
		octx, cancel := context.WithTimeout(ctx, k.timeout)
		var in sim.KVInput
		var out sim.KVOutput
		var err error
		start := time.Now()
		if rng.Float64() < reads {
			key := kvKey(rng.IntN(k.cfg.Clients), rng.IntN(k.cfg.KeysPerClient))
			in = sim.KVInput{Op: "get", Key: key}
			out.Value, out.Found, err = cl.get(octx, n, key)
		} else {
			seq++
			key := kvKey(id, seq%k.cfg.KeysPerClient)
			in = sim.KVInput{Op: "put", Key: key, Value: strconv.Itoa(seq)}
			err = cl.put(octx, n, key, in.Value)
			out.OK = err == nil
		}
		end := time.Now()
		cancel()
		if ctx.Err() != nil && err != nil {
			// The run ended under this request: its outcome is unknown.
			k.add(porcupine.Operation{ClientId: id, Input: in, Call: k.ns(start), Return: math.MaxInt64}, via(id, n, err))
			return
		}
		outcome := classify(err)
		k.tally.record(id, protoOf(id)+" "+n.Name, start, end, outcome, err)
		switch {
		case outcome == Acked:
			k.add(porcupine.Operation{ClientId: id, Input: in, Output: out, Call: k.ns(start), Return: k.ns(end)}, via(id, n, nil))
			if in.Op == "put" {
				k.mu.Lock()
				k.acked[in.Key] = seq
				k.mu.Unlock()
			}
		case in.Op == "put" && !notApplied(err):
			// It may have been applied, now or later (a partial write is
			// repaired onto the other replicas). One that certainly was
			// not is left out of the history, as a failed read is: every
			// write the checker must place anywhere after its call
			// multiplies the orders it tries.
			k.add(porcupine.Operation{ClientId: id, Input: in, Call: k.ns(start), Return: math.MaxInt64}, via(id, n, err))
		}
		if err != nil {
			entry++ // try another node, as a client with a list of nodes would
		}
		if diskFull(err) {
			// A client backs off while the cluster is out of space, as
			// one that is told so should. Hammering it would only add
			// writes whose outcome is unknown (refused by the replicas
			// after the coordinator stored them), each of which the
			// checker must try at every point after its call: a few
			// hundred on one key took it past its time limit.
			select {
			case <-ctx.Done():
			case <-time.After(diskFullBackoff):
			}
		}
	}
}

// diskFullBackoff is how long a KV client waits after a "disk full".
const diskFullBackoff = 50 * time.Millisecond

// diskFull reports whether err is the store's "disk full" answer.
func diskFull(err error) bool {
	var se *statusErr
	return errors.As(err, &se) && strings.Contains(se.msg, "disk full")
}

func via(client int, n *Node, err error) string {
	s := fmt.Sprintf("c%d %s via %s", client, protoOf(client), n.Name)
	if err != nil {
		s += " (" + err.Error() + ")"
	}
	return s
}

// verify reads every key once the cluster is healed, checks that no
// acknowledged write is lost, and checks the whole history.
func (k *kvRun) verify(ctx context.Context, end time.Time) KVResult {
	res := KVResult{Counts: k.tally.close(end)}
	cl := httpKV{&http.Client{Timeout: k.timeout}}
	for c := range k.cfg.Clients {
		for j := range k.cfg.KeysPerClient {
			key := kvKey(c, j)
			var val string
			var found bool
			var err error
			var start time.Time
			for try := 0; ; try++ {
				live := k.cluster.Live()
				start = time.Now()
				octx, cancel := context.WithTimeout(ctx, k.timeout)
				val, found, err = cl.get(octx, live[try%len(live)], key)
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
			k.add(porcupine.Operation{ClientId: k.cfg.Clients + c, Input: sim.KVInput{Op: "get", Key: key},
				Output: sim.KVOutput{Found: found, Value: val}, Call: k.ns(start), Return: k.ns(time.Now())}, "final read")
			k.mu.Lock()
			want := k.acked[key]
			k.mu.Unlock()
			got, _ := strconv.Atoi(val)
			if want > 0 && (!found || got < want) {
				res.Lost++
				res.LostKeys = append(res.LostKeys, fmt.Sprintf("%s: read %q, acknowledged %d", key, val, want))
			}
		}
	}
	k.mu.Lock()
	history, vias := k.history, k.via
	k.mu.Unlock()
	checkStart := time.Now()
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
		if f := os.Getenv("TIDE_CHAOS_DUMP"); f != "" {
			b, _ := json.Marshal(history)
			os.WriteFile(f, b, 0o644)
		}
	}
	res.CheckSeconds = time.Since(checkStart).Seconds()
	k.tally.mu.Lock()
	res.Errors = k.tally.errs
	k.tally.mu.Unlock()
	return res
}

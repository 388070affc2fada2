package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"tide/cluster"
	"tide/kv"
)

// RebalanceResult is what `tide bench rebalance` measures.
type RebalanceResult struct {
	Keys            int     `json:"keys"`
	ValueBytes      int     `json:"value_bytes"`
	DataBytes       int64   `json:"data_bytes"`
	OwnersChanged   int     `json:"owners_changed"`
	FractionMoved   float64 `json:"fraction_of_keys_changing_owner"`
	IdealFraction   float64 `json:"ideal_fraction"`
	ReceivedKeys    int     `json:"keys_received_by_new_node"`
	ReceivedBytes   int64   `json:"bytes_received_by_new_node"`
	JoinSecs        float64 `json:"join_seconds"`
	MigrationSecs   float64 `json:"migration_seconds"`
	MigrationMBps   float64 `json:"migration_mb_per_sec"`
	StreamSecs      float64 `json:"stream_seconds"`
	StreamMBps      float64 `json:"stream_mb_per_sec"`
	MigrationRateMB string  `json:"migration_rate_flag"`
	Values          string  `json:"values"`
	SettleSecs      float64 `json:"settle_seconds"`
	// PushedBytes is what the old nodes sent to other replicas during the
	// migration (range streams, repairs and hand-offs, to any node):
	// against ReceivedBytes, the traffic the move cost.
	PushedBytes int64 `json:"bytes_pushed_by_old_nodes"`
	// Abandoned counts range streams the old nodes gave up on.
	Abandoned int `json:"range_streams_abandoned"`
}

type ringInfo struct {
	Ring       map[string]string `json:"ring"`
	SortedKeys []uint32          `json:"_sorted_keys"`
}

// Rebalance loads a 3-node ring (N=3) with keys, starts a 4th node, and
// measures the fraction of keys whose owner changes and how fast the new
// node receives everything it now replicates. values is "random" (every
// value different and incompressible) or "repeated" (one byte repeated,
// which compresses to almost nothing).
//
// settle is how long to wait between the load and the 4th node's launch:
// the 3 nodes are still compacting what was just loaded, and a migration
// started at once shares the disk and the CPU with those compactions.
func Rebalance(ctx context.Context, keys, valueBytes int, rate, values string, settle time.Duration, log io.Writer) (RebalanceResult, error) {
	res := RebalanceResult{Keys: keys, ValueBytes: valueBytes, MigrationRateMB: rate, Values: values, SettleSecs: settle.Seconds()}
	if values != "random" && values != "repeated" {
		return res, fmt.Errorf("values: %q is neither random nor repeated", values)
	}
	dir, err := os.MkdirTemp("", "tide-bench-rebalance-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	local := &cluster.Local{Dir: dir}
	defer local.StopAll(10 * time.Second)
	extra := []string{"--migration-rate", rate}
	procs, err := StartRing(ctx, local, 3, 3, extra, log)
	if err != nil {
		return res, err
	}
	first := procs[0].Spec.HTTPAddr
	if err := waitMembers(ctx, first, 3); err != nil {
		return res, err
	}
	fmt.Fprintf(log, "loading %d keys of %d bytes\n", keys, valueBytes)
	repeated := bytes.Repeat([]byte("v"), valueBytes)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	next := make(chan int)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 30 * time.Second}
			rng := rand.NewChaCha8([32]byte{byte(w)})
			random := make([]byte, valueBytes)
			for i := range next {
				value := repeated
				if values == "random" {
					rng.Read(random)
					value = random
				}
				target := procs[(i+w)%3].Spec.HTTPAddr
				req, _ := http.NewRequestWithContext(ctx, http.MethodPut, fmt.Sprintf("http://%s/kv/key-%08d", target, i), bytes.NewReader(value))
				resp, err := c.Do(req)
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					errs <- fmt.Errorf("put key-%08d on %s: %s: %s", i, target, resp.Status, bytes.TrimSpace(body))
					return
				}
			}
		}()
	}
	for i := range keys {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return res, err
	default:
	}
	res.DataBytes = int64(keys) * int64(valueBytes)
	before, err := readRing(ctx, first)
	if err != nil {
		return res, err
	}

	if settle > 0 {
		fmt.Fprintf(log, "waiting %s for the nodes to compact what was loaded\n", settle)
		select {
		case <-time.After(settle):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	pushed0, abandoned0 := pushStats(ctx, procs)
	fmt.Fprintln(log, "starting a 4th node")
	start := time.Now()
	p, err := local.Launch(ctx, cluster.NodeSpec{Name: "node4", ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Join: procs[0].Spec.ChordAddr, Replicas: 3, Extra: extra})
	if err != nil {
		return res, err
	}
	if err := waitMembers(ctx, first, 4); err != nil {
		return res, err
	}
	joined := time.Now()
	res.JoinSecs = joined.Sub(start).Seconds()
	fmt.Fprintf(log, "node4 is a ring member after %.2fs\n", res.JoinSecs)
	after, err := readRing(ctx, first)
	if err != nil {
		return res, err
	}
	// The rings are built once: this runs while data moves, on the same
	// cores.
	pos := kv.Partitioners["md5-low32"]
	ringOf := func(r ringInfo) *kv.StaticRing {
		var ms []kv.Member
		for tok, a := range r.Ring {
			t, err := strconv.ParseUint(tok, 10, 32)
			if err != nil {
				continue
			}
			ms = append(ms, kv.Member{Addr: a, Token: uint32(t)})
		}
		return kv.NewStaticRing(pos, ms)
	}
	beforeRing, afterRing := ringOf(before), ringOf(after)
	// The new node replicates every key whose preference list includes it.
	want := 0
	for i := range keys {
		kp := pos([]byte(fmt.Sprintf("key-%08d", i)))
		if beforeRing.Owner(kp).Addr != afterRing.Owner(kp).Addr {
			res.OwnersChanged++
		}
		for _, a := range afterRing.Preference(kp, 3) {
			if a == p.Spec.HTTPAddr {
				want++
			}
		}
	}
	res.FractionMoved = float64(res.OwnersChanged) / float64(keys)
	res.IdealFraction = 0.25
	fmt.Fprintf(log, "new node replicates %d keys; waiting for them to arrive\n", want)
	lastLog := time.Now()
	for {
		var st struct {
			Keys  int   `json:"kv_keys"`
			Bytes int64 `json:"kv_bytes"`
		}
		err := getJSONCtx(ctx, "http://"+p.Spec.HTTPAddr+"/internal/info", &st)
		if err == nil && st.Keys >= want {
			res.ReceivedKeys, res.ReceivedBytes = st.Keys, st.Bytes
			break
		}
		if time.Since(lastLog) >= time.Second {
			lastLog = time.Now()
			fmt.Fprintf(log, "  %6.1fs  %d of %d keys, %.1f MB\n", time.Since(start).Seconds(), st.Keys, want, float64(st.Bytes)/1e6)
		}
		if time.Since(start) > 30*time.Minute {
			return res, fmt.Errorf("the new node did not receive its %d keys within 30 minutes", want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.MigrationSecs = time.Since(start).Seconds()
	pushed1, abandoned1 := pushStats(ctx, procs)
	res.PushedBytes, res.Abandoned = int64(pushed1-pushed0), int(abandoned1-abandoned0)
	res.MigrationMBps = float64(res.ReceivedBytes) / 1e6 / res.MigrationSecs
	res.StreamSecs = time.Since(joined).Seconds()
	res.StreamMBps = float64(res.ReceivedBytes) / 1e6 / res.StreamSecs
	return res, nil
}

// pushStats sums the nodes' pushed bytes and abandoned range streams.
func pushStats(ctx context.Context, procs []*cluster.Proc) (pushed, abandoned float64) {
	for _, p := range procs {
		m, err := Scrape(ctx, p.Spec.HTTPAddr)
		if err != nil {
			continue
		}
		pushed += m["tide_kv_pushed_bytes_total"][""]
		abandoned += m["tide_kv_range_streams_abandoned_total"][""]
	}
	return pushed, abandoned
}

func readRing(ctx context.Context, httpAddr string) (ringInfo, error) {
	var r ringInfo
	err := getJSONCtx(ctx, "http://"+httpAddr+"/hash_ring", &r)
	return r, err
}

func waitMembers(ctx context.Context, httpAddr string, n int) error {
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		if r, err := readRing(ctx, httpAddr); err == nil && len(r.Ring) == n {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not see %d members", httpAddr, n)
}

func getJSONCtx(ctx context.Context, u string, v any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

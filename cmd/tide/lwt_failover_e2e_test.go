package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"tide/bench"
	"tide/cluster"
)

// TestLWTLeaderFailover: the leader of a counter's lightweight
// transactions is SIGKILLed while the ring still lists it (a 5 s Chord
// period: the ring drops a dead node only after several failed
// stabilizations). INCRs through the other nodes must each answer (an
// error at worst, "outcome unknown" for an op the leader may have taken)
// and soon succeed, led by a surviving replica; the counter then holds
// every acknowledged increment, and no more than the unknown ones on top.
func TestLWTLeaderFailover(t *testing.T) {
	ctx := context.Background()
	local := &cluster.Local{Binary: tideBin, Dir: t.TempDir()}
	defer local.StopAll(5 * time.Second)
	procs, err := bench.StartRing(ctx, local, 3, 3, []string{"--tick", "5s"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	waitKVMembers(t, procs, 3)
	// Longer than the node's own deadline (8 s for the op, 12 s for one
	// forwarded to a leader): a client time-out is a request that never
	// answered.
	hc := &http.Client{Timeout: 30 * time.Second}
	incr := func(p *cluster.Proc) (int64, error) {
		resp, err := hc.Post("http://"+p.Spec.HTTPAddr+"/kv/failover-ctr/incr", "text/plain", nil)
		if err != nil {
			t.Fatalf("INCR through %s did not answer: %v", p.Spec.Name, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		return strconv.ParseInt(string(b), 10, 64)
	}
	casOps := func(p *cluster.Proc) float64 {
		m, err := bench.Scrape(ctx, p.Spec.HTTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		return m["tide_kv_cas_ops_total"][""]
	}
	var acked, unknown int64
	waitFor(t, "an INCR before the kill", time.Minute, func() error {
		_, err := incr(procs[0])
		if err == nil {
			acked++
		} else if strings.Contains(err.Error(), "unknown") {
			unknown++
		}
		return err
	})
	// A node publishes its counters every KV tick (10 ms), and an INCR on
	// loopback can be answered within one: wait for the leader's count.
	var leader *cluster.Proc
	var others []*cluster.Proc
	waitFor(t, "a node to count the INCR in tide_kv_cas_ops_total", 30*time.Second, func() error {
		leader, others = nil, nil
		for _, p := range procs {
			if casOps(p) > 0 {
				if leader != nil {
					t.Fatalf("both %s and %s led the counter's ops", leader.Spec.Name, p.Spec.Name)
				}
				leader = p
			} else {
				others = append(others, p)
			}
		}
		if leader == nil {
			return fmt.Errorf("no node counts it")
		}
		return nil
	})
	leader.Kill()
	t.Logf("killed %s, the counter's leader", leader.Spec.Name)

	// Through each survivor, until each has had one acknowledged.
	for _, p := range others {
		waitFor(t, "an INCR through "+p.Spec.Name+" with the leader dead", time.Minute, func() error {
			_, err := incr(p)
			switch {
			case err == nil:
				acked++
			case strings.Contains(err.Error(), "unknown"):
				unknown++
				t.Logf("INCR through %s: %v", p.Spec.Name, err)
			default:
				t.Logf("INCR through %s: %v", p.Spec.Name, err)
			}
			return err
		})
	}
	// The failover, not the ring dropping the dead node, let them
	// through: a survivor led them, one having given up on the leader.
	var led float64
	waitFor(t, "the survivors' counters to show the failover", 30*time.Second, func() error {
		var suspected float64
		led = 0
		for _, p := range others {
			led += casOps(p)
			m, err := bench.Scrape(ctx, p.Spec.HTTPAddr)
			if err != nil {
				t.Fatal(err)
			}
			suspected += m["tide_kv_cas_leaders_suspected_total"][""]
		}
		if led == 0 || suspected == 0 {
			return fmt.Errorf("survivors led %v ops and suspected the leader %v times: the ring dropped it first?", led, suspected)
		}
		return nil
	})
	code, body := get(t, "http://"+others[0].Spec.HTTPAddr+"/kv/failover-ctr")
	if code != http.StatusOK {
		t.Fatalf("GET the counter: %d %s", code, body)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(body), 10, 64)
	if err != nil || v < acked || v > acked+unknown {
		t.Fatalf("counter %q: %d acknowledged increments, %d unknown", body, acked, unknown)
	}
	t.Logf("counter %d: %d acknowledged, %d unknown; survivors led %v ops", v, acked, unknown, led)
}

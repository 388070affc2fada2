package chaos

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestOthers checks which nodes count as untouched by a scenario's faults,
// and the latency summed up over them.
func TestOthers(t *testing.T) {
	sc := Scenario{Nodes: 5, Steps: []Step{{Fault: Kill("n2")}, {Fault: ScaleIn("n4")}, {Fault: Join()}, {Fault: ScaleOut()}}}
	if got := untouched(sc); !slices.Equal(got, []string{"n1", "n3", "n5"}) {
		t.Fatalf("untouched = %v, want n1, n3, n5", got)
	}
	tl := newTally()
	t0 := time.Now()
	for i := range 100 {
		tl.record(0, "resp n1", t0, t0.Add(time.Duration(i+1)*time.Millisecond), Acked, nil)
	}
	tl.record(1, "http n2", t0, t0.Add(time.Hour), Unanswered, nil) // a node a fault named
	tl.record(1, "http n3", t0, t0.Add(3*time.Second), Unanswered, nil)
	l := tl.others([]string{"n1", "n3", "n5"})
	if l == nil || !slices.Equal(l.Nodes, []string{"n1", "n3"}) || l.Requests != 101 {
		t.Fatalf("others = %+v, want n1 and n3 over 101 requests", l)
	}
	if l.Max != 3*time.Second || l.P50 != 51*time.Millisecond || l.P99 != 100*time.Millisecond {
		t.Errorf("others: p50 %s, p99 %s, max %s; want 51ms, 100ms, 3s", l.P50, l.P99, l.Max)
	}
	if len(l.Slowest) != 1 || !strings.Contains(l.Slowest[0], "via http n3") {
		t.Errorf("slowest through others = %q, want the one through n3", l.Slowest)
	}
	if tl.others([]string{"n5"}) != nil {
		t.Error("a node without requests has a latency")
	}
}

// TestNotApplied checks which failed writes the KV history leaves out:
// only those that certainly did not take effect.
func TestNotApplied(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&statusErr{0, "ERR disk full: 4.0 MiB free on the filesystem of /data, below the reserve of 4.0 MiB (--disk-reserve); writes are refused until space returns"}, true},
		{&statusErr{507, "PUT c0-k1: 507 disk full: 4.0 MiB free on the filesystem of /data, below the reserve of 4.0 MiB"}, true},
		{&statusErr{507, "PUT c0-k1: 507 disk full: 4.0 MiB free ...; refused by 10.0.0.3:5057, 10.0.0.4:5057, so the write cannot reach 2 acknowledgements; outcome unknown: stored on 10.0.0.2:5057"}, false},
		{&statusErr{503, "PUT c0-k1: 503 quorum not reached: write quorum not reached; outcome unknown: stored on n1"}, false},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{&net.OpError{Op: "read", Err: errors.New("connection reset")}, false},
		{context.DeadlineExceeded, false},
	} {
		if got := notApplied(c.err); got != c.want {
			t.Errorf("notApplied(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

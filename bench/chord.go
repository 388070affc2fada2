package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"tide/chord"
	"tide/chord/rpc"
	"tide/cluster"
)

// ChordResult is what `tide bench chord` measures on a ring of real node
// processes.
type ChordResult struct {
	Nodes            int     `json:"nodes"`
	IdleSeconds      float64 `json:"idle_seconds"`
	IdleRPCPerSec    float64 `json:"idle_rpc_per_sec"`
	Lookups          int     `json:"lookups"`
	MessagesPerFind  float64 `json:"messages_per_find_successor"`
	TargetPerFind    float64 `json:"target_messages_per_find_successor"`
	LookupsCorrect   int     `json:"lookups_correct"`
	ConvergeSeconds  float64 `json:"converge_seconds"`
	LookupLatencyP50 float64 `json:"lookup_p50_ms"`
}

// StartRing launches n node processes on free loopback ports, joined into
// one ring, and returns their chord and http addresses.
func StartRing(ctx context.Context, local *cluster.Local, n, replicas int, extra []string, log io.Writer) ([]*cluster.Proc, error) {
	var procs []*cluster.Proc
	var first string
	for i := range n {
		// Each node binds free ports itself and reports them (its
		// --addr-file): no port is picked here and bound later, where
		// another process could take it in between.
		spec := cluster.NodeSpec{Name: fmt.Sprintf("node%d", i+1), ChordAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Replicas: replicas,
			Join: first, Extra: extra}
		p, err := local.Launch(ctx, spec)
		if err != nil {
			return procs, err
		}
		spec = p.Spec
		if first == "" {
			first = spec.ChordAddr
		}
		procs = append(procs, p)
		fmt.Fprintf(log, "started %s chord=%s http=%s\n", spec.Name, spec.ChordAddr, spec.HTTPAddr)
	}
	return procs, nil
}

// WaitConverged waits until every node's successor is the true one.
func WaitConverged(ctx context.Context, cl *rpc.Client, chordAddrs []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, why := converged(ctx, cl, chordAddrs)
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ring did not converge in %s: %s", timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// WaitSuccessorLists waits until every node's successor list holds, in
// order, its first min(r, n-1) true successors: a ring that has served a
// while, where a node that hangs is routed around. Right after a join,
// a node's list can still name its first successor alone.
func WaitSuccessorLists(ctx context.Context, cl *rpc.Client, chordAddrs []string, r int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, why := listsConverged(ctx, cl, chordAddrs, r)
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("successor lists did not converge in %s: %s", timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func listsConverged(ctx context.Context, cl *rpc.Client, addrs []string, r int) (bool, string) {
	refs, err := infos(ctx, cl, addrs)
	if err != nil {
		return false, err.Error()
	}
	want := min(r, len(refs)-1)
	for _, ref := range refs {
		v, err := cl.Call(ctx, ref.Addr(), "get_successors")
		if err != nil {
			return false, err.Error()
		}
		got, err := rpc.DecodeRefs(v)
		if err != nil {
			return false, err.Error()
		}
		if len(got) < want {
			return false, fmt.Sprintf("%s knows %d successors, want %d", ref, len(got), want)
		}
		id := ref.ID
		for i := range want {
			s := chord.SuccessorAmong(refs, id+1)
			if got[i] != s {
				return false, fmt.Sprintf("%s has successor %d %s, want %s", ref, i, got[i], s)
			}
			id = s.ID
		}
	}
	return true, ""
}

func infos(ctx context.Context, cl *rpc.Client, addrs []string) ([]chord.Ref, error) {
	var refs []chord.Ref
	for _, a := range addrs {
		r, err := cl.CallRef(ctx, a, "get_info")
		if err != nil {
			return nil, err
		}
		refs = append(refs, r)
	}
	return refs, nil
}

func converged(ctx context.Context, cl *rpc.Client, addrs []string) (bool, string) {
	refs, err := infos(ctx, cl, addrs)
	if err != nil {
		return false, err.Error()
	}
	for _, r := range refs {
		s, err := cl.CallRef(ctx, r.Addr(), "get_successor", 0)
		if err != nil {
			return false, err.Error()
		}
		if want := chord.SuccessorAmong(refs, r.ID+1); s != want {
			return false, fmt.Sprintf("%s has successor %s, want %s", r, s, want)
		}
	}
	return true, ""
}

func sumRPC(ctx context.Context, procs []*cluster.Proc, method string) (float64, error) {
	total := 0.0
	for _, p := range procs {
		m, err := Scrape(ctx, p.Spec.HTTPAddr)
		if err != nil {
			return 0, err
		}
		total += m["tide_chord_rpc_received_total"][method]
	}
	return total, nil
}

// Chord starts a ring of n real node processes, lets it settle, measures
// the Chord RPCs an idle ring sends per second, then the mean messages per
// find_successor sent to a random node (the request itself plus every hop).
func Chord(ctx context.Context, n int, idle time.Duration, lookups int, log io.Writer) (ChordResult, error) {
	res := ChordResult{Nodes: n, Lookups: lookups}
	dir, err := os.MkdirTemp("", "tide-bench-chord-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	local := &cluster.Local{Dir: dir}
	defer local.StopAll(5 * time.Second)
	start := time.Now()
	procs, err := StartRing(ctx, local, n, 1, nil, log)
	if err != nil {
		return res, err
	}
	cl := rpc.NewClient()
	defer cl.Close()
	var addrs []string
	for _, p := range procs {
		addrs = append(addrs, p.Spec.ChordAddr)
	}
	if err := WaitConverged(ctx, cl, addrs, 2*time.Minute); err != nil {
		return res, err
	}
	res.ConvergeSeconds = time.Since(start).Seconds()
	fmt.Fprintf(log, "ring of %d converged after %.1fs; settling fingers\n", n, res.ConvergeSeconds)
	time.Sleep(2*chord.Bits*time.Second/8 + 5*time.Second)

	before, err := sumRPC(ctx, procs, "")
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	fmt.Fprintf(log, "measuring idle traffic for %s\n", idle)
	time.Sleep(idle)
	after, err := sumRPC(ctx, procs, "")
	if err != nil {
		return res, err
	}
	res.IdleSeconds = time.Since(t0).Seconds()
	res.IdleRPCPerSec = (after - before) / res.IdleSeconds

	var refs []chord.Ref
	for _, a := range addrs {
		r, err := cl.CallRef(ctx, a, "get_info")
		if err != nil {
			return res, err
		}
		refs = append(refs, r)
	}
	fb, err := sumRPC(ctx, procs, "find_successor")
	if err != nil {
		return res, err
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var lat []float64
	for range lookups {
		id := chord.ID(rng.Uint32())
		t := time.Now()
		got, err := cl.CallRef(ctx, addrs[rng.IntN(len(addrs))], "find_successor", uint32(id))
		lat = append(lat, float64(time.Since(t).Microseconds())/1000)
		if err == nil && got == chord.SuccessorAmong(refs, id) {
			res.LookupsCorrect++
		}
	}
	fa, err := sumRPC(ctx, procs, "find_successor")
	if err != nil {
		return res, err
	}
	// Idle fix_fingers lookups during the measurement are counted too,
	// which overstates the per-lookup cost slightly.
	res.MessagesPerFind = (fa - fb) / float64(lookups)
	res.TargetPerFind = 0.5*log2(float64(n)) + 1
	res.LookupLatencyP50 = Percentile(lat, 50)
	return res, nil
}

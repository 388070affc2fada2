package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"tide/cluster"
	"tide/paxos"
	"tide/paxos/node"
	"tide/sim"
)

// TestLogSurvivesKills runs the log as real processes under a client load,
// kill -9s the active leader, then an acceptor, and checks that the log
// keeps serving and that every client history is linearizable.
func TestLogSurvivesKills(t *testing.T) {
	d, procs, _ := startTestLog(t)

	ld := startLoad(t, d, 4)
	waitProgress := ld.waitProgress
	waitProgress("initial load", 200)
	leader := activeLeader(t, d)
	// Every role process serves its profiles.
	resp, err := http.Get("http://" + d.HTTP[leader] + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	prof, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(prof), "goroutine profile:") {
		t.Fatalf("GET /debug/pprof/goroutine of the leader: %s %.200s", resp.Status, prof)
	}
	procs.Proc(leader).Kill()
	t.Logf("killed active leader %s after %d operations", leader, ld.completed.Load())
	waitProgress("progress after the leader was killed", 200)
	acc := d.Log.Groups[0].Acceptors[1]
	procs.Proc(acc).Kill()
	t.Logf("killed acceptor %s after %d operations", acc, ld.completed.Load())
	waitProgress("progress after an acceptor was killed", 200)
	ld.check()
}

// startTestLog starts the default log (10 ms ticks) as child processes,
// stopped when the test ends, and returns its deployment, its processes
// and the control that reconfigures it.
func startTestLog(t *testing.T) (node.Deployment, *cluster.LocalRoles, *cluster.LogControl) {
	t.Helper()
	dir := t.TempDir()
	shape := node.DefaultShape
	shape.TickMillis = 10
	depPath := filepath.Join(dir, "deployment.json")
	local := &cluster.Local{Binary: tideBin, Dir: dir}
	t.Cleanup(func() { local.StopAll(5 * time.Second) })
	roles := &cluster.LocalRoles{Local: local, StateDir: filepath.Join(dir, "state")}
	d, err := roles.StartNew(context.Background(), cluster.ShapePlan(shape, ""), func(d node.Deployment) error { return d.Save(depPath) })
	if err != nil {
		t.Fatal(err)
	}
	return d, roles, cluster.NewLogControl(roles, d, depPath)
}

// load runs clients of random puts, gets (through the log and by quorum
// read) and deletes on a few keys against a log, recording a porcupine
// history.
type load struct {
	t         *testing.T
	mu        sync.Mutex
	history   []porcupine.Operation
	completed atomic.Int64
	stop      chan struct{}
	wg        sync.WaitGroup
}

func startLoad(t *testing.T, d node.Deployment, clients int) *load {
	ld := &load{t: t, stop: make(chan struct{})}
	ctx := context.Background()
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	stop := ld.stop
	for ci := range clients {
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			c, err := node.NewClient(d, "", 1)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			rng := rand.New(rand.NewPCG(uint64(ci), 1))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprint("k", rng.IntN(3))
				in := sim.KVInput{Key: key}
				opCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
				call := now()
				var out any
				var err error
				switch rng.IntN(4) {
				case 0, 1:
					in.Op, in.Value = "put", fmt.Sprintf("c%d-%d", ci, n)
					err = c.Put(opCtx, key, []byte(in.Value))
					out = sim.KVOutput{OK: true}
				case 2:
					in.Op = "get"
					mode := paxos.ReadThroughLog
					if rng.IntN(2) == 0 {
						mode = paxos.ReadQuorum
					}
					var v []byte
					var found bool
					v, found, err = c.Get(opCtx, key, mode)
					out = sim.KVOutput{OK: true, Found: found, Value: string(v)}
				default:
					in.Op = "del"
					var existed bool
					existed, err = c.Del(opCtx, key)
					out = sim.KVOutput{OK: existed, Found: existed}
				}
				cancel()
				ret := now()
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("%s: %v", in.Op, err)
						return
					}
					out, ret = nil, math.MaxInt64
				} else {
					ld.completed.Add(1)
				}
				ld.mu.Lock()
				ld.history = append(ld.history, porcupine.Operation{ClientId: ci, Input: in, Call: call, Output: out, Return: ret})
				ld.mu.Unlock()
			}
		}()
	}
	return ld
}

// waitProgress waits until more operations have completed.
func (ld *load) waitProgress(what string, more int64) {
	ld.t.Helper()
	target := ld.completed.Load() + more
	waitFor(ld.t, what, time.Minute, func() error {
		if n := ld.completed.Load(); n < target {
			return fmt.Errorf("%d of %d operations", n, target)
		}
		return nil
	})
}

// check stops the clients and checks the history: linearizable, so no
// acknowledged write is lost or applied twice.
func (ld *load) check() {
	ld.t.Helper()
	close(ld.stop)
	ld.wg.Wait()
	ld.t.Logf("%d operations completed", ld.completed.Load())
	if res := porcupine.CheckOperationsTimeout(sim.KVModel, ld.history, time.Minute); res != porcupine.Ok {
		ld.t.Fatalf("history of %d operations is not linearizable (porcupine: %v)", len(ld.history), res)
	}
}

func activeLeader(t *testing.T, d node.Deployment) string {
	t.Helper()
	var found string
	waitFor(t, "an active leader", time.Minute, func() error {
		for _, l := range d.Log.Leaders {
			resp, err := http.Get("http://" + d.HTTP[l] + "/status")
			if err != nil {
				continue
			}
			var st []node.Status
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			for _, s := range st {
				if s.Active {
					found = s.Addr
					return nil
				}
			}
		}
		return fmt.Errorf("no leader reports active")
	})
	return found
}

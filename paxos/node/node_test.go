package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"tide/paxos"
)

func TestLogInProcess(t *testing.T) {
	for _, shape := range []Shape{
		DefaultShape,
		{Leaders: 2, ProxyLeaders: 1, Groups: 2, F: 1, Replicas: 3}, // unbatched, two groups
	} {
		t.Run(fmt.Sprintf("%+v", shape), func(t *testing.T) {
			// Ports bound before the deployment names them: none can be
			// taken by another test in between.
			d, stop, err := RunInProcess(context.Background(), shape, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			c, err := NewClient(d, "127.0.0.1", 4)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for i := range 20 {
				if err := c.Put(ctx, fmt.Sprint("k", i%5), []byte(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			for _, mode := range []paxos.ReadMode{paxos.ReadThroughLog, paxos.ReadQuorum} {
				v, found, err := c.Get(ctx, "k4", mode)
				if err != nil || !found || string(v) != "19" {
					t.Fatalf("get k4 (mode %d) = %q %v %v, want 19", mode, v, found, err)
				}
			}
			ok, old, err := c.CAS(ctx, "k0", []byte("15"), []byte("x"))
			if err != nil || !ok || string(old) != "15" {
				t.Fatalf("cas = %v %q %v", ok, old, err)
			}
			ok, _, err = c.CAS(ctx, "k0", []byte("15"), []byte("y"))
			if err != nil || ok {
				t.Fatalf("second cas should fail: %v %v", ok, err)
			}
			if existed, err := c.Del(ctx, "k0"); err != nil || !existed {
				t.Fatalf("del = %v %v", existed, err)
			}
			if _, found, err := c.Get(ctx, "k0", paxos.ReadThroughLog); err != nil || found {
				t.Fatalf("k0 after del: found=%v %v", found, err)
			}
			resp, err := http.Get("http://" + d.HTTP[d.Log.Leaders[0]] + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, series := range []string{"tide_paxos_config_epoch{", "tide_paxos_live_configs{", "tide_paxos_leader_active{"} {
				if !strings.Contains(string(body), series) {
					t.Errorf("leader /metrics lacks %s", series)
				}
			}
		})
	}
}

// TestRunInProcess: a log RunInProcess starts serves commands and each
// role's HTTP answers for it under the address the deployment gives.
func TestRunInProcess(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, stop, err := RunInProcess(context.Background(), DefaultShape, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c, err := NewClient(d, "127.0.0.1", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := c.Get(ctx, "k", paxos.ReadThroughLog); err != nil || !ok || string(v) != "v" {
		t.Fatalf("get k = %q, %v, %v; want v", v, ok, err)
	}
}

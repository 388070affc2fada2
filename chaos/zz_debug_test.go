package chaos

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestZZDebugRestart(t *testing.T) {
	cli, image := testImage(t)
	ctx := context.Background()
	c, err := NewCluster(ClusterConfig{Image: image, Name: "chaos-dbg", Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if err := c.Start(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSettled(ctx); err != nil {
		t.Fatal(err)
	}
	nodes := c.Nodes()
	hc := &http.Client{Timeout: 3 * time.Second}
	t0 := time.Now()
	var mu sync.Mutex
	var lines []string
	put := func(n *Node, k string) {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPut, "http://"+n.HTTP+"/kv/"+k, strings.NewReader("x"))
		resp, err := hc.Do(req)
		code := 0
		if err == nil {
			code = resp.StatusCode
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if d := time.Since(start); d > 200*time.Millisecond || err != nil {
			mu.Lock()
			lines = append(lines, fmt.Sprintf("%s put %s via %s: %d %v in %s", start.Sub(t0).Round(100*time.Millisecond), k, n.Name, code, err, d.Round(time.Millisecond)))
			mu.Unlock()
		}
	}
	views := func() string {
		s := ""
		for _, n := range nodes {
			v, _ := c.ringViews(ctx, n)
			resp, err := http.Get("http://" + n.HTTP + "/metrics")
			tr := ""
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				for _, l := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(l, "tide_kv_ring_transition ") {
						tr = strings.TrimPrefix(l, "tide_kv_ring_transition ")
					}
				}
			}
			s += fmt.Sprintf(" %s=%.0f/%s", n.Name, v, tr)
		}
		return s
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				put(nodes[0], fmt.Sprintf("c%d-k%d", i/3, i%3))
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			mu.Lock()
			lines = append(lines, fmt.Sprintf("%s views%s", time.Since(t0).Round(100*time.Millisecond), views()))
			mu.Unlock()
		}
	})
	time.Sleep(2 * time.Second)
	mu.Lock()
	lines = append(lines, fmt.Sprintf("%s restart n4", time.Since(t0).Round(100*time.Millisecond)))
	mu.Unlock()
	if err := c.Restart(ctx, nodes[3]); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	lines = append(lines, fmt.Sprintf("%s n4 serving", time.Since(t0).Round(100*time.Millisecond)))
	mu.Unlock()
	time.Sleep(40 * time.Second)
	close(stop)
	wg.Wait()
	for _, l := range lines {
		t.Log(l)
	}
}

package kvserver

import (
	"context"
	"errors"
	"hash/crc32"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"tide/kv"
	"tide/store/engine"
)

// TestGaveUpWriteOutcome: a write the caller stopped waiting for after the
// coordinator took it may still take effect, and its error says so; a read
// given up on is just that.
func TestGaveUpWriteOutcome(t *testing.T) {
	err := gaveUp(kv.Message{Kind: kv.KindClientPut}, context.DeadlineExceeded)
	if !errors.Is(err, ErrQuorum) || !strings.Contains(err.Error(), "outcome unknown") {
		t.Fatalf("write given up on: %v, want an unknown outcome", err)
	}
	if err := gaveUp(kv.Message{Kind: kv.KindClientGet}, context.DeadlineExceeded); err != context.DeadlineExceeded {
		t.Fatalf("read given up on: %v", err)
	}
}

// TestFirstRingInstalledBeforeRequests: a client request let through by
// the first ring table is stepped by that table, not by the table of the
// node alone it started with. The driver's loop picks among ready channels
// at random, so the node may open to requests only once the loop has
// installed the table, not when SetRing queues it (a restarted node
// answered a read by its own storage and one other node's, found nothing,
// one run in forty under load).
func TestFirstRingInstalledBeforeRequests(t *testing.T) {
	pos := func(k []byte) uint32 { return crc32.ChecksumIEEE(k) }
	for i := range 20 {
		eng, err := engine.Open(t.TempDir(), pos)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		self := ln.Addr().String()
		ctx, cancel := context.WithCancel(context.Background())
		alone := kv.NewStaticRing(pos, []kv.Member{{Addr: self, Token: 1}})
		k, err := Start(ctx, Config{Self: self, Engine: eng, Log: slog.New(slog.DiscardHandler), KnowsRing: func() bool { return true },
			RoundMessages: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "r"}), SyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "s"}),
			Latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "l"})}, ln, alone)
		if err != nil {
			t.Fatal(err)
		}
		ring := kv.NewStaticRing(pos, []kv.Member{{Addr: self, Token: 1}, {Addr: "127.0.0.1:1", Token: 1 << 31}, {Addr: "127.0.0.1:2", Token: 3 << 30}})
		k.SetRing(ring)
		if err := k.waitReady(ctx); err != nil {
			t.Fatal(err)
		}
		applied, _ := k.Applied().(*kv.StaticRing)
		cancel()
		k.Wait()
		eng.Close()
		if applied != ring {
			t.Fatalf("server %d: a request passed before the loop installed the first ring (applied: %v)", i, applied)
		}
	}
}

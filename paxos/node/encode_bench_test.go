package node

import (
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"tide/paxos"
	"tide/transport"
)

// BenchmarkRunnerEncode is a proxy leader's round under load as its runner
// encodes it: a phase 2a of a batch of 40 puts fanned out to 3 acceptors,
// and the chosen value of the slot before, to 2 replicas. Its allocations
// show the frames of a round sharing one buffer.
func BenchmarkRunnerEncode(b *testing.B) {
	tr := transport.New()
	defer tr.Close()
	r, err := NewRunnerKind(Deployment{}, "proxy", "127.0.0.1:1", b.TempDir(), tr, NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	cmds := make([]paxos.Command, 40)
	for i := range cmds {
		cmds[i] = paxos.Command{Client: uint64(i), Seq: uint64(i), Op: []byte("put c1-12 0123456789abcdef"), ReplyTo: "127.0.0.1:40000"}
	}
	v := paxos.Value{Commands: cmds}
	var round []paxos.Message
	for i, to := range []string{"127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"} {
		round = append(round, paxos.Message{Kind: paxos.KindPhase2a, From: "127.0.0.1:1", To: to, Ballot: paxos.Ballot{Round: 3, ID: 1}, Slot: 12345, Value: v, SameAsPrevious: i > 0})
	}
	for i, to := range []string{"127.0.0.1:5", "127.0.0.1:6"} {
		round = append(round, paxos.Message{Kind: paxos.KindChosen, From: "127.0.0.1:1", To: to, Slot: 12344, Value: v, SameAsPrevious: i > 0})
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.encode(round); err != nil {
			b.Fatal(err)
		}
	}
}

package node

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tide/paxos"
	"tide/transport"
)

// sent is one message a runner handed to the transport, and how many
// fsyncs had completed when it did.
type sent struct {
	m      paxos.Message
	synced int32
}

// groupCommitRig runs an acceptor whose fsyncs block until the test
// releases them, and records every message it sends with the number of
// fsyncs completed at that moment.
type groupCommitRig struct {
	r       *Runner
	synced  atomic.Int32
	entered chan struct{}
	release chan struct{}
	out     chan sent
}

func newGroupCommitRig(t *testing.T) *groupCommitRig {
	t.Helper()
	tr := transport.New()
	t.Cleanup(tr.Close)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := NewRunnerKind(Deployment{}, "acceptor", "127.0.0.1:1", t.TempDir(), tr, NewMetrics(prometheus.NewRegistry()), log)
	if err != nil {
		t.Fatal(err)
	}
	g := &groupCommitRig{r: r, entered: make(chan struct{}, 64), release: make(chan struct{}), out: make(chan sent, 64)}
	sync := r.syncFn
	r.syncFn = func() error {
		g.entered <- struct{}{}
		<-g.release
		err := sync()
		g.synced.Add(1)
		return err
	}
	r.sendFn = func(to string, frames [][]byte) {
		for _, f := range frames {
			m, err := paxos.Decode(f)
			if err != nil {
				t.Errorf("runner sent an undecodable frame: %v", err)
				continue
			}
			g.out <- sent{m, g.synced.Load()}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() {
		select {
		case <-g.release:
		default:
			close(g.release)
		}
		cancel()
		<-done
	})
	return g
}

func (g *groupCommitRig) deliver(t *testing.T, m paxos.Message) {
	t.Helper()
	f, err := paxos.Encode(&m)
	if err != nil {
		t.Fatal(err)
	}
	g.r.Deliver(f)
}

// next waits for the first of: the runner entering an fsync (true), or
// sending a message (false, and the message).
func (g *groupCommitRig) next(t *testing.T) (bool, sent) {
	t.Helper()
	select {
	case <-g.entered:
		return true, sent{}
	case s := <-g.out:
		return false, s
	case <-time.After(time.Minute):
		t.Fatal("the acceptor neither synced nor answered within a minute")
	}
	return false, sent{}
}

// TestAcceptorAnswersAfterCoveringSync: an acceptor's phase 2b leaves only
// after the fsync that covers its vote, and so does an answer that only
// repeats a vote still waiting for its fsync (a resent phase 2a that
// persists nothing new), though its own round wrote nothing.
func TestAcceptorAnswersAfterCoveringSync(t *testing.T) {
	g := newGroupCommitRig(t)
	b := paxos.Ballot{Round: 1, ID: 7}
	p2a := paxos.Message{Kind: paxos.KindPhase2a, From: "127.0.0.1:2", Ballot: b, Slot: 3,
		Value: paxos.Value{Commands: []paxos.Command{{Client: 1, Seq: 1, Op: []byte("op")}}}}
	g.deliver(t, p2a)
	if inSync, s := g.next(t); !inSync {
		t.Fatalf("acceptor sent %s before the fsync covering its vote started", s.m)
	}
	// The fsync is held: the same phase 2a again is stepped in a round of
	// its own, which writes nothing but answers for the unsynced vote.
	g.deliver(t, p2a)
	deadline := time.Now().Add(time.Minute)
	for g.r.in.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the acceptor did not step the resent phase 2a within a minute")
		}
		time.Sleep(time.Millisecond)
	}
	g.r.Status() // waits for the loop to finish the round it stepped
	select {
	case s := <-g.out:
		t.Fatalf("acceptor sent %s while the fsync covering its vote was held", s.m)
	default:
	}
	close(g.release)
	for range 2 {
		var s sent
		for inSync := true; inSync; {
			inSync, s = g.next(t)
		}
		if s.m.Kind != paxos.KindPhase2b || s.m.Slot != 3 || s.m.Ballot != b {
			t.Fatalf("acceptor sent %s, want a phase 2b for slot 3 in %s", s.m, b)
		}
		if s.synced < 1 {
			t.Fatalf("acceptor sent %s before the fsync covering its vote returned", s.m)
		}
	}
	if st := g.r.Status(); st.Accepted != 1 {
		t.Fatalf("acceptor holds %d votes, want 1", st.Accepted)
	}
}

// TestLoneWriteIsSynced: each vote an idle acceptor receives alone gets
// an fsync of its own, started by the write itself, before its answer.
func TestLoneWriteIsSynced(t *testing.T) {
	g := newGroupCommitRig(t)
	close(g.release)
	b := paxos.Ballot{Round: 1, ID: 7}
	for slot := range uint64(3) {
		g.deliver(t, paxos.Message{Kind: paxos.KindPhase2a, From: "127.0.0.1:2", Ballot: b, Slot: slot,
			Value: paxos.Value{Commands: []paxos.Command{{Client: 1, Seq: slot + 1, Op: []byte("op")}}}})
		var s sent
		for inSync := true; inSync; {
			inSync, s = g.next(t)
		}
		if s.m.Kind != paxos.KindPhase2b || s.m.Slot != slot || s.synced < int32(slot+1) {
			t.Fatalf("vote %d: sent %s after %d fsyncs", slot, s.m, s.synced)
		}
	}
}

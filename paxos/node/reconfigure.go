package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"tide/paxos"
	"tide/tlsconf"
)

// Reconfigure proposes next as the log's next configuration through its
// active leader and waits until it is chosen. next must be built on the
// current configuration (next.Epoch = current + 1, see paxos.Config.Next);
// if another change won the race, the error wraps paxos.ErrStaleConfig and
// the caller should rebuild on the newer one. host is the interface the
// answer comes back on; certs, the TLS material of a log that speaks
// mutual TLS (nil: plain TCP).
func Reconfigure(ctx context.Context, cur paxos.Config, next paxos.Config, host string, certs *tlsconf.Config) (paxos.Config, error) {
	if err := cur.ValidateChange(next); err != nil {
		return paxos.Config{}, err
	}
	if host == "" {
		host = ReplyHost(cur.All()[0])
	}
	tr := newTransport(certs)
	defer tr.Close()
	type answer struct {
		m paxos.Message
	}
	answers := make(chan answer, 64)
	self, err := tr.Listen(net.JoinHostPort(host, "0"), func(frame []byte) {
		m, err := paxos.Decode(frame)
		if err != nil {
			return
		}
		select {
		case answers <- answer{m}:
		default:
		}
	})
	if err != nil {
		return paxos.Config{}, err
	}
	leaders := slices.Clone(cur.Leaders)
	for _, l := range next.Leaders {
		if !slices.Contains(leaders, l) {
			leaders = append(leaders, l)
		}
	}
	leader := leaders[0]
	var mu sync.Mutex
	send := func() {
		mu.Lock()
		defer mu.Unlock()
		c := next.Clone()
		m := paxos.Message{Kind: paxos.KindReconfigure, From: self, To: leader, Config: &c, Epoch: cur.Epoch}
		b, err := paxos.Encode(&m)
		if err == nil {
			tr.Send(leader, b)
		}
	}
	send()
	retry := time.NewTicker(300 * time.Millisecond)
	defer retry.Stop()
	var lastNote string
	for {
		select {
		case <-ctx.Done():
			if lastNote != "" {
				return paxos.Config{}, fmt.Errorf("reconfigure to epoch %d: %w (last answer: %s)", next.Epoch, ctx.Err(), lastNote)
			}
			return paxos.Config{}, fmt.Errorf("reconfigure to epoch %d: no leader answered: %w", next.Epoch, ctx.Err())
		case a := <-answers:
			m := a.m
			switch m.Kind {
			case paxos.KindNotLeader:
				mu.Lock()
				moved := m.From == leader
				if moved && m.Leader != "" {
					leader = m.Leader // a member's hint, perhaps newer than cur
				} else if moved {
					leader = leaders[(slices.Index(leaders, leader)+1)%len(leaders)]
				}
				mu.Unlock()
				if moved {
					send()
				}
			case paxos.KindReconfigured:
				if m.Note == "" && m.Config != nil && m.Config.Epoch == next.Epoch {
					return *m.Config, nil
				}
				if m.Config != nil && m.Config.Epoch == next.Epoch && slices.Equal(m.Config.All(), next.All()) {
					// Ours was chosen; its answer was lost and a retry
					// found it current.
					return *m.Config, nil
				}
				lastNote = m.Note
				if strings.Contains(m.Note, paxos.ErrStaleConfig.Error()) {
					return paxos.Config{}, fmt.Errorf("reconfigure to epoch %d: %w: %s", next.Epoch, paxos.ErrStaleConfig, m.Note)
				}
				if !strings.Contains(m.Note, "retry") {
					return paxos.Config{}, fmt.Errorf("reconfigure to epoch %d: refused: %s", next.Epoch, m.Note)
				}
			case paxos.KindConfigQuery:
				// A role behind our epoch stamp asks; it learns from peers.
			}
		case <-retry.C:
			send()
		}
	}
}

// ErrNoMember is returned when no process of a deployment answers.
var ErrNoMember = errors.New("no role of the deployment answered")

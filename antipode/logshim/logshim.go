// Package logshim is antipode's shim for the tide log used as a
// notification channel. A topic is a sequence of slots in the log's
// key-value store, "<topic>/<n>" for n = 1, 2, ...; publishing takes the
// next free slot with a compare-and-swap, so slots fill in order with no
// gap, and a message keeps its sender's lineage beside its data (and a
// nonce, so a retried publish is never stored twice). The log
// is linearizable: a message is visible to every reader once Publish
// returns, so a Waiter's first check succeeds for any published message.
//
// The log has no watch, so a Subscription polls its next slot with
// bounded backoff (1ms, doubling to 5ms by default) while the topic is
// idle, and reads on at once while messages are waiting. Messages are
// kept in the log; topics are not trimmed.
package logshim

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"tide/antipode"
	"tide/paxos"
	"tide/paxos/node"
)

// Topic publishes to and reads from one topic.
type Topic struct {
	Client *node.Client
	// Name is the topic; its slots are the keys Name/1, Name/2, ...
	Name string
	// Store is the name lineages use for this topic's writes.
	Store string

	mu   sync.Mutex
	next uint64 // the first slot this Topic has not seen taken
}

func (t *Topic) key(slot uint64) string { return t.Name + "/" + strconv.FormatUint(slot, 10) }

// AttemptTimeout bounds one request to the log (a compare-and-swap of
// Publish, a read of a Subscription or Waiter); one that times out is
// retried on a fresh session.
var AttemptTimeout = 5 * time.Second

// Publish appends data, with ctx's lineage, to the topic and returns the
// write's identifier (the topic as key, its slot as version).
//
// Each message carries a random nonce, so an attempt whose outcome was
// lost (it timed out, yet the log applied it) is recognized when the retry
// finds the slot taken by the very same message: nothing is published
// twice.
func (t *Topic) Publish(ctx context.Context, data []byte) (antipode.WriteID, error) {
	msg, err := encodeMessage(ctx, data)
	if err != nil {
		return antipode.WriteID{}, err
	}
	t.mu.Lock()
	slot := max(t.next, 1)
	t.mu.Unlock()
	for {
		actx, cancel := context.WithTimeout(ctx, AttemptTimeout)
		ok, old, err := t.Client.CAS(actx, t.key(slot), nil, msg)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				continue // outcome unknown: ask again
			}
			return antipode.WriteID{}, fmt.Errorf("tide log publish to %s: %w", t.Name, err)
		}
		t.mu.Lock()
		t.next = max(t.next, slot+1)
		t.mu.Unlock()
		if ok || bytes.Equal(old, msg) {
			return antipode.WriteID{Store: t.Store, Key: t.Name, Version: slot}, nil
		}
		slot++ // taken by another message
	}
}

// encodeMessage lays out a stored message: a format byte (1), the length
// of the lineage's text form as a varint, the lineage, then the data,
// then an 8-byte random nonce.
func encodeMessage(ctx context.Context, data []byte) ([]byte, error) {
	lin, err := antipode.Encode(ctx)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(lin)+len(data)+nonceLen)
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(lin)))
	b = append(b, lin...)
	b = append(b, data...)
	return binary.LittleEndian.AppendUint64(b, rand.Uint64()), nil
}

const nonceLen = 8

// MessageSize is the bytes a message takes in the log: the format byte,
// the lineage's length, the lineage's text form, and the data.
func MessageSize(lineageLen, dataLen int) int {
	var b [binary.MaxVarintLen64]byte
	return 1 + binary.PutUvarint(b[:], uint64(lineageLen)) + lineageLen + dataLen + nonceLen
}

// ErrMessage is returned (wrapped) for a slot that does not hold a
// message of a format this build reads.
var ErrMessage = errors.New("bad tide log message")

func decodeMessage(ctx context.Context, b []byte) (context.Context, []byte, error) {
	if len(b) < 1+nonceLen || b[0] != 1 {
		return ctx, nil, fmt.Errorf("%w: format byte %v", ErrMessage, b[:min(1, len(b))])
	}
	b = b[:len(b)-nonceLen]
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || n > uint64(len(b)-1-k) {
		return ctx, nil, fmt.Errorf("%w: lineage length", ErrMessage)
	}
	lin := string(b[1+k : 1+k+int(n)])
	data := b[1+k+int(n):]
	if lin == "" {
		return ctx, data, nil
	}
	l, err := antipode.Decode(lin)
	if err != nil {
		return ctx, nil, err
	}
	return antipode.Transfer(ctx, antipode.NewContext(context.Background(), l)), data, nil
}

// Subscription reads a topic's messages in order.
type Subscription struct {
	t       *Topic
	next    uint64
	backoff antipode.Backoff
}

// Subscribe returns a subscription that reads from slot from (1 is the
// topic's first message); b paces polling while the topic is idle.
func (t *Topic) Subscribe(from uint64, b antipode.Backoff) *Subscription {
	return &Subscription{t: t, next: max(from, 1), backoff: b}
}

// Next waits for the next message and returns its slot, its data, and a
// context carrying its lineage.
func (s *Subscription) Next(ctx context.Context) (context.Context, uint64, []byte, error) {
	var raw []byte
	err := antipode.Poll(ctx, s.backoff, nil, func(ctx context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, AttemptTimeout)
		defer cancel()
		v, found, err := s.t.Client.Get(ctx, s.t.key(s.next), paxos.ReadQuorum)
		raw = v
		return found, err
	})
	if err != nil {
		return ctx, 0, nil, fmt.Errorf("tide log topic %s slot %d: %w", s.t.Name, s.next, err)
	}
	slot := s.next
	s.next++
	mctx, data, err := decodeMessage(ctx, raw)
	if err != nil {
		return ctx, slot, nil, fmt.Errorf("tide log topic %s slot %d: %w", s.t.Name, slot, err)
	}
	return mctx, slot, data, nil
}

// Waiter tells when a topic's slot holds a message.
type Waiter struct {
	Client  *node.Client
	Backoff antipode.Backoff
}

// Wait implements antipode.Waiter for WriteIDs from Publish.
func (w *Waiter) Wait(ctx context.Context, id antipode.WriteID) error {
	t := Topic{Name: id.Key}
	return antipode.Poll(ctx, w.Backoff, nil, func(ctx context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, AttemptTimeout)
		defer cancel()
		_, found, err := w.Client.Get(ctx, t.key(id.Version), paxos.ReadQuorum)
		return found, err
	})
}

// Package logshim is antipode's shim for the tide log used as a
// notification channel. A topic is a sequence of slots in the log's
// key-value store, "<topic>/<n>" for n = 1, 2, ...; a message keeps its
// sender's lineage beside its data, and a nonce, so a retried publish is
// never stored twice. The log is linearizable: a message is visible to
// every reader once Publish returns, so a Waiter's first check succeeds
// for any published message.
//
// Publishing claims a slot with a compare-and-swap. Concurrent publishers
// of one Topic claim distinct slots (no contention among them); one that
// loses a slot to another process moves on to the next. A slot claimed by
// a publisher that then gave up would leave a gap: a subscriber that finds
// its next slot empty while a later one is full, for GapTimeout, fences it
// with a tombstone (a compare-and-swap too, so a late publisher loses the
// slot and moves on) and skips it. No message is lost or reordered for a
// subscriber: every message is in exactly one slot.
//
// The log has no watch, so a Subscription polls with bounded backoff (1ms,
// doubling to 5ms by default) while the topic is idle, and reads ahead
// ReadAhead slots at once while messages are waiting. Messages are kept in
// the log; topics are not trimmed.
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
// An attempt whose outcome was lost (it timed out, yet the log applied
// it) is recognized when the retry finds the slot holding the very same
// message, nonce included.
func (t *Topic) Publish(ctx context.Context, data []byte) (antipode.WriteID, error) {
	msg, err := encodeMessage(ctx, data)
	if err != nil {
		return antipode.WriteID{}, err
	}
	slot := t.reserve(0)
	for {
		actx, cancel := context.WithTimeout(ctx, AttemptTimeout)
		ok, old, err := t.Client.CAS(actx, t.key(slot), nil, msg)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				continue // outcome unknown: ask again
			}
			return antipode.WriteID{}, fmt.Errorf("tide log publish to %s slot %d: %w", t.Name, slot, err)
		}
		if ok || bytes.Equal(old, msg) {
			return antipode.WriteID{Store: t.Store, Key: t.Name, Version: slot}, nil
		}
		slot = t.reserve(slot) // taken by another process, or fenced
	}
}

// reserve returns a slot no publish of this Topic has claimed, after
// taken (a slot found taken, or 0).
func (t *Topic) reserve(taken uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next = max(t.next, taken+1, 1)
	s := t.next
	t.next++
	return s
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

// tombstone fills a slot a subscriber fenced: no message is there.
var tombstone = []byte{0}

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

// GapTimeout is how long a subscriber waits on an empty slot, while a
// later one holds a message, before it fences the empty one.
var GapTimeout = 5 * time.Second

// ReadAhead is how many slots a subscription reads at once.
var ReadAhead = 16

// Subscription reads a topic's messages in order.
type Subscription struct {
	t        *Topic
	next     uint64
	backoff  antipode.Backoff
	buf      [][]byte // messages read ahead, for slots next, next+1, ...
	gapSince time.Time
}

// Subscribe returns a subscription that reads from slot from (1 is the
// topic's first message); b paces polling while the topic is idle.
func (t *Topic) Subscribe(from uint64, b antipode.Backoff) *Subscription {
	return &Subscription{t: t, next: max(from, 1), backoff: b}
}

// Next waits for the next message and returns its slot, its data, and a
// context carrying its lineage.
func (s *Subscription) Next(ctx context.Context) (context.Context, uint64, []byte, error) {
	for {
		if len(s.buf) == 0 {
			err := antipode.Poll(ctx, s.backoff, nil, func(ctx context.Context) (bool, error) {
				return s.fill(ctx)
			})
			if err != nil {
				return ctx, 0, nil, fmt.Errorf("tide log topic %s slot %d: %w", s.t.Name, s.next, err)
			}
		}
		raw, slot := s.buf[0], s.next
		s.buf, s.next = s.buf[1:], s.next+1
		if bytes.Equal(raw, tombstone) {
			continue
		}
		mctx, data, err := decodeMessage(ctx, raw)
		if err != nil {
			return ctx, slot, nil, fmt.Errorf("tide log topic %s slot %d: %w", s.t.Name, slot, err)
		}
		return mctx, slot, data, nil
	}
}

// fill reads slots next .. next+ReadAhead-1 at once and keeps the filled
// ones up to the first empty one; it fences next if it has stayed empty
// past GapTimeout while a later slot is full.
func (s *Subscription) fill(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, AttemptTimeout)
	defer cancel()
	n := max(ReadAhead, 1)
	vals := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, found, err := s.t.Client.Get(ctx, s.t.key(s.next+uint64(i)), paxos.ReadQuorum)
			if found {
				vals[i] = v
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if errs[0] != nil {
		return false, errs[0]
	}
	for i := 0; i < n && vals[i] != nil && errs[i] == nil; i++ {
		s.buf = append(s.buf, vals[i])
	}
	if len(s.buf) > 0 {
		s.gapSince = time.Time{}
		return true, nil
	}
	later := false
	for i := 1; i < n; i++ {
		later = later || vals[i] != nil
	}
	if !later {
		s.gapSince = time.Time{}
		return false, nil
	}
	if s.gapSince.IsZero() {
		s.gapSince = time.Now()
	}
	if time.Since(s.gapSince) < GapTimeout {
		return false, nil
	}
	// Fence the gap: either the tombstone lands, or the slot's message
	// did meanwhile. Both are the slot's final content.
	ok, old, err := s.t.Client.CAS(ctx, s.t.key(s.next), nil, tombstone)
	if err != nil {
		return false, err
	}
	if ok {
		old = tombstone
	}
	s.buf = append(s.buf, old)
	s.gapSince = time.Time{}
	return true, nil
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

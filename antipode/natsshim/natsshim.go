// Package natsshim is antipode's shim for NATS. As a notification channel,
// a message carries its sender's lineage in a header (antipode.Header), so
// the receiver can wait for what the notification points to. As a store,
// a JetStream stream's writes are versioned by their stream sequence, and
// a Waiter tells when a stream (the origin, or a mirror in another region,
// which keeps the origin's sequences) holds a sequence.
package natsshim

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tide/antipode"
)

// Msg returns a message for subject carrying data and ctx's lineage.
func Msg(ctx context.Context, subject string, data []byte) (*nats.Msg, error) {
	m := nats.NewMsg(subject)
	m.Data = data
	if err := antipode.Inject(ctx, m.Header); err != nil {
		return nil, err
	}
	return m, nil
}

// Publish sends data on subject with ctx's lineage.
func Publish(ctx context.Context, nc *nats.Conn, subject string, data []byte) error {
	m, err := Msg(ctx, subject, data)
	if err != nil {
		return err
	}
	return nc.PublishMsg(m)
}

// Context returns ctx carrying the lineage m carries; a message with a
// malformed or newer-format lineage is an error, never read unprotected.
func Context(ctx context.Context, m *nats.Msg) (context.Context, error) {
	if m.Header == nil {
		return ctx, nil
	}
	return antipode.Extract(ctx, m.Header)
}

// Writer publishes to JetStream and returns the WriteIDs of its messages.
type Writer struct {
	JS jetstream.JetStream
	// Store is the name lineages use for this stream.
	Store string
}

// Publish stores data on subject, with ctx's lineage in its headers, and
// returns the write's identifier: the stream as key, its sequence as
// version.
func (w *Writer) Publish(ctx context.Context, subject string, data []byte) (antipode.WriteID, error) {
	m, err := Msg(ctx, subject, data)
	if err != nil {
		return antipode.WriteID{}, err
	}
	ack, err := w.JS.PublishMsg(ctx, m)
	if err != nil {
		return antipode.WriteID{}, fmt.Errorf("jetstream publish %s: %w", subject, err)
	}
	return antipode.WriteID{Store: w.Store, Key: ack.Stream, Version: ack.Sequence}, nil
}

// Waiter tells when a stream holds a sequence. It polls the stream's last
// sequence with one loop shared by every barrier; WakeOn makes it event
// driven.
type Waiter struct {
	t antipode.Tracker
}

// NewWaiter watches stream (the local one: the origin or a mirror); b
// paces its polls (zero: antipode.DefaultBackoff).
func NewWaiter(js jetstream.JetStream, stream string, b antipode.Backoff) *Waiter {
	w := &Waiter{}
	w.t = antipode.Tracker{Backoff: b, Position: func(ctx context.Context) (uint64, error) {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return 0, fmt.Errorf("stream %s: %w", stream, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("stream %s info: %w", stream, err)
		}
		return info.State.LastSeq, nil
	}}
	return w
}

// WakeOn re-reads the stream's position whenever a message arrives on
// subject (the stream's subjects, for a local stream): waits then end as
// soon as the message is stored rather than at the next poll.
func (w *Waiter) WakeOn(nc *nats.Conn, subject string) (*nats.Subscription, error) {
	return nc.Subscribe(subject, func(*nats.Msg) { w.t.Wake() })
}

// Wait implements antipode.Waiter.
func (w *Waiter) Wait(ctx context.Context, id antipode.WriteID) error {
	return w.t.Wait(ctx, id.Version)
}

// WaitFunc implements antipode.AsyncWaiter.
func (w *Waiter) WaitFunc(ctx context.Context, id antipode.WriteID, done func(error)) {
	w.t.WaitFunc(ctx, id.Version, done)
}

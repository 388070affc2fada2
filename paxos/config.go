package paxos

import (
	"errors"
	"fmt"
)

// Config describes a deployment: the address of every role instance and the
// protocol's knobs. Every process of a deployment uses the same Config.
type Config struct {
	// Batchers group client commands. May be empty: clients then send to
	// the leader directly, one command per slot.
	Batchers []string
	// Leaders are the proposers; one is active at a time.
	Leaders []string
	// ProxyLeaders relay phase 2 for the leader. At least one.
	ProxyLeaders []string
	// Groups are the acceptor groups; slot s belongs to group s mod len.
	Groups []Group
	// Replicas execute chosen commands in slot order.
	Replicas []string
	// Unbatchers return replies to clients. May be empty: replicas then
	// reply to clients directly.
	Unbatchers []string

	// BatchSize flushes a batch once it holds this many commands. Default 40,
	// the best value in the original evaluation.
	BatchSize int
	// BatchTicks flushes a non-empty batch after this many ticks. Default 1.
	BatchTicks int
	// HeartbeatTicks is the active leader's heartbeat period. Default 5.
	HeartbeatTicks int
	// ElectionTicks is the minimum silence after which a standby leader
	// campaigns; the actual timeout is random in [E, 2E). Default 30.
	ElectionTicks int
	// ResendTicks is how long a role waits for a reply before sending again.
	// Default 10.
	ResendTicks int
	// SnapshotEvery makes replicas snapshot and truncate their log every
	// this many executed slots. Default 1000.
	SnapshotEvery uint64
}

// withDefaults returns c with zero knobs set to their defaults.
func (c Config) withDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = 40
	}
	if c.BatchTicks == 0 {
		c.BatchTicks = 1
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 5
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 30
	}
	if c.ResendTicks == 0 {
		c.ResendTicks = 10
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = 1000
	}
	return c
}

// Validate checks that the deployment can run.
func (c Config) Validate() error {
	var errs []error
	if len(c.Leaders) == 0 {
		errs = append(errs, errors.New("no leaders"))
	}
	if len(c.ProxyLeaders) == 0 {
		errs = append(errs, errors.New("no proxy leaders"))
	}
	if len(c.Groups) == 0 {
		errs = append(errs, errors.New("no acceptor groups"))
	}
	for i, g := range c.Groups {
		if err := g.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("group %d: %w", i, err))
		}
	}
	if len(c.Replicas) == 0 {
		errs = append(errs, errors.New("no replicas"))
	}
	if c.BatchSize < 0 || c.BatchTicks < 0 || c.HeartbeatTicks < 0 || c.ElectionTicks < 0 || c.ResendTicks < 0 {
		errs = append(errs, errors.New("negative knob"))
	}
	seen := map[string]bool{}
	for _, a := range c.All() {
		if seen[a] {
			errs = append(errs, fmt.Errorf("address %q used by two roles", a))
		}
		seen[a] = true
	}
	return errors.Join(errs...)
}

// All lists every role address.
func (c Config) All() []string {
	var out []string
	out = append(out, c.Batchers...)
	out = append(out, c.Leaders...)
	out = append(out, c.ProxyLeaders...)
	for _, g := range c.Groups {
		out = append(out, g.Acceptors...)
	}
	out = append(out, c.Replicas...)
	out = append(out, c.Unbatchers...)
	return out
}

// GroupOf returns the acceptor group of slot s.
func (c Config) GroupOf(s uint64) int { return int(s % uint64(len(c.Groups))) }

// Majority is f+1 for 2f+1 replicas: how many replicas must have executed a
// slot before acceptors may forget it.
func (c Config) replicaQuorum() int { return len(c.Replicas)/2 + 1 }

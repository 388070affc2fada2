package paxos

import (
	"fmt"
	"slices"
)

// The leader's configuration changes: adopting a chosen configuration,
// moving to new acceptor groups, proposing the next configuration, and
// helping replicas the change leaves behind.

// configChosen adopts a configuration chosen in slot s.
func (l *Leader) configChosen(s uint64, c Config) {
	if l.cfgPending && s == l.cfgSlot {
		l.cfgPending = false
		if l.cfgFrom != "" {
			cc := c.Clone()
			l.send(Message{Kind: KindReconfigured, To: l.cfgFrom, Config: &cc, Slot: s})
			l.cfgFrom = ""
		}
	}
	l.applyConfig(c)
}

// applyConfig adopts a newer configuration. A leader the configuration
// leaves out hands leadership to one that stays; an active leader whose
// acceptor groups changed starts a round with the new ones.
func (l *Leader) applyConfig(c Config) {
	if c.Epoch <= l.cfg.Epoch {
		return
	}
	// Roles the new configuration leaves out hear of it from no one else:
	// tell them for a while, so that they drain and stop.
	for _, a := range l.cfg.All() {
		if !c.Has(a) {
			l.leaving[a] = leavingBeats
		}
	}
	l.adoptConfig(c)
	if l.removed {
		if l.lead != follower {
			l.stepDown()
			if len(l.cfg.Leaders) > 0 {
				l.send(Message{Kind: KindTakeover, To: l.cfg.Leaders[0]})
			}
		}
		return
	}
	if l.lead == active && !groupsEqual(l.round.Groups, l.cfg.Groups) {
		// Replicas snapshot at a configuration slot and report it at once:
		// once a quorum holds the log through it, the new round has only
		// the slots after it to propose again. Wait for that, briefly.
		l.moveAt, l.moveSince, l.moving = l.watermark, l.now, true
		l.maybeMove()
	}
}

// maybeMove starts the round with the configuration's acceptor groups
// once the replicas hold the log through the change durably, or after a
// few resend periods whatever they hold.
func (l *Leader) maybeMove() {
	if !l.moving || l.lead != active {
		return
	}
	if l.gcSent >= l.moveAt || l.now-l.moveSince >= 3*l.cfg.ResendTicks {
		l.moving = false
		l.campaign()
	}
}

// onReconfigure proposes the next configuration, one at a time.
func (l *Leader) onReconfigure(m Message) {
	reply := func(note string) {
		cur := l.cfg.Clone()
		l.send(Message{Kind: KindReconfigured, To: m.From, Note: note, Config: &cur})
	}
	if l.lead != active {
		hint := l.hint
		if hint == l.self {
			hint = ""
		}
		l.send(Message{Kind: KindNotLeader, To: m.From, Leader: hint})
		return
	}
	if m.Config == nil {
		reply("no configuration")
		return
	}
	if l.cfgPending || l.lead != active || !groupsEqual(l.round.Groups, l.cfg.Groups) {
		reply("a reconfiguration is in progress; retry")
		return
	}
	if err := l.cfg.ValidateChange(*m.Config); err != nil {
		reply(err.Error())
		return
	}
	if !slices.Equal(l.cfg.Replicas, m.Config.Replicas) && !l.replicasCover(m.Config.Replicas) {
		// Acceptors have forgotten the slots below the GC point: a quorum
		// of the replicas that stay must hold them, or a replica that
		// falls behind could never catch up.
		reply(fmt.Sprintf("the replicas that stay do not hold slots below %d durably yet; retry", l.gcSent))
		return
	}
	c := m.Config.Clone()
	l.cfgSlot, l.cfgPending, l.cfgFrom = l.assign(Value{Config: &c}), true, m.From
}

// pointToHolder helps a replica that needs slots below the GC point, which
// neither acceptors nor this leader hold any longer: it asks a replica
// whose durable snapshot covers them, in the configuration or one that
// left and still runs, to serve the one that needs them.
func (l *Leader) pointToHolder(to string, from uint64) {
	if l.lead != active || from >= l.gcSent {
		return
	}
	if _, ok := l.chosen[from]; ok {
		return // sendChosen has it
	}
	for _, h := range sortedKeys(l.heldBy) {
		if h != to && l.heldBy[h] > from {
			l.send(Message{Kind: KindRecover, To: h, Slot: from, Leader: to})
			return
		}
	}
}

// replicasCover reports whether enough of replicas hold every slot below
// the GC point in durable snapshots for them to replace the current
// replicas: a quorum of them, or of the current ones if that is fewer (a
// replica added holds nothing yet, and learns from those that do).
func (l *Leader) replicasCover(replicas []string) bool {
	n := 0
	for _, r := range replicas {
		if wm, ok := l.replicaWM[r]; ok && wm >= l.gcSent {
			n++
		}
	}
	return n >= min(len(replicas), len(l.cfg.Replicas))/2+1
}

package sim

import "tide/paxos"

// ClientHost is one client address holding several sessions, as
// paxos/node.Client does: each session is a paxos.Client with its own id
// and at most one command in flight (a replica remembers one sequence
// number and result per client id), and every session's replies come to
// the host's one address. A reply goes to the session it names; a
// NotLeader hint or a configuration, which name none, go to every session.
type ClientHost struct {
	Sessions []*paxos.Client
	byID     map[uint64]*paxos.Client
}

// NewClientHost returns a host at addr with n sessions, numbered from
// firstID.
func NewClientHost(cfg paxos.Config, addr string, firstID uint64, n int) *ClientHost {
	h := &ClientHost{byID: map[uint64]*paxos.Client{}}
	for i := range n {
		c := paxos.NewClient(cfg, addr, firstID+uint64(i))
		h.Sessions = append(h.Sessions, c)
		h.byID[c.ID()] = c
	}
	return h
}

// Step routes a message to the session it is for.
func (h *ClientHost) Step(m paxos.Message) {
	id := m.Reply.Client
	if m.Kind == paxos.KindMaxSlotReply || m.Kind == paxos.KindMatchReply {
		id = m.Command.Client
	}
	if s := h.byID[id]; s != nil {
		s.Step(m)
		return
	}
	if m.Kind == paxos.KindNotLeader || m.Kind == paxos.KindConfigReply {
		for _, s := range h.Sessions {
			s.Step(m)
		}
	}
}

// Tick ticks the sessions with a command in flight (an idle session has
// nothing to retry).
func (h *ClientHost) Tick() {
	for _, s := range h.Sessions {
		if s.Pending() > 0 {
			s.Tick()
		}
	}
}

// Ready gathers every session's output.
func (h *ClientHost) Ready() paxos.Ready {
	var rd paxos.Ready
	for _, s := range h.Sessions {
		rd.Messages = append(rd.Messages, s.Ready().Messages...)
	}
	return rd
}

package node

import "tide/paxos"

// Unreplicated is the baseline the log is measured against: the same KV
// state machine behind the same transport and client, with no consensus.
// It applies each request as it arrives and replies at once.
type Unreplicated struct {
	self string
	kv   *paxos.KV
	out  []paxos.Message
}

// NewUnreplicated returns the baseline server at addr.
func NewUnreplicated(addr string) *Unreplicated {
	return &Unreplicated{self: addr, kv: paxos.NewKV()}
}

// Step applies a request and answers it.
func (u *Unreplicated) Step(m paxos.Message) {
	if m.Kind != paxos.KindRequest {
		return
	}
	c := m.Command
	res := u.kv.Apply(c.Op)
	u.out = append(u.out, paxos.Message{Kind: paxos.KindReply, From: u.self, To: c.ReplyTo,
		Reply: paxos.Reply{Client: c.Client, Seq: c.Seq, Result: res, ReplyTo: c.ReplyTo}})
}

// Tick does nothing.
func (u *Unreplicated) Tick() {}

// Ready returns the replies.
func (u *Unreplicated) Ready() paxos.Ready {
	rd := paxos.Ready{Messages: u.out}
	u.out = nil
	return rd
}

package paxos

// membership is what a role knows of the configuration, and how it
// catches up: every message carries its sender's epoch, and a role that
// sees a newer epoch asks the sender for its configuration.
type membership struct {
	cfg     Config
	lastAsk int
	asked   bool
	// lastTold is when this role last sent its configuration to a leader
	// whose heartbeat carried an older epoch.
	lastTold int
	told     bool
}

// gossip handles the configuration traffic every role shares. It reports
// whether m was configuration traffic, and returns a newer configuration
// when m brings one; the role decides whether to adopt it.
func (ms *membership) gossip(o *outbox, now int, m Message) (next *Config, handled bool) {
	switch m.Kind {
	case KindConfigQuery:
		c := ms.cfg.Clone()
		o.send(Message{Kind: KindConfigReply, To: m.From, Config: &c})
		return nil, true
	case KindConfigReply:
		if m.Config != nil && m.Config.Epoch > ms.cfg.Epoch && m.Config.Validate() == nil {
			c := m.Config.Clone().withDefaults()
			return &c, true
		}
		return nil, true
	}
	if m.Kind == KindHeartbeat && m.Epoch < ms.cfg.Epoch && ms.cfg.Leaders != nil && (!ms.told || now-ms.lastTold >= ms.cfg.ResendTicks) {
		// A leader that missed a newer configuration (it may even have been
		// removed by it, with whoever told it so gone) still leads under
		// its own: tell it, as no member of the newer one may ever ask.
		ms.told, ms.lastTold = true, now
		c := ms.cfg.Clone()
		o.send(Message{Kind: KindConfigReply, To: m.From, Config: &c})
	}
	if m.Epoch > ms.cfg.Epoch && (!ms.asked || now-ms.lastAsk >= ms.cfg.ResendTicks) {
		ms.asked, ms.lastAsk = true, now
		o.send(Message{Kind: KindConfigQuery, To: m.From})
	}
	return nil, false
}

// adopt makes c the role's configuration if it is newer.
func (ms *membership) adopt(o *outbox, c Config) bool {
	if c.Epoch <= ms.cfg.Epoch && ms.cfg.Leaders != nil {
		return false
	}
	ms.cfg = c.withDefaults()
	o.epoch = ms.cfg.Epoch
	return true
}

// Config returns the role's configuration.
func (ms *membership) Config() Config { return ms.cfg }

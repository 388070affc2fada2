package paxos

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
)

// interaction drives pure roles by hand for transcript tests: messages sit
// in a queue until a `deliver` command hands them over, so a test controls
// exactly what arrives, what is lost and in which order.
type interaction struct {
	cfg     Config
	roles   map[string]Role
	durable map[string]*AcceptorState
	queue   []Message
	clients map[string]*Client
}

// newInteraction builds a deployment of leaders l0.., one proxy leader p0,
// one majority group of acceptors a0.. and one replica r0.
func newInteraction(leaders, acceptors int) *interaction {
	cfg := Config{
		ProxyLeaders:   []string{"p0"},
		Groups:         []Group{{}},
		Replicas:       []string{"r0"},
		HeartbeatTicks: 2, ElectionTicks: 5, ResendTicks: 3, SnapshotEvery: 1000,
		// The scripts follow every acceptor's vote.
		FullFanout: true,
	}
	for i := range leaders {
		cfg.Leaders = append(cfg.Leaders, fmt.Sprintf("l%d", i))
	}
	for i := range acceptors {
		cfg.Groups[0].Acceptors = append(cfg.Groups[0].Acceptors, fmt.Sprintf("a%d", i))
	}
	in := &interaction{cfg: cfg, roles: map[string]Role{}, durable: map[string]*AcceptorState{}, clients: map[string]*Client{}}
	for _, a := range cfg.All() {
		in.start(a)
	}
	return in
}

func (in *interaction) start(a string) {
	c := in.cfg
	for i, x := range c.Leaders {
		if x == a {
			var last Ballot
			if st := in.durable[a]; st != nil {
				last = st.Promised
			}
			in.roles[a] = NewLeader(c, i, 1, last)
		}
	}
	for i, x := range c.ProxyLeaders {
		if x == a {
			in.roles[a] = NewProxyLeader(c, i)
		}
	}
	for _, x := range c.Groups[0].Acceptors {
		if x == a {
			st := in.durable[a]
			if st == nil {
				st = &AcceptorState{}
				in.durable[a] = st
			}
			cp := AcceptorState{Promised: st.Promised, GCBelow: st.GCBelow, Accepted: map[uint64]Entry{}}
			for k, v := range st.Accepted {
				cp.Accepted[k] = v
			}
			in.roles[a] = NewAcceptor(a, cp)
		}
	}
	for i, x := range c.Replicas {
		if x == a {
			r, _ := NewReplica(c, i, NewKV(), nil)
			in.roles[a] = r
		}
	}
}

func fmtValue(v Value) string {
	if v.Noop {
		return "noop"
	}
	var parts []string
	for _, c := range v.Commands {
		parts = append(parts, fmt.Sprintf("%d.%d", c.Client, c.Seq))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func fmtMsg(m Message) string {
	s := fmt.Sprintf("%s->%s %s", m.From, m.To, m.Kind)
	switch m.Kind {
	case KindPhase1a:
		s += fmt.Sprintf(" b=%s from=%d", m.Ballot, m.Slot)
	case KindPhase1b:
		s += fmt.Sprintf(" b=%s gc=%d", m.Ballot, m.Slot)
		for _, e := range m.Entries {
			s += fmt.Sprintf(" (%d b=%s %s)", e.Slot, e.Ballot, fmtValue(e.Value))
		}
	case KindPhase2a:
		s += fmt.Sprintf(" b=%s s=%d %s", m.Ballot, m.Slot, fmtValue(m.Value))
	case KindPhase2b, KindNack:
		s += fmt.Sprintf(" b=%s s=%d", m.Ballot, m.Slot)
	case KindChosen:
		if len(m.Entries) > 0 {
			for _, e := range m.Entries {
				s += fmt.Sprintf(" (%d %s)", e.Slot, fmtValue(e.Value))
			}
		} else {
			s += fmt.Sprintf(" s=%d %s", m.Slot, fmtValue(m.Value))
		}
	case KindHeartbeat:
		s += fmt.Sprintf(" b=%s", m.Ballot)
	case KindRequest:
		s += fmt.Sprintf(" %d.%d", m.Command.Client, m.Command.Seq)
	case KindReply:
		s += fmt.Sprintf(" %d.%d", m.Reply.Client, m.Reply.Seq)
	case KindNotLeader:
		s += fmt.Sprintf(" leader=%q", m.Leader)
	case KindRecover, KindWatermark, KindGC:
		s += fmt.Sprintf(" s=%d", m.Slot)
	}
	return s
}

// collect moves a role's output into the queue and prints it.
func (in *interaction) collect(a string, out *strings.Builder) {
	rd := in.roles[a].Ready()
	if st := in.durable[a]; st != nil || len(rd.Persist) > 0 {
		if st == nil {
			st = &AcceptorState{}
			in.durable[a] = st
		}
		for _, op := range rd.Persist {
			st.Apply(op)
		}
	}
	for _, m := range rd.Messages {
		in.queue = append(in.queue, m)
		fmt.Fprintf(out, "  + %s\n", fmtMsg(m))
	}
}

func (in *interaction) handle(t *testing.T, d *datadriven.TestData) string {
	var out strings.Builder
	arg := func(key string) string {
		for _, a := range d.CmdArgs {
			if a.Key == key && len(a.Vals) > 0 {
				return a.Vals[0]
			}
		}
		return ""
	}
	has := func(key string) bool { return d.HasArg(key) }
	switch d.Cmd {
	case "config":
		// config [leaders=N] [acceptors=N]: start over with N leaders and N
		// acceptors (2 and 3 unless told).
		leaders, acceptors := 2, 3
		if v := arg("leaders"); v != "" {
			fmt.Sscan(v, &leaders)
		}
		if v := arg("acceptors"); v != "" {
			fmt.Sscan(v, &acceptors)
		}
		*in = *newInteraction(leaders, acceptors)
		fmt.Fprintf(&out, "leaders=%v acceptors=%v\n", in.cfg.Leaders, in.cfg.Groups[0].Acceptors)
	case "tick":
		n := 1
		if v := arg("n"); v != "" {
			fmt.Sscan(v, &n)
		}
		for _, a := range d.CmdArgs {
			if a.Key == "n" {
				continue
			}
			for range n {
				in.roles[a.Key].Tick()
				in.collect(a.Key, &out)
			}
		}
	case "propose":
		// propose client=c1 to=l0: a client command straight to a leader.
		c := in.clients[arg("client")]
		if c == nil {
			c = NewClient(in.cfg, arg("client"), uint64(len(in.clients)+1))
			in.clients[arg("client")] = c
			in.roles[arg("client")] = c
		}
		c.Propose(EncodeKV(KVOp{Op: "put", Key: "k", Value: []byte(arg("client"))}))
		rd := c.Ready()
		for _, m := range rd.Messages {
			if to := arg("to"); to != "" {
				m.To = to
			}
			in.queue = append(in.queue, m)
			fmt.Fprintf(&out, "  + %s\n", fmtMsg(m))
		}
	case "deliver":
		// deliver [to=X] [from=X] [kind=K] [slot=N] [drop]: hand over (or lose) every
		// queued message matching the filters, in queue order.
		var keep, take []Message
		for _, m := range in.queue {
			match := (arg("to") == "" || m.To == arg("to")) && (arg("from") == "" || m.From == arg("from")) &&
				(arg("kind") == "" || m.Kind.String() == arg("kind")) &&
				(arg("slot") == "" || fmt.Sprint(m.Slot) == arg("slot"))
			if match {
				take = append(take, m)
			} else {
				keep = append(keep, m)
			}
		}
		in.queue = keep
		for _, m := range take {
			if has("drop") {
				fmt.Fprintf(&out, "dropped %s\n", fmtMsg(m))
				continue
			}
			r := in.roles[m.To]
			if r == nil {
				fmt.Fprintf(&out, "lost %s (no such role)\n", fmtMsg(m))
				continue
			}
			fmt.Fprintf(&out, "%s\n", fmtMsg(m))
			r.Step(m)
			in.collect(m.To, &out)
		}
	case "crash":
		for _, a := range d.CmdArgs {
			delete(in.roles, a.Key)
			fmt.Fprintf(&out, "%s crashed\n", a.Key)
		}
	case "restart":
		for _, a := range d.CmdArgs {
			in.start(a.Key)
			fmt.Fprintf(&out, "%s restarted\n", a.Key)
		}
	case "state":
		names := make([]string, 0, len(in.roles))
		for a := range in.roles {
			names = append(names, a)
		}
		sort.Strings(names)
		for _, a := range names {
			switch r := in.roles[a].(type) {
			case *Leader:
				st := leaderStateNames[r.lead]
				fmt.Fprintf(&out, "%s: %s ballot=%s watermark=%d next=%d\n", a, st, r.ballot, r.watermark, r.nextSlot)
			case *Acceptor:
				var slots []string
				for _, s := range sortedKeys(r.st.Accepted) {
					e := r.st.Accepted[s]
					slots = append(slots, fmt.Sprintf("%d:%s@%s", s, fmtValue(e.Value), e.Ballot))
				}
				fmt.Fprintf(&out, "%s: promised=%s accepted=[%s]\n", a, r.st.Promised, strings.Join(slots, " "))
			case *Replica:
				fmt.Fprintf(&out, "%s: executed<%d\n", a, r.exec)
			}
		}
	case "queue":
		for _, m := range in.queue {
			fmt.Fprintf(&out, "%s\n", fmtMsg(m))
		}
	default:
		t.Fatalf("unknown command %q", d.Cmd)
	}
	if out.Len() == 0 {
		return "ok\n"
	}
	return out.String()
}

func TestInteractions(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		in := newInteraction(2, 3)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return in.handle(t, d)
		})
	})
}

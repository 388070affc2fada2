package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"tide/paxos"
	"tide/paxos/node"
	"tide/transport"
)

// The workload of every rig: puts of 16-byte values (the paper's), by
// componentClients sessions, to componentKeys keys.
const (
	componentClients = 32
	componentKeys    = 10000
	componentPeers   = 8 // client addresses replies go to
)

var (
	componentValue  = []byte("0123456789abcdef")
	componentBallot = paxos.Ballot{Round: 1, ID: 0}
)

// command returns the g-th command of the workload: session 1+g%clients,
// sequence g+1 (so that every session's sequence numbers rise), a put to
// key g%keys.
func command(g uint64, replyTo string) paxos.Command {
	return paxos.Command{Client: 1 + g%componentClients, Seq: g + 1, ReplyTo: replyTo, First: true,
		Op: paxos.EncodeKV(paxos.KVOp{Op: "put", Key: fmt.Sprintf("%016x", g%componentKeys), Value: componentValue})}
}

// batchValue is a slot's value of b commands.
func batchValue(b int, replyTo string) paxos.Value {
	v := paxos.Value{Commands: make([]paxos.Command, b)}
	for i := range v.Commands {
		v.Commands[i] = command(uint64(i), replyTo)
	}
	return v
}

// rig is the synthetic neighbourhood of one role under test: fake peers on
// real sockets, the configuration that names them, the flood from
// upstream, the count downstream, and the check that the role did the
// work.
type rig struct {
	role, kind string
	addr       string // the role's
	cfg        paxos.Config
	batch      int
	tr         *transport.Transport
	win        *window
	// commands returns the commands the role has handed on so far, as
	// counted downstream.
	commands func() int64
	// flood feeds the role until ctx ends.
	flood func(ctx context.Context) error
	// check says what the role did, or why that is not the work it was
	// given, once the flood has drained and the role has stopped.
	check func(f final) (string, error)

	lns []net.Listener // the peers', closed with the rig

	mu  sync.Mutex
	err error // the first protocol error a peer saw
}

// final is what a rig's check looks at.
type final struct {
	status  node.Status
	metrics map[string]map[string]float64
	// dataDir holds the stopped role's durable state.
	dataDir string
}

func (r *rig) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

func (r *rig) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// peers binds n fake peers' addresses; serve gives each its handler.
func (r *rig) peers(n int) ([]net.Listener, []string, error) {
	var lns []net.Listener
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("bind a synthetic peer: %w", err)
		}
		r.lns = append(r.lns, ln)
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return lns, addrs, nil
}

// serve passes the head of every message peer i receives to h (nil:
// received and ignored).
func (r *rig) serve(lns []net.Listener, h func(i int, hd head)) error {
	for i, ln := range lns {
		err := r.tr.ServeBatch(ln, func(frames [][]byte) {
			for _, f := range frames {
				hd, err := peek(f)
				if err != nil {
					r.fail(fmt.Errorf("synthetic peer %s: %w", ln.Addr(), err))
					continue
				}
				if h != nil {
					h(i, hd)
				}
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// neighbours are the fake addresses of a configuration, each bound by a
// peer of the rig.
type neighbours struct {
	leader, proxy, unbatcher string
	acceptors, replicas      []string
	clients                  []string
}

// newRig builds the rig for role (one of autoscale.LogRoles) around a
// role at addr: b commands per batch, window slots (or batches) in
// flight.
func newRig(role, addr string, b, window int) (*rig, error) {
	kind, ok := componentKinds[role]
	if !ok {
		return nil, fmt.Errorf("unknown role %q: want batchers, proxy-leaders, acceptor-groups, replicas or unbatchers", role)
	}
	if b < 1 || window < 1 {
		return nil, fmt.Errorf("batch size %d, window %d: want both at least 1", b, window)
	}
	r := &rig{role: role, kind: kind, addr: addr, batch: b, tr: transport.New(), win: newWindow(int64(window))}
	var err error
	switch role {
	case "proxy-leaders":
		err = r.proxyLeader()
	case "acceptor-groups":
		err = r.acceptor()
	case "replicas":
		// It answers every other slot: with one slot in flight it would
		// wait, unanswered, for the next.
		r.win = newWindow(int64(max(window, 2)))
		err = r.replica()
	case "batchers":
		r.win = newWindow(int64(window * b)) // requests
		err = r.batcher()
	case "unbatchers":
		r.win = newWindow(int64(window * b)) // replies
		err = r.unbatcher()
	}
	if err == nil {
		err = r.cfg.Validate()
	}
	if err != nil {
		r.close()
		return nil, fmt.Errorf("%s rig: %w", role, err)
	}
	return r, nil
}

// close stops the fake peers.
func (r *rig) close() {
	r.tr.Close()
	for _, ln := range r.lns {
		ln.Close() // those the transport did not serve yet
	}
}

// config is a configuration of one leader, one proxy leader, one group of
// three acceptors (f = 1), two replicas and, if named, one unbatcher:
// `tide log up`'s shape with one instance of each scaled role. The role
// under test holds one of the places.
func (n neighbours) config(b int) paxos.Config {
	c := paxos.Config{Leaders: []string{n.leader}, ProxyLeaders: []string{n.proxy},
		Groups: []paxos.Group{{Acceptors: n.acceptors}}, Replicas: n.replicas, BatchSize: b}
	if n.unbatcher != "" {
		c.Unbatchers = []string{n.unbatcher}
	}
	return c
}

// sendLoop takes up to chunk units of the window at a time and sends what
// frames builds for them, until ctx ends; before each chunk it calls
// every, if set, with the time.
func (r *rig) sendLoop(ctx context.Context, chunk int64, frames func(n int64) [][]byte, every func(time.Time)) error {
	for {
		n, err := r.win.take(ctx, chunk)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if every != nil {
			// Before the frames, so that what it sends is followed by
			// frames whose answers the drain awaits.
			every(time.Now())
		}
		r.tr.SendBatch(r.addr, frames(n))
	}
}

// proxyLeader: a fake leader sends phase 2a; three fake acceptors answer
// each phase 2a with phase 2b at once; the fake leader and two fake
// replicas count the chosen slots.
func (r *rig) proxyLeader() error {
	lns, addrs, err := r.peers(6)
	if err != nil {
		return err
	}
	n := neighbours{leader: addrs[0], acceptors: addrs[1:4], replicas: addrs[4:6], proxy: r.addr}
	r.cfg = n.config(r.batch)
	group := r.cfg.Groups[0]
	p2a, err := newStamp(&paxos.Message{Kind: paxos.KindPhase2a, From: n.leader, To: r.addr, Ballot: componentBallot,
		Slot: marker(0), Value: batchValue(r.batch, n.leader), Group: &group}, 1)
	if err != nil {
		return err
	}
	var p2b []stamp
	for _, a := range n.acceptors {
		s, err := newStamp(&paxos.Message{Kind: paxos.KindPhase2b, From: a, To: r.addr, Ballot: componentBallot, Slot: marker(0)}, 1)
		if err != nil {
			return err
		}
		p2b = append(p2b, s)
	}
	var chosen, phase2a atomic.Int64
	var atReplica [2]atomic.Int64
	err = r.serve(lns, func(i int, h head) {
		switch {
		case i == 0 && h.Kind == paxos.KindChosen:
			chosen.Add(1)
			r.win.release(1)
		case i == 0 && h.Kind == paxos.KindNack:
			r.fail(fmt.Errorf("proxy leader sent a nack for slot %d", h.Slot))
		case i >= 1 && i <= 3 && h.Kind == paxos.KindPhase2a:
			phase2a.Add(1)
			r.tr.Send(r.addr, p2b[i-1].fill(h.Slot))
		case i >= 4 && h.Kind == paxos.KindChosen:
			atReplica[i-4].Add(1)
		}
	})
	if err != nil {
		return err
	}
	r.commands = func() int64 { return chosen.Load() * int64(r.batch) }
	var slot uint64
	r.flood = func(ctx context.Context) error {
		return r.sendLoop(ctx, 64, func(k int64) [][]byte {
			fs := make([][]byte, k)
			for i := range fs {
				fs[i] = p2a.fill(slot)
				slot++
			}
			return fs
		}, nil)
	}
	r.check = func(f final) (string, error) {
		sent := r.win.sent.Load()
		if c := chosen.Load(); c != sent {
			return "", fmt.Errorf("proxy leader announced %d of %d slots to the leader", c, sent)
		}
		// The replicas' connections may trail the leader's.
		err := settle(2*time.Second, func() error {
			for i := range atReplica {
				if c := atReplica[i].Load(); c != sent {
					return fmt.Errorf("proxy leader announced %d of %d slots to replica %d", c, sent, i)
				}
			}
			return nil
		})
		if err != nil {
			return "", err
		}
		// Thrifty: each slot goes to a write quorum (2 of the 3) first,
		// and to the third only if their votes are late.
		if p := phase2a.Load(); p < 2*sent {
			return "", fmt.Errorf("proxy leader sent %d phase 2a for %d slots to 3 acceptors, fewer than a write quorum each", p, sent)
		}
		return fmt.Sprintf("chose %d slots: %d phase 2a to the 3 acceptors (a write quorum each first), each slot announced to the leader and both replicas",
			sent, phase2a.Load()), nil
	}
	return nil
}

// acceptor: a fake proxy leader sends phase 2a and counts phase 2b; a
// fake leader garbage-collects votes every 200 ms below the latest
// multiple of 1000 slots voted, as the real one does once replicas'
// snapshots (every 1000 slots) are durable. The votes must be in pebble,
// synced, when the role stops.
func (r *rig) acceptor() error {
	lns, addrs, err := r.peers(6)
	if err != nil {
		return err
	}
	n := neighbours{leader: addrs[0], proxy: addrs[1], acceptors: []string{r.addr, addrs[2], addrs[3]}, replicas: addrs[4:6]}
	r.cfg = n.config(r.batch)
	p2a, err := newStamp(&paxos.Message{Kind: paxos.KindPhase2a, From: n.proxy, To: r.addr, Ballot: componentBallot,
		Slot: marker(0), Value: batchValue(r.batch, n.leader)}, 1)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var acked []bool
	prefix := 0 // every slot below is acked
	err = r.serve(lns, func(i int, h head) {
		switch {
		case i == 1 && h.Kind == paxos.KindPhase2b:
			if h.Ballot != componentBallot {
				r.fail(fmt.Errorf("acceptor voted in ballot %s, not %s", h.Ballot, componentBallot))
				return
			}
			mu.Lock()
			for int(h.Slot) >= len(acked) {
				acked = append(acked, false)
			}
			dup := acked[h.Slot]
			acked[h.Slot] = true
			for prefix < len(acked) && acked[prefix] {
				prefix++
			}
			mu.Unlock()
			if !dup {
				r.win.release(1)
			}
		case i == 1 && h.Kind == paxos.KindNack:
			r.fail(fmt.Errorf("acceptor refused slot %d: promised %s", h.Slot, h.Ballot))
		}
	})
	if err != nil {
		return err
	}
	r.commands = func() int64 { return r.win.done.Load() * int64(r.batch) }
	var slot, gcSent uint64
	var lastGC time.Time
	gc := func(now time.Time) {
		if now.Sub(lastGC) < 200*time.Millisecond {
			return
		}
		lastGC = now
		mu.Lock()
		below := uint64(prefix) / 1000 * 1000
		mu.Unlock()
		if below > gcSent {
			gcSent = below
			b, err := paxos.Encode(&paxos.Message{Kind: paxos.KindGC, From: n.leader, To: r.addr, Slot: below})
			if err != nil {
				r.fail(err)
				return
			}
			r.tr.Send(r.addr, b)
		}
	}
	r.flood = func(ctx context.Context) error {
		return r.sendLoop(ctx, 64, func(k int64) [][]byte {
			fs := make([][]byte, k)
			for i := range fs {
				fs[i] = p2a.fill(slot)
				slot++
			}
			return fs
		}, gc)
	}
	r.check = func(f final) (string, error) {
		sent := uint64(r.win.sent.Load())
		st, err := storedAcceptor(f.dataDir)
		if err != nil {
			return "", err
		}
		if st.Promised != componentBallot {
			return "", fmt.Errorf("acceptor's stored promise is %s, want %s", st.Promised, componentBallot)
		}
		if st.GCBelow != gcSent {
			return "", fmt.Errorf("acceptor's stored GC point is %d, want %d", st.GCBelow, gcSent)
		}
		for s := gcSent; s < sent; s++ {
			e, ok := st.Accepted[s]
			if !ok || e.Ballot != componentBallot || len(e.Value.Commands) != r.batch {
				return "", fmt.Errorf("acceptor acknowledged slot %d but its store holds %v (ballot %s, %d commands)", s, ok, e.Ballot, len(e.Value.Commands))
			}
		}
		if len(st.Accepted) != int(sent-gcSent) {
			return "", fmt.Errorf("acceptor's store holds %d votes, want %d (slots %d to %d)", len(st.Accepted), sent-gcSent, gcSent, sent)
		}
		votes, syncs := f.metrics["tide_paxos_persisted_ops_total"][""], f.metrics["tide_paxos_syncs_total"][""]
		return fmt.Sprintf("voted for %d slots in %.0f synced writes (%.1f votes per fsync); reopened, its pebble store holds the %d votes above GC point %d",
			sent, syncs, votes/max(syncs, 1), len(st.Accepted), gcSent), nil
	}
	return nil
}

// settle retries cond until it holds or limit passes, and returns its
// last error: counts that arrive over several connections may trail the
// one the window follows.
func settle(limit time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// storeDir finds the one role store under a stopped role's data
// directory.
func storeDir(dataDir string) (string, error) {
	ents, err := os.ReadDir(dataDir)
	if err != nil {
		return "", fmt.Errorf("role state: %w", err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(dataDir, e.Name()))
		}
	}
	if len(dirs) != 1 {
		return "", fmt.Errorf("role state: %d stores under %s, want 1", len(dirs), dataDir)
	}
	return dirs[0], nil
}

func storedAcceptor(dataDir string) (paxos.AcceptorState, error) {
	dir, err := storeDir(dataDir)
	if err != nil {
		return paxos.AcceptorState{}, err
	}
	s, err := node.OpenStore(dir)
	if err != nil {
		return paxos.AcceptorState{}, err
	}
	defer s.Close()
	return s.AcceptorState()
}

// replica: a fake proxy leader sends every slot chosen, in order, each a
// batch of fresh commands (new sequence numbers, so that the replica
// applies each one); a fake unbatcher counts the replies. The replica
// answers for the slots it is responsible for, every other one of two
// replicas, and the last of them gives how far it has executed.
func (r *rig) replica() error {
	lns, addrs, err := r.peers(9)
	if err != nil {
		return err
	}
	n := neighbours{leader: addrs[0], proxy: addrs[1], unbatcher: addrs[2], acceptors: addrs[3:6],
		replicas: []string{r.addr, addrs[6]}, clients: addrs[7:9]}
	r.cfg = n.config(r.batch)
	b := r.batch
	msg := paxos.Message{Kind: paxos.KindChosen, From: n.proxy, To: r.addr, Slot: marker(3 * b)}
	for i := range b {
		c := command(0, n.clients[i%len(n.clients)])
		c.Client, c.Seq = marker(3*i), marker(3*i+1)
		c.Op = paxos.EncodeKV(paxos.KVOp{Op: "put", Key: markerKey(3*i + 2), Value: componentValue})
		msg.Value.Commands = append(msg.Value.Commands, c)
	}
	chosen, err := newStamp(&msg, 3*b+1)
	if err != nil {
		return err
	}
	var replies atomic.Int64
	err = r.serve(lns, func(i int, h head) {
		switch {
		case i == 2 && h.Kind == paxos.KindReplyBatch:
			if h.Refused > 0 {
				r.fail(fmt.Errorf("replica refused %d commands", h.Refused))
			}
			replies.Add(int64(h.Items))
			if h.Items > 0 {
				r.win.advance(int64((h.LastSeq-1)/uint64(b)) + 1)
			}
		case h.Kind == paxos.KindRecover:
			r.fail(fmt.Errorf("replica asked %s to recover slots from %d: it missed a slot", addrs[i], h.Slot))
		}
	})
	if err != nil {
		return err
	}
	r.commands = func() int64 { return r.win.done.Load() * int64(b) }
	vals := make([]uint64, 3*b+1)
	var slot uint64
	frames := func(k int64) [][]byte {
		fs := make([][]byte, k)
		for j := range fs {
			for i := range b {
				g := slot*uint64(b) + uint64(i)
				c := command(g, "")
				vals[3*i], vals[3*i+1], vals[3*i+2] = c.Client, c.Seq, g%componentKeys
			}
			vals[3*b] = slot
			fs[j] = chosen.fill(vals...)
			slot++
		}
		return fs
	}
	r.flood = func(ctx context.Context) error {
		if err := r.sendLoop(ctx, 16, frames, nil); err != nil || slot%2 == 1 {
			return err
		}
		// End on a slot the replica answers, so that the answer shows
		// every slot sent executed.
		wctx, cancel := context.WithTimeout(context.Background(), r.win.stall)
		defer cancel()
		if err := r.win.takeAll(wctx, 1); err != nil {
			return err
		}
		r.tr.SendBatch(r.addr, frames(1))
		return nil
	}
	r.check = func(f final) (string, error) {
		sent := uint64(r.win.sent.Load())
		if f.status.Executed != sent {
			return "", fmt.Errorf("replica executed %d of %d slots", f.status.Executed, sent)
		}
		mine := (sent + 1) / 2 // slots 0, 2, 4, ...: replica 0 of 2 answers them
		if got := replies.Load(); got != int64(mine)*int64(b) {
			return "", fmt.Errorf("replica answered %d commands, want %d (%d slots of %d)", got, mine*uint64(b), mine, b)
		}
		durable, keys, err := storedReplica(f.dataDir, r.cfg, r.addr, b)
		if err != nil {
			return "", err
		}
		if want := sent / 1000 * 1000; durable != want {
			return "", fmt.Errorf("replica's stored snapshot is at slot %d, want %d (one every 1000 slots)", durable, want)
		}
		return fmt.Sprintf("executed %d slots (%d puts) in order and answered %d of their commands through the unbatcher; reopened, its snapshot at slot %d holds %d keys with the puts applied",
			sent, sent*uint64(b), replies.Load(), durable, keys), nil
	}
	return nil
}

// storedReplica restores a stopped replica from its store and checks that
// the last put its snapshot covers is applied. It returns the snapshot's
// slot and the number of keys (0 and 0 without a snapshot).
func storedReplica(dataDir string, cfg paxos.Config, addr string, b int) (uint64, int, error) {
	dir, err := storeDir(dataDir)
	if err != nil {
		return 0, 0, err
	}
	s, err := node.OpenStore(dir)
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	snap, err := s.Snapshot()
	if err != nil || snap == nil {
		return 0, 0, err // none before the first 1000 slots
	}
	kv := paxos.NewKV()
	rep, err := paxos.NewReplicaAt(cfg, addr, kv, snap)
	if err != nil {
		return 0, 0, err
	}
	slot := rep.ExecutedThrough()
	if slot == 0 {
		return 0, kv.Len(), nil
	}
	last := slot*uint64(b) - 1
	key := fmt.Sprintf("%016x", last%componentKeys)
	res, err := paxos.DecodeKVResult(kv.Read(paxos.EncodeKV(paxos.KVOp{Op: "get", Key: key})))
	if err != nil || !res.Found || string(res.Value) != string(componentValue) {
		return 0, 0, fmt.Errorf("replica's snapshot at slot %d lacks the put of key %s (found %v, %v)", slot, key, res.Found, err)
	}
	if want := min(slot*uint64(b), componentKeys); uint64(kv.Len()) != want {
		return 0, 0, fmt.Errorf("replica's snapshot at slot %d holds %d keys, want %d", slot, kv.Len(), want)
	}
	return slot, kv.Len(), nil
}

// batcher: fake clients send requests, one command each; a fake leader
// counts the batches and their commands, and sends heartbeats every 50 ms
// as the active leader does.
func (r *rig) batcher() error {
	lns, addrs, err := r.peers(7 + componentPeers)
	if err != nil {
		return err
	}
	n := neighbours{leader: addrs[0], proxy: addrs[1], acceptors: addrs[2:5], replicas: addrs[5:7], clients: addrs[7:]}
	r.cfg = n.config(r.batch)
	r.cfg.Batchers = []string{r.addr}
	var reqs []stamp
	for i, c := range n.clients {
		s, err := newStamp(&paxos.Message{Kind: paxos.KindRequest, From: c, To: r.addr, Command: paxos.Command{
			Client: uint64(i + 1), Seq: marker(0), ReplyTo: c, First: true,
			Op: paxos.EncodeKV(paxos.KVOp{Op: "put", Key: markerKey(1), Value: componentValue})}}, 2)
		if err != nil {
			return err
		}
		reqs = append(reqs, s)
	}
	beat, err := paxos.Encode(&paxos.Message{Kind: paxos.KindHeartbeat, From: n.leader, To: r.addr, Ballot: componentBallot})
	if err != nil {
		return err
	}
	var batches, cmds atomic.Int64
	err = r.serve(lns, func(i int, h head) {
		if i == 0 && h.Kind == paxos.KindBatch {
			batches.Add(1)
			cmds.Add(int64(h.Items))
			r.win.release(int64(h.Items))
		}
	})
	if err != nil {
		return err
	}
	r.commands = cmds.Load
	var g uint64
	var lastBeat time.Time
	heartbeat := func(now time.Time) {
		if now.Sub(lastBeat) >= 50*time.Millisecond {
			lastBeat = now
			r.tr.Send(r.addr, beat)
		}
	}
	r.flood = func(ctx context.Context) error {
		return r.sendLoop(ctx, 256, func(k int64) [][]byte {
			fs := make([][]byte, k)
			for i := range fs {
				fs[i] = reqs[g%uint64(len(reqs))].fill(g+1, g%componentKeys)
				g++
			}
			return fs
		}, heartbeat)
	}
	r.check = func(f final) (string, error) {
		sent := r.win.sent.Load()
		if c := cmds.Load(); c != sent {
			return "", fmt.Errorf("batcher handed the leader %d of %d commands", c, sent)
		}
		if int64(f.status.Batches) != batches.Load() {
			return "", fmt.Errorf("batcher counts %d batches, the leader received %d", f.status.Batches, batches.Load())
		}
		return fmt.Sprintf("handed the leader all %d commands in %d batches (%.1f commands on average, batch size %d)",
			sent, batches.Load(), float64(sent)/float64(max(batches.Load(), 1)), r.batch), nil
	}
	return nil
}

// unbatcher: a fake replica sends reply batches; fake clients count the
// replies.
func (r *rig) unbatcher() error {
	lns, addrs, err := r.peers(7 + componentPeers)
	if err != nil {
		return err
	}
	n := neighbours{leader: addrs[0], proxy: addrs[1], acceptors: addrs[2:5], replicas: addrs[5:7], unbatcher: r.addr, clients: addrs[7:]}
	r.cfg = n.config(r.batch)
	result, err := msgpack.Marshal(&paxos.KVResult{OK: true, Found: true})
	if err != nil {
		return err
	}
	msg := paxos.Message{Kind: paxos.KindReplyBatch, From: n.replicas[0], To: r.addr}
	for i := range r.batch {
		c := command(uint64(i), n.clients[i%len(n.clients)])
		msg.Replies = append(msg.Replies, paxos.Reply{Client: c.Client, Seq: c.Seq, Result: result, ReplyTo: c.ReplyTo})
	}
	batch, err := paxos.Encode(&msg) // the same frame every time: the unbatcher keeps no state
	if err != nil {
		return err
	}
	perClient := make([]atomic.Int64, len(n.clients))
	var replies atomic.Int64
	err = r.serve(lns, func(i int, h head) {
		if i >= 7 && h.Kind == paxos.KindReply {
			if h.Refused > 0 {
				r.fail(errors.New("unbatcher relayed a reply with an error it was not given"))
			}
			perClient[i-7].Add(1)
			replies.Add(1)
			r.win.release(1)
		}
	})
	if err != nil {
		return err
	}
	r.commands = replies.Load
	b := int64(r.batch)
	r.flood = func(ctx context.Context) error {
		for {
			var fs [][]byte
			for len(fs) < 16 && (len(fs) == 0 || r.win.size-r.win.inFlight() >= b) {
				if err := r.win.takeAll(ctx, b); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				fs = append(fs, batch)
			}
			r.tr.SendBatch(r.addr, fs)
		}
	}
	r.check = func(f final) (string, error) {
		sent := r.win.sent.Load()
		if got := replies.Load(); got != sent {
			return "", fmt.Errorf("unbatcher relayed %d of %d replies", got, sent)
		}
		for i := range perClient {
			// Reply j of each batch goes to client j mod the clients.
			each := (b - int64(i) + int64(len(perClient)) - 1) / int64(len(perClient))
			if got, want := perClient[i].Load(), sent/b*each; got != want {
				return "", fmt.Errorf("unbatcher relayed %d replies to client %d, want %d", got, i, want)
			}
		}
		return fmt.Sprintf("relayed all %d replies of %d reply batches, each to its own of %d clients", sent, sent/b, len(perClient)), nil
	}
	return nil
}

package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"tide/chord"
	"tide/store/status"
)

// A standby is a storage node outside the ring that knows the ring, as the
// Dynamo seed's third node does: it coordinates every KV request sent to
// it exactly as a member does, answers route_test and /hash_ring, and owns
// no range, so whatever KV data it holds is handed off to the members.
// A node is one when started with --standby or --idle, when remove_node
// took it out of the ring, or when POST /hash_ring left it out; add_node
// (or a create or join over msgpack-rpc) makes it a member.
//
// A standby learns the ring by walking it from a member it follows
// (n.follow, Chord addresses), and tells the members it follows them, so
// that a membership change also waits until it routes by the new ring.

// stateStandby names the engine state of a node that is a standby: the
// members it follows (JSON standbyState). A restart on the same data
// directory starts it as a standby again.
const stateStandby = "standby"

type standbyState struct {
	Follow []string `json:"follow"`
}

// following returns the Chord addresses of the members a standby walks
// the ring from, the last that answered first.
func (n *Node) following() []string {
	if p := n.follow.Load(); p != nil {
		return *p
	}
	return nil
}

// setFollowing sets the members a standby walks the ring from.
func (n *Node) setFollowing(addrs []string) {
	var out []string
	for _, a := range addrs {
		if a != "" && a != n.ring.Self().Addr() && !slices.Contains(out, a) && len(out) < 16 {
			out = append(out, a)
		}
	}
	n.follow.Store(&out)
}

// becomeStandby records that this node is out of the ring and follows the
// ring of the given members.
func (n *Node) becomeStandby(follow []string) error {
	n.setFollowing(follow)
	raw, _ := json.Marshal(standbyState{Follow: n.following()})
	if err := n.eng.PutState(stateStandby, raw); err != nil {
		return fmt.Errorf("record standby state: %w", err)
	}
	n.log.Info("standby: out of the ring, following it", "members", len(n.following()))
	n.RefreshRing()
	return nil
}

// becameMember forgets the standby state once create, join or add_node
// made this node a member, and keeps its token across restarts.
func (n *Node) becameMember() {
	n.follow.Store(nil)
	if err := n.eng.DeleteState(stateStandby); err != nil {
		n.log.Warn("forget standby state", "err", err)
	}
	self := n.ring.Self()
	if err := n.eng.PutState("token", tokenBytes(uint32(self.ID))); err != nil {
		n.log.Warn("record token", "err", err)
	}
	n.log.Info("member of a ring", "token", uint32(self.ID), "successor", n.ring.Successor(0).String())
	n.RefreshRing()
	n.files.Kick()
}

// state names what the node is: member, leaving, standby (out of the ring,
// knowing it) or idle (out of any ring, knowing none).
func (n *Node) state() string {
	switch {
	case n.leaving.Load():
		return "leaving"
	case n.ring.InRing():
		return "member"
	case len(n.following()) > 0:
		return "standby"
	}
	return "idle"
}

// walkFollowed walks the ring from the members a standby follows, the
// first that answers, and keeps the members found as the ones to follow.
func (n *Node) walkFollowed(ctx context.Context, cache addrCache) ([]member, error) {
	follow := n.following()
	if len(follow) == 0 {
		return nil, status.ErrNoRing
	}
	var errs []error
	for _, via := range follow {
		start, err := n.rpc.CallRef(ctx, via, "get_info")
		if err == nil {
			var ms []member
			if ms, err = n.walkFrom(ctx, start, cache); err == nil {
				next := []string{via}
				for _, m := range ms {
					next = append(next, m.ref.Addr())
				}
				n.setFollowing(next)
				return ms, nil
			}
		}
		errs = append(errs, fmt.Errorf("walk from %s: %w", via, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// walkFrom follows successor pointers around the ring from start, a
// member. A node that answers that it is not in a ring (it left) ends the
// walk with an error: a table must never bring it back.
func (n *Node) walkFrom(ctx context.Context, start chord.Ref, cache addrCache) ([]member, error) {
	var out []member
	seen := map[chord.Ref]bool{}
	cur := start
	for range 4096 {
		if seen[cur] || cur.IsZero() {
			break
		}
		seen[cur] = true
		next, err := n.rpc.CallRef(ctx, cur.Addr(), "get_successor", 0)
		if err != nil {
			return nil, fmt.Errorf("successor of %s: %w", cur.Addr(), err)
		}
		a, err := n.addrsOf(ctx, cur, cache)
		if err != nil {
			return nil, err
		}
		if a["peer"] != "" {
			out = append(out, member{ref: cur, addrs: a})
		}
		cur = next
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no KV member found from %s", start.Addr())
	}
	return out, nil
}

// standbys are the standbys that follow this member's ring, by HTTP
// address, with when each last said so.
type standbys struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// standbyTTL is how long a standby counts as following the ring after it
// last said so; a standby says so every standbyHello.
const (
	standbyTTL   = 60 * time.Second
	standbyHello = 15 * time.Second
)

func (s *standbys) add(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]time.Time{}
	}
	s.seen[addr] = time.Now()
}

func (s *standbys) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for a, t := range s.seen {
		if time.Since(t) > standbyTTL {
			delete(s.seen, a)
			continue
		}
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

func (s *standbys) remove(addr string) {
	s.mu.Lock()
	delete(s.seen, addr)
	s.mu.Unlock()
}

// handleStandbyHello records that the standby at ?addr (its HTTP address)
// follows this node's ring.
func (n *Node) handleStandbyHello(w http.ResponseWriter, r *http.Request) {
	addr := r.URL.Query().Get("addr")
	if addr == "" {
		n.fail(w, "standby_hello", status.Errorf(http.StatusBadRequest, "missing query parameter addr"))
		return
	}
	n.standbys.add(addr)
	w.WriteHeader(http.StatusNoContent)
}

// helloMembers tells every member of ms that this standby follows their
// ring.
func (n *Node) helloMembers(ctx context.Context, ms []member) {
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.post(ctx, "http://"+m.addrs["http"]+"/internal/standby?addr="+url.QueryEscape(n.HTTPAddr()))
		}()
	}
	wg.Wait()
}

func tokenBytes(t uint32) []byte { return []byte{byte(t >> 24), byte(t >> 16), byte(t >> 8), byte(t)} }

// addrCache keeps the service addresses of the nodes a ring walk met, by
// Chord address.
type addrCache map[string]cachedAddrs

type cachedAddrs struct {
	ref   chord.Ref
	addrs map[string]string
	at    time.Time
}

// addrCacheTTL bounds how long a walk trusts the addresses it learned of a
// member: a node that restarts on its Chord address gets a new KV peer
// port.
const addrCacheTTL = 10 * time.Second

// addrsOf returns the service addresses of r, from the cache if r is in
// the table installed now (not a node that joins, or comes back) and was
// asked lately.
func (n *Node) addrsOf(ctx context.Context, r chord.Ref, cache addrCache) (map[string]string, error) {
	if c, ok := cache[r.Addr()]; ok && c.ref == r && time.Since(c.at) < addrCacheTTL && n.inTable(r) {
		return c.addrs, nil
	}
	a, err := n.rpc.Addrs(ctx, r.Addr())
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", r.Addr(), err)
	}
	cache[r.Addr()] = cachedAddrs{ref: r, addrs: a, at: time.Now()}
	return a, nil
}

// inTable reports whether r is in the member table installed now.
func (n *Node) inTable(r chord.Ref) bool {
	cur := n.kvRing.Load()
	return cur != nil && slices.ContainsFunc(cur.members, func(m member) bool { return m.ref == r })
}

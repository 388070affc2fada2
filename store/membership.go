package store

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"tide/chord"
	"tide/store/status"
)

// Membership changes of the ring, as the Dynamo seed makes them: add_node,
// remove_node, POST /hash_ring (its reconfigure.sh) and clear_cache. A
// change runs under the membership lock and answers only once every node
// of the new ring, the nodes it took out, and the standbys that follow the
// ring route by the new ring, as in the seed, where the OK means exactly
// that.

// ringEntry is one member as the seed's /hash_ring shows it: a token and
// an HTTP address. Chord is the member's Chord address, where known.
type ringEntry struct {
	Token uint32 `json:"token"`
	HTTP  string `json:"http"`
	Chord string `json:"chord,omitempty"`
}

// ringStatus is a node's answer at /internal/kv/ring: what it is, the
// table its KV layer routes requests by, and (for a member) the standbys
// that follow the ring.
type ringStatus struct {
	State    string      `json:"state"`
	Members  []ringEntry `json:"members"`
	Standbys []string    `json:"standbys,omitempty"`
}

func entriesOf(ms []member) []ringEntry {
	out := make([]ringEntry, 0, len(ms))
	for _, m := range ms {
		out = append(out, ringEntry{Token: uint32(m.ref.ID), HTTP: m.addrs["http"], Chord: m.ref.Addr()})
	}
	return out
}

// fmtEntries is a table's tokens and HTTP addresses, in token order, for
// comparisons and messages.
func fmtEntries(es []ringEntry) string {
	es = slices.Clone(es)
	sort.Slice(es, func(i, j int) bool { return es[i].Token < es[j].Token })
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range es {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d: %s", e.Token, e.HTTP)
	}
	b.WriteByte('}')
	return b.String()
}

func (n *Node) handleKVRing(w http.ResponseWriter, r *http.Request) {
	st := ringStatus{State: n.state(), Members: []ringEntry{}}
	if a, ok := n.kv.Applied().(*kvRing); ok {
		st.Members = entriesOf(a.members)
	}
	if st.State == "member" {
		st.Standbys = n.standbys.list()
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(st)
}

// parseToken reads a ring token for this cluster's partitioner.
func (n *Node) parseToken(s string) (chord.ID, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, status.Errorf(http.StatusBadRequest, "token %q is not an integer in [0, 2^32)", s)
	}
	if n.cfg.Partitioner == "md5-mod10000" && v >= 10000 {
		return 0, status.Errorf(http.StatusBadRequest, "token %d out of range [0, 10000) for md5-mod10000", v)
	}
	return chord.ID(v), nil
}

// handleAddNode makes the running node at addr (its HTTP address) a
// member at token: a standby, an idle node, or a node alone in a ring of
// its own, which takes the token it is given.
func (n *Node) handleAddNode(w http.ResponseWriter, r *http.Request) {
	token, err := n.parseToken(r.PathValue("token"))
	if err != nil {
		n.fail(w, "add_node", err)
		return
	}
	addr := r.PathValue("addr")
	err = n.withMembershipLock(r.Context(), func(ctx context.Context) error {
		cur := entriesOf(n.kvRing.Load().members)
		if len(cur) == 0 {
			return status.Errorf(http.StatusConflict, "%v", status.ErrNoRing)
		}
		for _, m := range cur {
			if m.Token == uint32(token) {
				return status.Errorf(http.StatusConflict, "token %d is already taken by %s", token, m.HTTP)
			}
		}
		info, err := n.nodeInfo(ctx, addr)
		if err != nil {
			return err
		}
		want, err := n.addNode(ctx, cur, info, uint32(token))
		if err != nil {
			return err
		}
		return n.settle(ctx, want, info.HTTPAddr)
	})
	if err != nil {
		n.fail(w, "add_node", err)
		return
	}
	n.ok("add_node", 200)
	text(w, 200, "OK")
}

// nodeInfo asks the node at addr (HTTP) for its Info.
func (n *Node) nodeInfo(ctx context.Context, addr string) (Info, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return Info{}, status.Errorf(http.StatusBadRequest, "node address %q: want ip:port", addr)
	}
	var info Info
	if err := status.GetJSON(ctx, n.hc, "http://"+addr+"/internal/info", &info); err != nil {
		return Info{}, status.Errorf(http.StatusBadGateway, "reach node %s: %v", addr, err)
	}
	return info, nil
}

// addNode makes the node described by info a member of the ring whose
// members are cur, at token, and returns the table expected after.
func (n *Node) addNode(ctx context.Context, cur []ringEntry, info Info, token uint32) ([]ringEntry, error) {
	for _, m := range cur {
		if m.HTTP == info.HTTPAddr {
			return nil, status.Errorf(http.StatusConflict, "%s is already in the ring at token %d", info.HTTPAddr, m.Token)
		}
		if m.Token == token {
			return nil, status.Errorf(http.StatusConflict, "token %d is already taken by %s", token, m.HTTP)
		}
	}
	if info.State == "member" && len(info.Successors) > 0 && info.Successors[0] != info.ChordAddr {
		return nil, status.Errorf(http.StatusConflict, "%s is a member of another ring (successor %s); remove it there first", info.HTTPAddr, info.Successors[0])
	}
	q := url.Values{"via": {cur[0].Chord}, "token": {strconv.FormatUint(uint64(token), 10)}}
	if err := n.post(ctx, "http://"+info.HTTPAddr+"/internal/join?"+q.Encode()); err != nil {
		return nil, status.Errorf(http.StatusBadGateway, "join %s: %v", info.HTTPAddr, err)
	}
	return append(slices.Clone(cur), ringEntry{Token: token, HTTP: info.HTTPAddr, Chord: info.ChordAddr}), nil
}

// handleRemoveNode drains the node at addr (its keys and files move to
// the nodes that hold them next) and takes it out of the ring. The node
// keeps running as a standby.
func (n *Node) handleRemoveNode(w http.ResponseWriter, r *http.Request) {
	addr := r.PathValue("addr")
	err := n.withMembershipLock(r.Context(), func(ctx context.Context) error {
		cur := entriesOf(n.kvRing.Load().members)
		want, err := n.removeNode(ctx, cur, addr)
		if err != nil {
			return err
		}
		return n.settle(ctx, want, addr)
	})
	if err != nil {
		n.fail(w, "remove_node", err)
		return
	}
	n.ok("remove_node", 200)
	text(w, 200, "OK")
}

// removeNode drains the member at addr (HTTP) out of the ring whose
// members are cur, leaving it a standby, and returns the table expected
// after.
func (n *Node) removeNode(ctx context.Context, cur []ringEntry, addr string) ([]ringEntry, error) {
	i := slices.IndexFunc(cur, func(e ringEntry) bool { return e.HTTP == addr })
	if i < 0 {
		return nil, status.Errorf(http.StatusNotFound, "no node %s in the ring", addr)
	}
	if len(cur) == 1 {
		return nil, status.Errorf(http.StatusBadRequest, "cannot remove the last node of the ring")
	}
	// Draining takes as long as the data takes to move.
	if err := n.postWith(ctx, &http.Client{Transport: &http.Transport{DialContext: nodeDialer(n.cfg.TLS, 2*time.Second)}}, "http://"+addr+"/internal/leave?stay=1"); err != nil {
		return nil, status.Errorf(http.StatusBadGateway, "drain %s: %v", addr, err)
	}
	return slices.Delete(slices.Clone(cur), i, i+1), nil
}

// settle tells every node concerned that the ring changed and waits until
// each routes by want; touched are nodes the change took out of the ring
// or brought into it, which must follow it too.
func (n *Node) settle(ctx context.Context, want []ringEntry, touched ...string) error {
	n.announceRingChange(ctx, touched...)
	return n.awaitRing(ctx, want, touched...)
}

// ringWait bounds how long a membership change waits for every node to
// route by the new ring before it answers with the ones that do not.
const ringWait = 30 * time.Second

// awaitRing waits until every member of want, every node in also, this
// node, and the standbys the members know of report want as the table they
// route requests by. A node that lags is asked again to walk the ring. A
// standby that cannot be reached is not waited for (it may have been
// stopped); a member, or a node in also, is.
func (n *Node) awaitRing(ctx context.Context, want []ringEntry, also ...string) error {
	ctx, cancel := context.WithTimeout(ctx, ringWait)
	defer cancel()
	target := fmtEntries(want)
	required := map[string]bool{n.HTTPAddr(): true}
	for _, e := range want {
		required[e.HTTP] = true
	}
	for _, a := range also {
		required[a] = true
	}
	pending := map[string]bool{}
	for a := range required {
		pending[a] = true
	}
	known := map[string]bool{}
	for a := range pending {
		known[a] = true
	}
	kicked := map[string]time.Time{}
	for {
		type answer struct {
			addr string
			st   ringStatus
			err  error
		}
		answers := make(chan answer, len(pending))
		for a := range pending {
			go func() {
				var st ringStatus
				err := status.GetJSON(ctx, n.hc, "http://"+a+"/internal/kv/ring", &st)
				answers <- answer{a, st, err}
			}()
		}
		var lag []string
		for range len(pending) {
			an := <-answers
			for _, s := range an.st.Standbys {
				if !known[s] {
					known[s], pending[s] = true, true
				}
			}
			switch {
			case an.err == nil && fmtEntries(an.st.Members) == target:
				delete(pending, an.addr)
				continue
			case an.err != nil && !required[an.addr]:
				n.log.Info("ring change: not waiting for a standby that does not answer", "standby", an.addr, "err", an.err)
				n.standbys.remove(an.addr)
				delete(pending, an.addr)
				continue
			case an.err != nil:
				lag = append(lag, fmt.Sprintf("%s (%v)", an.addr, an.err))
			default:
				lag = append(lag, fmt.Sprintf("%s (%s, routing by %s)", an.addr, an.st.State, fmtEntries(an.st.Members)))
			}
			if time.Since(kicked[an.addr]) >= 300*time.Millisecond {
				kicked[an.addr] = time.Now()
				go n.post(ctx, "http://"+an.addr+"/internal/ring-changed")
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			slices.Sort(lag)
			return status.Errorf(http.StatusGatewayTimeout, "the ring changed to %s, but after %s these nodes do not route by it yet: %s",
				target, ringWait, strings.Join(lag, "; "))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (n *Node) post(ctx context.Context, u string) error { return n.postWith(ctx, n.hc, u) }

func (n *Node) postWith(ctx context.Context, hc *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, status.TrimNL(msg))
	}
	return nil
}

// announceRingChange tells every member, every standby that follows the
// ring, and the extra nodes (HTTP addresses: ones joining or leaving) to
// refresh their view of the ring now.
func (n *Node) announceRingChange(ctx context.Context, extra ...string) {
	n.announce(ctx, "/internal/ring-changed", extra...)
}

// announceLeft tells every member and standby that this node left the ring
// after handing its data off, so that their KV layers stop waiting for it
// (a member that vanishes without this is taken for crashed).
// peers are the members' HTTP addresses as of before the leave: the view
// the node walks once out of the ring may no longer list them.
func (n *Node) announceLeft(ctx context.Context, peers []string) {
	n.announce(ctx, "/internal/ring-changed?left="+url.QueryEscape(n.addrs()["peer"]), peers...)
}

// memberHTTPAddrs returns the HTTP addresses of the members of this node's
// view of the ring.
func (n *Node) memberHTTPAddrs() []string {
	var out []string
	for _, m := range n.kvRing.Load().members {
		out = append(out, m.addrs["http"])
	}
	return out
}

func (n *Node) announce(ctx context.Context, path string, extra ...string) {
	n.RefreshRing()
	targets := map[string]bool{}
	for _, m := range n.kvRing.Load().members {
		targets[m.addrs["http"]] = true
	}
	for _, s := range n.standbys.list() {
		targets[s] = true
	}
	for _, e := range extra {
		targets[e] = true
	}
	delete(targets, n.HTTPAddr())
	var wg sync.WaitGroup
	for t := range targets {
		wg.Add(1)
		go func() { defer wg.Done(); n.post(ctx, "http://"+t+path) }()
	}
	wg.Wait()
}

// handleJoin makes this node a member, as add_node and POST /hash_ring
// ask: of the ring of the node at ?via (a Chord address), or of a new ring
// of its own without via; at ?token if given. A node alone in a ring of
// its own leaves it first; a member of a ring with others is refused.
func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	via := q.Get("via")
	n.memberMu.Lock()
	defer n.memberMu.Unlock()
	if n.leaving.Load() {
		n.fail(w, "join", status.Errorf(http.StatusConflict, "node is leaving its ring"))
		return
	}
	self := n.ring.Self()
	token := self.ID
	if s := q.Get("token"); s != "" {
		t, err := n.parseToken(s)
		if err != nil {
			n.fail(w, "join", err)
			return
		}
		token = t
	}
	var ref chord.Ref
	if via != "" {
		var err error
		if ref, err = n.rpc.CallRef(r.Context(), via, "get_info"); err != nil {
			n.fail(w, "join", status.Errorf(http.StatusBadGateway, "reach %s: %v", via, err))
			return
		}
	}
	if n.ring.InRing() {
		if succ := n.ring.Successor(0); succ != self {
			n.fail(w, "join", status.Errorf(http.StatusConflict, "%s is a member of a ring with others (successor %s); remove it there first", n.HTTPAddr(), succ))
			return
		}
		if token == self.ID && via == "" {
			w.WriteHeader(http.StatusNoContent) // alone in a ring at that token already
			return
		}
		// Alone: nobody to tell. Its data stays, and moves to the
		// members of the ring it joins as a member's would.
		n.ring.Leave(r.Context())
	}
	if token != self.ID {
		if err := n.ring.SetID(token); err != nil {
			n.fail(w, "join", status.Errorf(http.StatusConflict, "%v", err))
			return
		}
	}
	if via == "" {
		n.ring.Create()
	} else if err := n.ring.Join(r.Context(), ref); err != nil {
		n.fail(w, "join", status.Errorf(http.StatusConflict, "%v", err))
		return
	}
	n.becameMember()
	w.WriteHeader(http.StatusNoContent)
}

// handleSetRing is the seed's POST /hash_ring: form field data holding
// {"nodes":[{"ip":"IP:PORT","key":TOKEN},...]} (or that JSON as the body).
// The listed nodes (by HTTP address) become the ring's members at the
// listed tokens; this node, if not listed, a standby that follows it.
func (n *Node) handleSetRing(w http.ResponseWriter, r *http.Request) {
	want, err := n.parseRingSpec(w, r)
	if err != nil {
		n.fail(w, "hash_ring_set", err)
		return
	}
	run := n.withMembershipLock
	if len(n.kvRing.Load().members) == 0 {
		// No ring to lock yet.
		run = func(ctx context.Context, fn func(context.Context) error) error { return fn(ctx) }
	}
	if err := run(r.Context(), func(ctx context.Context) error { return n.setRing(ctx, want) }); err != nil {
		n.fail(w, "hash_ring_set", err)
		return
	}
	n.ok("hash_ring_set", 200)
	text(w, 200, "OK")
}

// parseRingSpec reads and checks the ring that POST /hash_ring asks for.
func (n *Node) parseRingSpec(w http.ResponseWriter, r *http.Request) ([]ringEntry, error) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	var raw string
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, status.Errorf(http.StatusBadRequest, "read body: %v", err)
		}
		raw = string(b)
	} else {
		if err := r.ParseMultipartForm(1 << 20); err != nil && err != http.ErrNotMultipart {
			return nil, status.Errorf(http.StatusBadRequest, "bad form: %v", err)
		}
		if !r.PostForm.Has("data") {
			return nil, status.Errorf(http.StatusBadRequest, `missing form field data: want data={"nodes":[{"ip":"IP:PORT","key":TOKEN},...]}`)
		}
		raw = r.PostForm.Get("data")
	}
	var spec struct {
		Nodes []struct {
			IP  string          `json:"ip"`
			Key json.RawMessage `json:"key"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return nil, status.Errorf(http.StatusBadRequest, `data: %v: want {"nodes":[{"ip":"IP:PORT","key":TOKEN},...]}`, err)
	}
	if len(spec.Nodes) == 0 {
		return nil, status.Errorf(http.StatusBadRequest, "data: no nodes: a ring needs at least one")
	}
	var want []ringEntry
	for i, nd := range spec.Nodes {
		if _, _, err := net.SplitHostPort(nd.IP); err != nil {
			return nil, status.Errorf(http.StatusBadRequest, "data: node %d: ip %q: want IP:PORT, the node's HTTP address", i, nd.IP)
		}
		key := strings.Trim(string(nd.Key), `"`)
		if key == "" {
			return nil, status.Errorf(http.StatusBadRequest, "data: node %d (%s): missing key, the node's token", i, nd.IP)
		}
		t, err := n.parseToken(key)
		if err != nil {
			return nil, status.Errorf(http.StatusBadRequest, "data: node %d (%s): %v", i, nd.IP, err)
		}
		for _, e := range want {
			if e.HTTP == nd.IP {
				return nil, status.Errorf(http.StatusBadRequest, "data: %s is listed twice", nd.IP)
			}
			if e.Token == uint32(t) {
				return nil, status.Errorf(http.StatusBadRequest, "data: token %d is given to both %s and %s", t, e.HTTP, nd.IP)
			}
		}
		want = append(want, ringEntry{Token: uint32(t), HTTP: nd.IP})
	}
	return want, nil
}

// setRing makes the ring's members exactly want: it builds on the ring this
// node knows (or a listed node is in), adds the listed nodes that are not
// members at their tokens, removes the members that are not listed (they
// stay up, as standbys), and makes this node, if not listed, a standby.
func (n *Node) setRing(ctx context.Context, want []ringEntry) error {
	infos := map[string]Info{}
	for i, e := range want {
		info, err := n.nodeInfo(ctx, e.HTTP)
		if err != nil {
			return err
		}
		if info.HTTPAddr != e.HTTP {
			return status.Errorf(http.StatusBadRequest, "data: node %s calls itself %s: list it by that address", e.HTTP, info.HTTPAddr)
		}
		if info.State == "leaving" {
			return status.Errorf(http.StatusConflict, "%s is leaving its ring; try again once it has left", e.HTTP)
		}
		infos[e.HTTP] = info
		want[i].Chord = info.ChordAddr
	}
	ring := entriesOf(n.kvRing.Load().members)
	if len(ring) <= 1 {
		// This node knows no ring, or only a ring of its own: build on the
		// ring a listed member shares with others, if there is one.
		for _, e := range want {
			if infos[e.HTTP].State != "member" {
				continue
			}
			var st ringStatus
			if err := status.GetJSON(ctx, n.hc, "http://"+e.HTTP+"/internal/kv/ring", &st); err == nil && len(st.Members) > 1 {
				ring = st.Members
				break
			}
		}
	}
	wanted := func(e ringEntry) (ringEntry, bool) {
		i := slices.IndexFunc(want, func(w ringEntry) bool { return w.HTTP == e.HTTP })
		if i < 0 {
			return ringEntry{}, false
		}
		return want[i], true
	}
	inRing := func(addr string) int { return slices.IndexFunc(ring, func(e ringEntry) bool { return e.HTTP == addr }) }
	for _, e := range want {
		info := infos[e.HTTP]
		if inRing(e.HTTP) < 0 && info.State == "member" && len(info.Successors) > 0 && info.Successors[0] != info.ChordAddr {
			return status.Errorf(http.StatusConflict, "%s is a member of another ring (successor %s); remove it there first", e.HTTP, info.Successors[0])
		}
	}
	var touched []string
	remove := func(addr string) error {
		next, err := n.removeNode(ctx, ring, addr)
		if err != nil {
			return err
		}
		ring = next
		touched = append(touched, addr)
		return nil
	}
	create := func(e ringEntry) error {
		q := url.Values{"token": {strconv.FormatUint(uint64(e.Token), 10)}}
		if err := n.post(ctx, "http://"+e.HTTP+"/internal/join?"+q.Encode()); err != nil {
			return status.Errorf(http.StatusBadGateway, "make %s a ring of its own at token %d: %v", e.HTTP, e.Token, err)
		}
		ring = []ringEntry{e}
		touched = append(touched, e.HTTP)
		return nil
	}
	// Listed members at another token leave and join again at theirs; a
	// lone one takes its token in place.
	for _, e := range want {
		i := inRing(e.HTTP)
		if i < 0 || ring[i].Token == e.Token {
			continue
		}
		if len(ring) == 1 {
			if err := create(e); err != nil {
				return err
			}
			continue
		}
		if err := remove(e.HTTP); err != nil {
			return err
		}
	}
	if len(ring) == 0 {
		if err := create(want[0]); err != nil {
			return err
		}
	}
	add := func(e ringEntry) error {
		info, err := n.nodeInfo(ctx, e.HTTP)
		if err != nil {
			return err
		}
		next, err := n.addNode(ctx, ring, info, e.Token)
		if err != nil {
			return err
		}
		ring = next
		touched = append(touched, e.HTTP)
		return nil
	}
	tokenTaken := func(t uint32) bool { return slices.ContainsFunc(ring, func(e ringEntry) bool { return e.Token == t }) }
	// Add the listed nodes whose tokens are free, then remove the members
	// not listed (their data moves to the listed ones), then add the
	// listed nodes whose tokens those held.
	var blocked []ringEntry
	for _, e := range want {
		if inRing(e.HTTP) >= 0 {
			continue
		}
		if tokenTaken(e.Token) {
			blocked = append(blocked, e)
			continue
		}
		if err := add(e); err != nil {
			return err
		}
	}
	for _, m := range slices.Clone(ring) {
		if _, ok := wanted(m); ok {
			continue
		}
		if len(ring) == 1 {
			return status.Errorf(http.StatusConflict, "token %d is held by %s, the ring's only member: add the listed nodes at other tokens first, or remove it", m.Token, m.HTTP)
		}
		if err := remove(m.HTTP); err != nil {
			return err
		}
	}
	for _, e := range blocked {
		if err := add(e); err != nil {
			return err
		}
	}
	if _, listed := wanted(ringEntry{HTTP: n.HTTPAddr()}); !listed && !slices.Contains(touched, n.HTTPAddr()) {
		if err := n.followRing(ctx, want); err != nil {
			return err
		}
	}
	n.log.Info("ring set", "ring", fmtEntries(want), "changed", len(touched))
	return n.settle(ctx, want, touched...)
}

// followRing makes this node, which POST /hash_ring left out of ring, a
// standby that follows it. A node alone in a ring of its own leaves that
// ring; its KV data moves to the members.
func (n *Node) followRing(ctx context.Context, ring []ringEntry) error {
	n.memberMu.Lock()
	defer n.memberMu.Unlock()
	var follow []string
	for _, e := range ring {
		follow = append(follow, e.Chord)
	}
	if n.ring.InRing() {
		if succ := n.ring.Successor(0); succ != n.ring.Self() {
			return status.Errorf(http.StatusConflict, "this node is a member of a ring with others (successor %s) that the new ring does not list; remove it first", succ)
		}
		if files := n.eng.Files(); files > 0 {
			return status.Errorf(http.StatusConflict, "this node holds %d files in a ring of its own; list it in the new ring, or take the files off it first", files)
		}
		n.ring.Leave(ctx)
	}
	return n.becomeStandby(follow)
}

// handleClearCache is the seed's clear_cache: it drops every KV record
// and held hint of this node, durably. Destructive: other replicas keep
// their copies (and anti-entropy may bring them back here), so emptying
// the store takes a clear_cache on every node.
func (n *Node) handleClearCache(w http.ResponseWriter, r *http.Request) {
	if err := n.kv.Clear(r.Context()); err != nil {
		if r.Context().Err() != nil {
			return
		}
		n.fail(w, "clear_cache", err)
		return
	}
	n.log.Warn("clear_cache: every KV record and hint of this node dropped")
	n.ok("clear_cache", 200)
	text(w, 200, "OK")
}

// The membership lock: one change at a time, held for at most lockTTL at
// the ring's lowest-token member.
const lockTTL = 5 * time.Minute

type lease struct {
	mu     sync.Mutex
	holder string
	until  time.Time
}

func (n *Node) handleLock(w http.ResponseWriter, r *http.Request) {
	holder := r.URL.Query().Get("holder")
	n.lock.mu.Lock()
	defer n.lock.mu.Unlock()
	if n.lock.holder != "" && n.lock.holder != holder && time.Now().Before(n.lock.until) {
		n.fail(w, "lock", status.Errorf(http.StatusConflict, "another membership change is in progress (by %s)", n.lock.holder))
		return
	}
	n.lock.holder, n.lock.until = holder, time.Now().Add(lockTTL)
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) handleUnlock(w http.ResponseWriter, r *http.Request) {
	n.lock.mu.Lock()
	defer n.lock.mu.Unlock()
	if n.lock.holder == r.URL.Query().Get("holder") {
		n.lock.holder = ""
	}
	w.WriteHeader(http.StatusNoContent)
}

// withMembershipLock runs fn holding the ring's membership lock.
func (n *Node) withMembershipLock(ctx context.Context, fn func(context.Context) error) error {
	ms := n.kvRing.Load().members
	if len(ms) == 0 {
		return status.Errorf(http.StatusConflict, "%v", status.ErrNoRing)
	}
	keeper := ms[0].addrs["http"]
	holder := fmt.Sprintf("%s@%d", n.HTTPAddr(), time.Now().UnixNano())
	q := "?holder=" + url.QueryEscape(holder)
	if err := n.post(ctx, "http://"+keeper+"/internal/lock"+q); err != nil {
		return status.Errorf(http.StatusConflict, "membership lock: %v", err)
	}
	defer func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodDelete, "http://"+keeper+"/internal/lock"+q, nil)
		if resp, err := n.hc.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	return fn(ctx)
}

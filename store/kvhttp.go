package store

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"tide/chord"
)

// kvRoutes adds the KV APIs: the Dynamo seed's routes, REST under /kv/,
// and the membership endpoints behind add_node and remove_node.
func (n *Node) kvRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /route", n.handleRoutePost)
	mux.HandleFunc("GET /route", n.handleRouteGet)
	mux.HandleFunc("GET /route_test", n.handleRouteTest)
	mux.HandleFunc("GET /add_node/{token}/{addr}", n.handleAddNode)
	mux.HandleFunc("POST /add_node/{token}/{addr}", n.handleAddNode)
	mux.HandleFunc("GET /remove_node/{addr}", n.handleRemoveNode)
	mux.HandleFunc("GET /hash_ring", n.handleHashRing)
	mux.HandleFunc("GET /kv/{key...}", n.handleKVGet)
	mux.HandleFunc("PUT /kv/{key...}", n.handleKVPut)
	mux.HandleFunc("DELETE /kv/{key...}", n.handleKVDelete)
	mux.HandleFunc("POST /internal/join", n.handleJoin)
	mux.HandleFunc("GET /internal/kv/local", func(w http.ResponseWriter, r *http.Request) {
		rec, ok, err := kvStorage{n.eng}.Get([]byte(r.URL.Query().Get("key")))
		if err != nil || !ok || rec.Tomb {
			http.Error(w, "not held here", http.StatusNotFound)
			return
		}
		w.Header().Set("X-Tide-Version", strconv.FormatUint(rec.Version, 10))
		w.Write(rec.Value)
	})
	mux.HandleFunc("POST /internal/ring-changed", func(w http.ResponseWriter, r *http.Request) {
		// Stabilize at once rather than at the next Chord tick, so that a
		// new member's predecessor adopts it and the walk that follows
		// finds it.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			n.ring.Stabilize(ctx)
			n.RefreshRing()
		}()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /internal/lock", n.handleLock)
	mux.HandleFunc("DELETE /internal/lock", n.handleUnlock)
}

func text(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, s)
}

// handleRoutePost is the seed's store: form fields key and val; "OK".
func (n *Node) handleRoutePost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, int64(n.cfg.KV.MaxValue)+64<<10)
	if err := r.ParseForm(); err != nil {
		n.fail(w, "route_post", statusf(http.StatusBadRequest, "bad form: %v", err))
		return
	}
	if !r.PostForm.Has("key") {
		n.fail(w, "route_post", statusf(http.StatusBadRequest, "missing form field key"))
		return
	}
	if _, err := n.KVPut(r.Context(), []byte(r.PostForm.Get("key")), []byte(r.PostForm.Get("val")), 0); err != nil {
		n.fail(w, "route_post", kvStatus(err))
		return
	}
	n.ok("route_post", 200)
	text(w, 200, "OK")
}

// kvStatus maps a KV error to its HTTP status.
func kvStatus(err error) error {
	if _, ok := err.(*StatusError); ok {
		return err
	}
	return statusf(http.StatusServiceUnavailable, "%v", err)
}

// handleRouteGet is the seed's fetch: the value, or N/A.
func (n *Node) handleRouteGet(w http.ResponseWriter, r *http.Request) {
	if !r.URL.Query().Has("key") {
		n.fail(w, "route_get", statusf(http.StatusBadRequest, "missing query parameter key"))
		return
	}
	rec, found, err := n.KVGet(r.Context(), []byte(r.URL.Query().Get("key")), 0)
	if err != nil {
		n.fail(w, "route_get", kvStatus(err))
		return
	}
	n.ok("route_get", 200)
	if !found {
		text(w, 200, "N/A")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(rec.Value)
}

// handleRouteTest names the owner of a key as ip:port.
func (n *Node) handleRouteTest(w http.ResponseWriter, r *http.Request) {
	if !r.URL.Query().Has("key") {
		n.fail(w, "route_test", statusf(http.StatusBadRequest, "missing query parameter key"))
		return
	}
	m := n.KVOwner([]byte(r.URL.Query().Get("key")))
	text(w, 200, m.addrs["http"])
}

// handleHashRing shows the ring as the seed did.
func (n *Node) handleHashRing(w http.ResponseWriter, r *http.Request) {
	ring := map[string]string{}
	keys := []uint32{}
	for _, m := range n.kv.ring.Load().members {
		t := uint32(m.ref.ID)
		ring[strconv.FormatUint(uint64(t), 10)] = m.addrs["http"]
		keys = append(keys, t)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"ring": ring, "_sorted_keys": keys})
}

func quorumParam(r *http.Request, name string) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		return 0, statusf(http.StatusBadRequest, "%s=%q: want a positive integer", name, s)
	}
	return v, nil
}

func (n *Node) handleKVGet(w http.ResponseWriter, r *http.Request) {
	q, err := quorumParam(r, "r")
	if err != nil {
		n.fail(w, "kv_get", err)
		return
	}
	rec, found, err := n.KVGet(r.Context(), []byte(r.PathValue("key")), q)
	if err != nil {
		n.fail(w, "kv_get", kvStatus(err))
		return
	}
	if rec.Version != 0 {
		w.Header().Set("X-Tide-Version", strconv.FormatUint(rec.Version, 10))
	}
	if !found {
		n.fail(w, "kv_get", statusf(http.StatusNotFound, "key not found"))
		return
	}
	n.ok("kv_get", 200)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(rec.Value)
}

func (n *Node) handleKVPut(w http.ResponseWriter, r *http.Request) {
	q, err := quorumParam(r, "w")
	if err != nil {
		n.fail(w, "kv_put", err)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(n.cfg.KV.MaxValue)+1))
	if err != nil {
		n.fail(w, "kv_put", statusf(http.StatusBadRequest, "read body: %v", err))
		return
	}
	v, err := n.KVPut(r.Context(), []byte(r.PathValue("key")), body, q)
	if err != nil {
		n.fail(w, "kv_put", kvStatus(err))
		return
	}
	n.ok("kv_put", 204)
	w.Header().Set("X-Tide-Version", strconv.FormatUint(v, 10))
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) handleKVDelete(w http.ResponseWriter, r *http.Request) {
	q, err := quorumParam(r, "w")
	if err != nil {
		n.fail(w, "kv_delete", err)
		return
	}
	v, err := n.KVDelete(r.Context(), []byte(r.PathValue("key")), q)
	if err != nil {
		n.fail(w, "kv_delete", kvStatus(err))
		return
	}
	n.ok("kv_delete", 204)
	w.Header().Set("X-Tide-Version", strconv.FormatUint(v, 10))
	w.WriteHeader(http.StatusNoContent)
}

// parseToken reads a ring token for this cluster's partitioner.
func (n *Node) parseToken(s string) (chord.ID, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, statusf(http.StatusBadRequest, "token %q is not an integer in [0, 2^32)", s)
	}
	if n.cfg.Partitioner == "md5-mod10000" && v >= 10000 {
		return 0, statusf(http.StatusBadRequest, "token %d out of range [0, 10000) for md5-mod10000", v)
	}
	return chord.ID(v), nil
}

// handleAddNode adds the running node at addr (its HTTP address) to the
// ring at token: the node must have been started with that --token and
// not have joined a ring with other members.
func (n *Node) handleAddNode(w http.ResponseWriter, r *http.Request) {
	token, err := n.parseToken(r.PathValue("token"))
	if err != nil {
		n.fail(w, "add_node", err)
		return
	}
	addr := r.PathValue("addr")
	err = n.withMembershipLock(r.Context(), func(ctx context.Context) error {
		for _, m := range n.kv.ring.Load().members {
			if uint32(m.ref.ID) == uint32(token) {
				return statusf(http.StatusConflict, "token %d is already taken by %s", token, m.addrs["http"])
			}
			if m.addrs["http"] == addr {
				return statusf(http.StatusConflict, "%s is already in the ring at token %d", addr, m.ref.ID)
			}
		}
		var info Info
		if err := getJSON(ctx, n.hc, "http://"+addr+"/internal/info", &info); err != nil {
			return statusf(http.StatusBadGateway, "reach node %s: %v", addr, err)
		}
		if info.ID != uint32(token) {
			return statusf(http.StatusConflict, "node %s has token %d; start it with --token %d", addr, info.ID, token)
		}
		u := "http://" + addr + "/internal/join?via=" + url.QueryEscape(n.ring.Self().Addr())
		if err := n.post(ctx, u); err != nil {
			return statusf(http.StatusBadGateway, "join %s: %v", addr, err)
		}
		n.announceRingChange(ctx, addr)
		return nil
	})
	if err != nil {
		n.fail(w, "add_node", err)
		return
	}
	n.ok("add_node", 200)
	text(w, 200, "OK")
}

// handleRemoveNode drains the node at addr (its keys and files move to
// the nodes that hold them next) and takes it out of the ring.
func (n *Node) handleRemoveNode(w http.ResponseWriter, r *http.Request) {
	addr := r.PathValue("addr")
	err := n.withMembershipLock(r.Context(), func(ctx context.Context) error {
		ms := n.kv.ring.Load().members
		found := false
		for _, m := range ms {
			if m.addrs["http"] == addr {
				found = true
			}
		}
		if !found {
			return statusf(http.StatusNotFound, "no node %s in the ring", addr)
		}
		if len(ms) == 1 {
			return statusf(http.StatusBadRequest, "cannot remove the last node of the ring")
		}
		// Draining takes as long as the data takes to move.
		if err := n.postWith(ctx, &http.Client{}, "http://"+addr+"/internal/leave"); err != nil {
			return statusf(http.StatusBadGateway, "drain %s: %v", addr, err)
		}
		n.announceRingChange(ctx, "")
		return nil
	})
	if err != nil {
		n.fail(w, "remove_node", err)
		return
	}
	n.ok("remove_node", 200)
	text(w, 200, "OK")
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
		return fmt.Errorf("%s: %s", resp.Status, trimNL(msg))
	}
	return nil
}

// announceRingChange tells every member (and extra, a node not yet in this
// node's table) to refresh its view of the ring now.
func (n *Node) announceRingChange(ctx context.Context, extra string) {
	n.RefreshRing()
	targets := map[string]bool{}
	for _, m := range n.kv.ring.Load().members {
		targets[m.addrs["http"]] = true
	}
	if extra != "" {
		targets[extra] = true
	}
	delete(targets, n.HTTPAddr())
	var wg sync.WaitGroup
	for t := range targets {
		wg.Add(1)
		go func() { defer wg.Done(); n.post(ctx, "http://"+t+"/internal/ring-changed") }()
	}
	wg.Wait()
}

// handleJoin makes this node join the ring of the node at via (a Chord
// address), as add_node asks.
func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	via := r.URL.Query().Get("via")
	ref, err := n.rpc.CallRef(r.Context(), via, "get_info")
	if err != nil {
		n.fail(w, "join", statusf(http.StatusBadGateway, "reach %s: %v", via, err))
		return
	}
	if err := n.ring.Join(r.Context(), ref); err != nil {
		n.fail(w, "join", statusf(http.StatusConflict, "%v", err))
		return
	}
	n.RefreshRing()
	n.Kick()
	w.WriteHeader(http.StatusNoContent)
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
		n.fail(w, "lock", statusf(http.StatusConflict, "another membership change is in progress (by %s)", n.lock.holder))
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
	ms := n.kv.ring.Load().members
	keeper := ms[0].addrs["http"]
	holder := fmt.Sprintf("%s@%d", n.HTTPAddr(), time.Now().UnixNano())
	q := "?holder=" + url.QueryEscape(holder)
	if err := n.post(ctx, "http://"+keeper+"/internal/lock"+q); err != nil {
		return statusf(http.StatusConflict, "membership lock: %v", err)
	}
	defer func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodDelete, "http://"+keeper+"/internal/lock"+q, nil)
		if resp, err := n.hc.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	return fn(ctx)
}

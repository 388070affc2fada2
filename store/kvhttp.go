package store

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"tide/kv"
	"tide/store/kvserver"
	"tide/store/status"
)

// kvRoutes adds the KV APIs: the Dynamo seed's routes, REST under /kv/,
// and the membership endpoints behind add_node, remove_node and
// POST /hash_ring (membership.go).
func (n *Node) kvRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /route", n.handleRoutePost)
	mux.HandleFunc("GET /route", n.handleRouteGet)
	mux.HandleFunc("GET /route_test", n.handleRouteTest)
	mux.HandleFunc("GET /add_node/{token}/{addr}", n.handleAddNode)
	mux.HandleFunc("POST /add_node/{token}/{addr}", n.handleAddNode)
	mux.HandleFunc("GET /remove_node/{addr}", n.handleRemoveNode)
	mux.HandleFunc("GET /hash_ring", n.handleHashRing)
	mux.HandleFunc("POST /hash_ring", n.handleSetRing)
	mux.HandleFunc("GET /clear_cache", n.handleClearCache)
	mux.HandleFunc("POST /clear_cache", n.handleClearCache)
	mux.HandleFunc("GET /internal/kv/ring", n.handleKVRing)
	mux.HandleFunc("POST /internal/standby", n.handleStandbyHello)
	mux.HandleFunc("GET /kv/{key...}", n.handleKVGet)
	mux.HandleFunc("POST /kv-wait", n.handleKVWait)
	mux.HandleFunc("GET /kv-marks", n.handleKVMarks)
	mux.HandleFunc("PUT /kv/{key...}", n.handleKVPut)
	mux.HandleFunc("DELETE /kv/{key...}", n.handleKVDelete)
	mux.HandleFunc("POST /kv/{key...}", n.handleKVOp)
	mux.HandleFunc("POST /internal/join", n.handleJoin)
	mux.HandleFunc("GET /internal/kv/scan", n.handleKVScan)
	mux.HandleFunc("GET /internal/kv/local", func(w http.ResponseWriter, r *http.Request) {
		rec, ok, err := n.eng.KV().Get([]byte(r.URL.Query().Get("key")))
		if err != nil || !ok || rec.Tomb {
			http.Error(w, "not held here", http.StatusNotFound)
			return
		}
		w.Header().Set("X-Tide-Version", strconv.FormatUint(rec.Version, 10))
		w.Write(rec.Value)
	})
	mux.HandleFunc("POST /internal/ring-changed", func(w http.ResponseWriter, r *http.Request) {
		// ?left=PEER: the member at that KV peer address left the ring
		// after handing its data off (see kvserver.Server.MemberLeft).
		if left := r.URL.Query().Get("left"); left != "" {
			if err := n.kv.MemberLeft(r.Context(), left); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
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
		n.fail(w, "route_post", status.Errorf(http.StatusBadRequest, "bad form: %v", err))
		return
	}
	if !r.PostForm.Has("key") {
		n.fail(w, "route_post", status.Errorf(http.StatusBadRequest, "missing form field key"))
		return
	}
	if _, err := n.kv.Put(r.Context(), []byte(r.PostForm.Get("key")), []byte(r.PostForm.Get("val")), 0); err != nil {
		n.fail(w, "route_post", kvStatus(err))
		return
	}
	n.ok("route_post", 200)
	text(w, 200, "OK")
}

// kvStatus maps a KV error to its HTTP status.
func kvStatus(err error) error {
	if _, ok := err.(*status.Error); ok {
		return err
	}
	return status.Errorf(http.StatusServiceUnavailable, "%v", err)
}

// handleRouteGet is the seed's fetch: the value, or N/A.
func (n *Node) handleRouteGet(w http.ResponseWriter, r *http.Request) {
	if !r.URL.Query().Has("key") {
		n.fail(w, "route_get", status.Errorf(http.StatusBadRequest, "missing query parameter key"))
		return
	}
	rec, found, err := n.kv.Get(r.Context(), []byte(r.URL.Query().Get("key")), 0)
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
		n.fail(w, "route_test", status.Errorf(http.StatusBadRequest, "missing query parameter key"))
		return
	}
	m, err := n.KVOwner([]byte(r.URL.Query().Get("key")))
	if err != nil {
		n.fail(w, "route_test", err)
		return
	}
	text(w, 200, m.addrs["http"])
}

// handleHashRing shows the ring as the seed did.
func (n *Node) handleHashRing(w http.ResponseWriter, r *http.Request) {
	ring := map[string]string{}
	keys := []uint32{}
	for _, m := range n.kvRing.Load().members {
		t := uint32(m.ref.ID)
		ring[strconv.FormatUint(uint64(t), 10)] = m.addrs["http"]
		keys = append(keys, t)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"ring": ring, "_sorted_keys": keys})
}

// quorumParam reads the ?w= or ?r= override: a count of replicas from 1
// to N (a quorum above N could never be met, and must not pass for one).
func (n *Node) quorumParam(r *http.Request, name string) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		return 0, status.Errorf(http.StatusBadRequest, "%s=%q: want a positive integer", name, s)
	}
	if v > n.cfg.KV.N {
		return 0, status.Errorf(http.StatusBadRequest, "%s=%d: above the %d replicas of each key (N)", name, v, n.cfg.KV.N)
	}
	return v, nil
}

// versionWait reads a GET's version=V and wait=DURATION: wait up to
// DURATION (at most a minute) for the read to return version V or newer.
func versionWait(r *http.Request) (uint64, time.Duration, error) {
	q := r.URL.Query()
	vs, ws := q.Get("version"), q.Get("wait")
	if vs == "" && ws == "" {
		return 0, 0, nil
	}
	v, err := strconv.ParseUint(vs, 10, 64)
	if err != nil || v == 0 {
		return 0, 0, status.Errorf(http.StatusBadRequest, "version=%q: want a version (X-Tide-Version of a write) with wait", vs)
	}
	d, err := time.ParseDuration(ws)
	if err != nil || d < 0 || d > kvserver.MaxWait {
		return 0, 0, status.Errorf(http.StatusBadRequest, "wait=%q: want a duration such as 5s, at most %s, with version", ws, kvserver.MaxWait)
	}
	return v, d, nil
}

func (n *Node) handleKVGet(w http.ResponseWriter, r *http.Request) {
	q, err := n.quorumParam(r, "r")
	if err != nil {
		n.fail(w, "kv_get", err)
		return
	}
	want, wait, err := versionWait(r)
	if err != nil {
		n.fail(w, "kv_get", err)
		return
	}
	var rec kv.Record
	var found bool
	if want > 0 && wait > 0 {
		rec, found, err = n.kv.GetAtLeast(r.Context(), []byte(r.PathValue("key")), q, want, wait)
	} else {
		rec, found, err = n.kv.Get(r.Context(), []byte(r.PathValue("key")), q)
	}
	if err != nil {
		n.fail(w, "kv_get", kvStatus(err))
		return
	}
	if rec.Version != 0 {
		w.Header().Set("X-Tide-Version", strconv.FormatUint(rec.Version, 10))
	}
	if !found {
		n.fail(w, "kv_get", status.Errorf(http.StatusNotFound, "key not found"))
		return
	}
	n.ok("kv_get", 200)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(rec.Value)
}

func (n *Node) handleKVPut(w http.ResponseWriter, r *http.Request) {
	q, err := n.quorumParam(r, "w")
	if err != nil {
		n.fail(w, "kv_put", err)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(n.cfg.KV.MaxValue)+1))
	if err != nil {
		n.fail(w, "kv_put", status.Errorf(http.StatusBadRequest, "read body: %v", err))
		return
	}
	expire, err := ttlParam(r)
	if err != nil {
		n.fail(w, "kv_put", err)
		return
	}
	key := []byte(r.PathValue("key"))
	if _, ok := r.URL.Query()["if-absent"]; ok {
		n.putIfAbsent(w, r, key, body, expire)
		return
	}
	v, err := n.kv.Write(r.Context(), kv.Record{Key: key, Value: body, Expire: expire}, q)
	if err != nil {
		n.fail(w, "kv_put", kvStatus(err))
		return
	}
	n.ok("kv_put", 204)
	w.Header().Set("X-Tide-Version", strconv.FormatUint(v, 10))
	n.setOrigin(w)
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) handleKVDelete(w http.ResponseWriter, r *http.Request) {
	q, err := n.quorumParam(r, "w")
	if err != nil {
		n.fail(w, "kv_delete", err)
		return
	}
	v, err := n.kv.Delete(r.Context(), []byte(r.PathValue("key")), q)
	if err != nil {
		n.fail(w, "kv_delete", kvStatus(err))
		return
	}
	n.ok("kv_delete", 204)
	w.Header().Set("X-Tide-Version", strconv.FormatUint(v, 10))
	n.setOrigin(w)
	w.WriteHeader(http.StatusNoContent)
}

// setOrigin names, on the answer to a write this node coordinated, the
// node's incarnation in the replication watermarks it sends other
// regions (X-Tide-Origin; none without other regions): a reader in
// another region that passes it back with the version (POST /kv-wait)
// waits for the watermark instead of reading.
func (n *Node) setOrigin(w http.ResponseWriter) {
	if o := n.kv.Origin(); o != 0 {
		w.Header().Set("X-Tide-Origin", strconv.FormatUint(o, 10))
	}
}

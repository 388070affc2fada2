package store

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"tide/kv"
	"tide/store/kvserver"
	"tide/store/status"
)

// ttlParam reads ?ttl=DURATION, a deadline from now (0: none).
func ttlParam(r *http.Request) (uint64, error) {
	s := r.URL.Query().Get("ttl")
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, status.Errorf(http.StatusBadRequest, "ttl=%q: want a positive duration such as 10s or 1h", s)
	}
	return uint64(time.Now().Add(d).UnixNano()), nil
}

// putIfAbsent is PUT /kv/KEY?if-absent: a lightweight transaction that
// writes only if the key holds nothing (204), else 412 with the value held.
func (n *Node) putIfAbsent(w http.ResponseWriter, r *http.Request, key, body []byte, expire uint64) {
	m, err := n.kv.Cas(r.Context(), key, kv.OpSetArgs(body, "nx", expire, false))
	if err != nil {
		n.fail(w, "kv_put", kvStatus(err))
		return
	}
	if !m.Found {
		n.fail(w, "kv_put", status.Errorf(http.StatusPreconditionFailed, "key exists"))
		return
	}
	n.ok("kv_put", 204)
	w.Header().Set("X-Tide-Version", strconv.FormatUint(m.Rec.Version, 10))
	w.WriteHeader(http.StatusNoContent)
}

// handleKVOp serves POST /kv/KEY/incr?by=N (default 1): the key's
// counter, incremented linearizably; the answer is the new value.
func (n *Node) handleKVOp(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("key")
	key, ok := strings.CutSuffix(path, "/incr")
	if !ok || key == "" {
		n.fail(w, "kv_op", status.Errorf(http.StatusNotFound, "POST /kv/KEY/incr is the only operation"))
		return
	}
	by := r.URL.Query().Get("by")
	if by == "" {
		by = "1"
	}
	if _, err := strconv.ParseInt(by, 10, 64); err != nil {
		n.fail(w, "kv_op", status.Errorf(http.StatusBadRequest, "by=%q: want a 64-bit integer", by))
		return
	}
	m, err := n.kv.Cas(r.Context(), []byte(key), kv.Op{[]byte(kv.OpIncrBy), []byte(by)})
	if kvserver.IsOpError(err) {
		n.fail(w, "kv_op", status.Errorf(http.StatusConflict, "%v", err))
		return
	}
	if err != nil {
		n.fail(w, "kv_op", kvStatus(err))
		return
	}
	n.ok("kv_op", 200)
	w.Header().Set("X-Tide-Version", strconv.FormatUint(m.Rec.Version, 10))
	w.Write(m.Rec.Value)
}

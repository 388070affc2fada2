package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/pprof"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tide/chord"
	"tide/store/engine"
	"tide/store/status"
)

// hdrForwarded marks a request one node sent another, so that the receiver
// acts on it itself instead of routing it again.
const hdrForwarded = "X-Tide-Forwarded"

func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upload", n.handleUpload)
	mux.HandleFunc("PUT /upload", n.handleUpload)
	mux.HandleFunc("GET /files", n.handleList)
	mux.HandleFunc("GET /files/{name...}", n.handleGet)
	mux.HandleFunc("PUT /files/{name...}", n.handlePut)
	mux.HandleFunc("DELETE /files/{name...}", n.handleDelete)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /internal/info", n.handleInfo)
	mux.HandleFunc("GET /internal/file/{name...}", n.handleReplicaGet)
	mux.HandleFunc("PUT /internal/file/{name...}", n.handleReplicaPut)
	mux.HandleFunc("DELETE /internal/file/{name...}", n.handleReplicaDelete)
	mux.HandleFunc("POST /internal/have", n.handleHave)
	mux.HandleFunc("POST /internal/leave", n.handleLeave)
	n.kvRoutes(mux)
	mux.HandleFunc("GET /{name...}", n.handleGet)
	return n.timeFiles(mux)
}

// timeFiles observes the duration of the file service's client requests
// (KV requests are timed where they are coordinated; internal, metrics
// and health requests are not client requests).
func (n *Node) timeFiles(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if r.Header.Get(hdrForwarded) != "" || strings.HasPrefix(p, "/internal/") || strings.HasPrefix(p, "/kv/") ||
			strings.HasPrefix(p, "/debug/") || p == "/metrics" || p == "/healthz" || p == "/route" || p == "/route_test" ||
			p == "/hash_ring" || strings.HasPrefix(p, "/add_node/") || strings.HasPrefix(p, "/remove_node/") || p == "/clear_cache" {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		h.ServeHTTP(w, r)
		n.m.fileLatency.Observe(time.Since(start).Seconds())
	})
}

// ValidName reports why a file name is unacceptable, or nil. Names are
// single path elements: no slashes, no NUL or control characters, not "."
// or "..", valid UTF-8, at most 255 bytes.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case len(name) > 255:
		return fmt.Errorf("file name longer than 255 bytes")
	case name == "." || name == "..":
		return fmt.Errorf("file name %q is not allowed", name)
	case strings.ContainsAny(name, "/\\"):
		return fmt.Errorf("file name %q contains a path separator", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("file name is not valid UTF-8")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("file name contains control character %#x", r)
		}
	}
	return nil
}

func (n *Node) fail(w http.ResponseWriter, op string, err error) {
	code := http.StatusInternalServerError
	var se *status.Error
	if errors.As(err, &se) {
		code = se.Code
	} else if errors.Is(err, engine.ErrNotFound) {
		code = http.StatusNotFound
	}
	n.m.requests.WithLabelValues(op, strconv.Itoa(code)).Inc()
	if code >= 500 {
		n.log.Warn("request failed", "op", op, "code", code, "err", err)
	}
	http.Error(w, err.Error(), code)
}

func (n *Node) ok(op string, code int) {
	n.m.requests.WithLabelValues(op, strconv.Itoa(code)).Inc()
}

// handleUpload takes uploadserver's multipart form: field "files", which may
// repeat. Each file is stored as it streams in; a body cut short keeps the
// files that arrived whole and discards the partial one.
func (n *Node) handleUpload(w http.ResponseWriter, r *http.Request) {
	mr, err := r.MultipartReader()
	if err != nil {
		n.fail(w, "upload", status.Errorf(http.StatusBadRequest, "expected a multipart/form-data body with field \"files\": %v", err))
		return
	}
	stored := 0
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			n.fail(w, "upload", status.Errorf(http.StatusBadRequest, "malformed multipart body after %d file(s): %v", stored, err))
			return
		}
		if part.FormName() != "files" {
			part.Close()
			continue
		}
		name, err := partFileName(part.Header.Get("Content-Disposition"))
		if err == nil {
			err = ValidName(name)
		}
		if err != nil {
			n.fail(w, "upload", status.Errorf(http.StatusBadRequest, "%v", err))
			return
		}
		if _, err := n.Put(r.Context(), name, part, -1, false); err != nil {
			n.fail(w, "upload", err)
			return
		}
		stored++
	}
	if stored == 0 {
		n.fail(w, "upload", status.Errorf(http.StatusBadRequest, "no \"files\" field in the form"))
		return
	}
	n.ok("upload", http.StatusNoContent)
	w.WriteHeader(http.StatusNoContent)
}

// partFileName reads the raw filename parameter. Go's Part.FileName strips
// directories silently; tide rejects such names instead.
func partFileName(disposition string) (string, error) {
	_, params, err := mime.ParseMediaType(disposition)
	if err != nil {
		return "", fmt.Errorf("bad Content-Disposition: %v", err)
	}
	name, ok := params["filename"]
	if !ok {
		return "", errors.New("file part has no filename")
	}
	return name, nil
}

func (n *Node) handlePut(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := ValidName(name); err != nil {
		n.fail(w, "put", status.Errorf(http.StatusBadRequest, "%v", err))
		return
	}
	m, err := n.Put(r.Context(), name, r.Body, r.ContentLength, r.Header.Get(hdrForwarded) != "")
	if err != nil {
		n.fail(w, "put", err)
		return
	}
	n.ok("put", http.StatusCreated)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(m)
}

func (n *Node) handleDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := ValidName(name); err != nil {
		n.fail(w, "delete", status.Errorf(http.StatusBadRequest, "%v", err))
		return
	}
	if err := n.Delete(r.Context(), name, r.Header.Get(hdrForwarded) != ""); err != nil {
		n.fail(w, "delete", err)
		return
	}
	n.ok("delete", http.StatusNoContent)
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) handleGet(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == "" {
		n.handleList(w, r)
		return
	}
	if err := ValidName(name); err != nil {
		n.fail(w, "get", status.Errorf(http.StatusBadRequest, "%v", err))
		return
	}
	if err := n.Get(r.Context(), w, r, name); err != nil {
		n.fail(w, "get", err)
		return
	}
	n.ok("get", http.StatusOK)
}

// handleList lists the files of the whole ring, or with ?local=1 only the
// copies held by this node (including tombstones, for repair).
func (n *Node) handleList(w http.ResponseWriter, r *http.Request) {
	var list []engine.Meta
	var err error
	if r.URL.Query().Get("local") != "" {
		err = n.eng.Scan(0, 0, func(m engine.Meta) bool { list = append(list, m); return true })
	} else {
		list, err = n.List(r.Context())
	}
	if err != nil {
		n.fail(w, "list", err)
		return
	}
	if list == nil {
		list = []engine.Meta{}
	}
	n.ok("list", http.StatusOK)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(list)
}

// Info is a node's report of itself, served at /internal/info and shown by
// `tide ring`.
type Info struct {
	ID          uint32   `json:"id"`
	ChordAddr   string   `json:"chord_addr"`
	HTTPAddr    string   `json:"http_addr"`
	Predecessor string   `json:"predecessor"`
	Successors  []string `json:"successors"`
	Files       int64    `json:"files"`
	Bytes       int64    `json:"bytes"`
	DiskUsed    int64    `json:"disk_used_bytes"`
	DiskCap     int64    `json:"disk_capacity_bytes"`
	DiskPercent float64  `json:"disk_used_percent"`
	Replicas    int      `json:"replicas"`
	Leaving     bool     `json:"leaving"`
	// State is member, leaving, standby (out of the ring, following it)
	// or idle (out of any ring, knowing none).
	State   string `json:"state"`
	KVKeys  int    `json:"kv_keys"`
	KVBytes int64  `json:"kv_bytes"`
	KVHints int    `json:"kv_hints"`
	// RESPAddr is where the node serves the Redis protocol (empty: off);
	// PeerAddr where it takes KV replication traffic.
	RESPAddr string `json:"resp_addr,omitempty"`
	PeerAddr string `json:"peer_addr,omitempty"`
}

// Info reports this node's state.
func (n *Node) Info() Info {
	snap := n.ring.Snapshot()
	used, capacity := n.Disk()
	in := Info{
		ID: uint32(snap.Self.ID), ChordAddr: snap.Self.Addr(), HTTPAddr: n.HTTPAddr(),
		Files: n.eng.Files(), Bytes: n.eng.Used(), DiskUsed: used, DiskCap: capacity,
		Replicas: n.cfg.Replicas, Leaving: n.leaving.Load(), State: n.state(),
	}
	in.KVKeys, in.KVBytes = n.eng.KVCount()
	in.KVHints = n.eng.HintCount()
	in.RESPAddr, in.PeerAddr = n.respAddr, n.peerAddr
	if capacity > 0 {
		in.DiskPercent = 100 * float64(used) / float64(capacity)
	}
	if !snap.Pred.IsZero() {
		in.Predecessor = snap.Pred.Addr()
	}
	for _, s := range snap.Successors {
		in.Successors = append(in.Successors, s.Addr())
	}
	return in
}

func (n *Node) handleInfo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(n.Info())
}

func (n *Node) handleReplicaGet(w http.ResponseWriter, r *http.Request) {
	m, f, err := n.eng.Open(r.PathValue("name"))
	if err != nil {
		n.fail(w, "replica_get", err)
		return
	}
	defer f.Close()
	setFileHeaders(w, m)
	if r.Method != http.MethodHead {
		io.Copy(w, f)
	}
}

func setFileHeaders(w http.ResponseWriter, m engine.Meta) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(m.Size, 10))
	w.Header().Set("X-Tide-Version", strconv.FormatUint(m.Version, 10))
	w.Header().Set("ETag", `"`+m.MD5+`"`)
}

func versionParam(r *http.Request) (uint64, error) {
	v, err := strconv.ParseUint(r.URL.Query().Get("version"), 10, 64)
	if err != nil || v == 0 {
		return 0, status.Errorf(http.StatusBadRequest, "missing or bad version")
	}
	return v, nil
}

func (n *Node) handleReplicaPut(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	v, err := versionParam(r)
	if err == nil {
		err = ValidName(name)
	}
	if err != nil {
		n.fail(w, "replica_put", status.Errorf(http.StatusBadRequest, "%v", err))
		return
	}
	n.clock.Observe(v)
	if _, err := n.store(name, r.Body, r.ContentLength, v); err != nil {
		n.fail(w, "replica_put", err)
		return
	}
	n.ok("replica_put", http.StatusNoContent)
	w.WriteHeader(http.StatusNoContent)
}

func (n *Node) handleReplicaDelete(w http.ResponseWriter, r *http.Request) {
	v, err := versionParam(r)
	if err != nil {
		n.fail(w, "replica_delete", err)
		return
	}
	n.clock.Observe(v)
	if _, err := n.eng.Delete(r.PathValue("name"), v); err != nil {
		n.fail(w, "replica_delete", err)
		return
	}
	n.ok("replica_delete", http.StatusNoContent)
	w.WriteHeader(http.StatusNoContent)
}

// haveEntry is one line of a /internal/have exchange.
type haveEntry struct {
	Name    string `json:"n"`
	Version uint64 `json:"v"`
}

// handleHave answers which of the listed versions this node lacks.
func (n *Node) handleHave(w http.ResponseWriter, r *http.Request) {
	var in []haveEntry
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&in); err != nil {
		n.fail(w, "have", status.Errorf(http.StatusBadRequest, "bad have list: %v", err))
		return
	}
	lacking := []string{}
	for _, e := range in {
		m, ok, err := n.eng.Get(e.Name)
		if err != nil {
			n.fail(w, "have", err)
			return
		}
		if !ok || m.Version < e.Version {
			lacking = append(lacking, e.Name)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(lacking)
}

// handleLeave hands everything off and leaves the ring, then exits; with
// ?stay=1 (remove_node) the node stays up as a standby instead.
func (n *Node) handleLeave(w http.ResponseWriter, r *http.Request) {
	stay := r.URL.Query().Get("stay") != ""
	moved, err := n.Leave(r.Context(), stay)
	if err != nil {
		n.fail(w, "leave", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"moved": moved, "node": n.ring.Self().Addr(), "standby": stay})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if !stay {
		go n.stop()
	}
}

// fileURL builds the URL of name under prefix on a node's file service.
func fileURL(httpAddr, prefix, name string) string {
	return "http://" + httpAddr + prefix + url.PathEscape(name)
}

// List merges the local listings of every ring member, walking successors.
func (n *Node) List(ctx context.Context) ([]engine.Meta, error) {
	byName := map[string]engine.Meta{}
	cur := n.ring.Self()
	if !n.ring.InRing() {
		// A standby lists the ring it follows.
		for _, via := range n.following() {
			if ref, err := n.rpc.CallRef(ctx, via, "get_info"); err == nil {
				cur = ref
				break
			}
		}
	}
	seen := map[chord.Ref]bool{}
	for range 4096 {
		if seen[cur] {
			break
		}
		seen[cur] = true
		addr, err := n.httpAddrOf(ctx, cur)
		if err == nil {
			var local []engine.Meta
			if err = getJSON(ctx, n.hc, "http://"+addr+"/files?local=1", &local); err == nil {
				for _, m := range local {
					if old, ok := byName[m.Name]; !ok || m.Version > old.Version {
						byName[m.Name] = m
					}
				}
			}
		}
		if err != nil {
			n.log.Debug("list: skipping unreachable node", "node", cur.String(), "err", err)
		}
		next, err := n.rpc.CallRef(ctx, cur.Addr(), "get_successor", 0)
		if err != nil || next.IsZero() {
			break
		}
		cur = next
	}
	out := make([]engine.Meta, 0, len(byName))
	for _, m := range byName {
		if !m.Deleted {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b engine.Meta) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// getJSON GETs u and decodes its JSON body into v.
func getJSON(ctx context.Context, hc *http.Client, u string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

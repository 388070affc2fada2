package files

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"tide/chord"
	"tide/store/engine"
	"tide/store/status"
)

// HdrForwarded marks a request one node sent another, so that the receiver
// acts on it itself instead of routing it again.
const HdrForwarded = "X-Tide-Forwarded"

// HdrServedBy names, on a file download, the node whose copy was sent
// (its Chord address): a read through one node may be served from
// another's copy, and a wrong answer is traced to the copy that gave it.
const HdrServedBy = "X-Tide-Served-By"

// Routes registers the file service's routes on mux: the seed's upload
// form and GET /NAME, the REST forms under /files/, and the internal
// routes replicas and repair passes use.
func (n *Service) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /upload", n.handleUpload)
	mux.HandleFunc("PUT /upload", n.handleUpload)
	mux.HandleFunc("GET /files", n.handleList)
	mux.HandleFunc("GET /files/{name...}", n.handleGet)
	mux.HandleFunc("PUT /files/{name...}", n.handlePut)
	mux.HandleFunc("DELETE /files/{name...}", n.handleDelete)
	mux.HandleFunc("GET /internal/file/{name...}", n.handleReplicaGet)
	mux.HandleFunc("PUT /internal/file/{name...}", n.handleReplicaPut)
	mux.HandleFunc("DELETE /internal/file/{name...}", n.handleReplicaDelete)
	mux.HandleFunc("POST /internal/have", n.handleHave)
	mux.HandleFunc("GET /{name...}", n.handleGet)
}

func (n *Service) fail(w http.ResponseWriter, op string, err error) { n.answer.Fail(w, op, err) }
func (n *Service) ok(op string, code int)                           { n.answer.OK(op, code) }

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

// handleUpload takes uploadserver's multipart form: field "files", which may
// repeat. Each file is stored as it streams in; a body cut short keeps the
// files that arrived whole and discards the partial one.
func (n *Service) handleUpload(w http.ResponseWriter, r *http.Request) {
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

func (n *Service) handlePut(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := ValidName(name); err != nil {
		n.fail(w, "put", status.Errorf(http.StatusBadRequest, "%v", err))
		return
	}
	var m engine.Meta
	owner, standIn, err := standInFrom(r)
	switch {
	case err != nil:
	case standIn:
		m, err = n.putStandIn(r.Context(), owner, name, r.Body, r.ContentLength)
	default:
		var notAfter uint64
		if h := r.Header.Get(HdrNotAfter); h != "" {
			if notAfter, err = strconv.ParseUint(h, 10, 64); err != nil {
				err = status.Errorf(http.StatusBadRequest, "%s %q: want Unix nanoseconds", HdrNotAfter, h)
				break
			}
		}
		m, err = n.put(r.Context(), name, r.Body, r.ContentLength, r.Header.Get(HdrForwarded) != "", notAfter)
	}
	if err != nil {
		var late *refusal
		if errors.As(err, &late) {
			w.Header().Set(HdrRefused, "1")
		}
		n.fail(w, "put", err)
		return
	}
	n.ok("put", http.StatusCreated)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(m)
}

// standInFrom reads whether a forwarded request asks its receiver to stand
// in for an owner (HdrStandIn), and for which.
func standInFrom(r *http.Request) (owner chord.Ref, standIn bool, err error) {
	h := r.Header.Get(HdrStandIn)
	if h == "" || r.Header.Get(HdrForwarded) == "" {
		return chord.Ref{}, false, nil
	}
	if owner, err = parseStandIn(h); err != nil {
		return chord.Ref{}, false, status.Errorf(http.StatusBadRequest, "%v", err)
	}
	return owner, true, nil
}

func (n *Service) handleDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := ValidName(name); err != nil {
		n.fail(w, "delete", status.Errorf(http.StatusBadRequest, "%v", err))
		return
	}
	owner, standIn, err := standInFrom(r)
	switch {
	case err != nil:
	case standIn:
		err = n.deleteStandIn(r.Context(), owner, name)
	default:
		err = n.Delete(r.Context(), name, r.Header.Get(HdrForwarded) != "")
	}
	if err != nil {
		n.fail(w, "delete", err)
		return
	}
	n.ok("delete", http.StatusNoContent)
	w.WriteHeader(http.StatusNoContent)
}

func (n *Service) handleGet(w http.ResponseWriter, r *http.Request) {
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
func (n *Service) handleList(w http.ResponseWriter, r *http.Request) {
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

func (n *Service) handleReplicaGet(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	// A Range asks for the rest of a copy whose relay from another node
	// stopped part way (relay): "bytes=N-" of the copy If-Match names,
	// only.
	rg := r.Header.Get("Range")
	var m engine.Meta
	var f *os.File
	var err error
	var off int64
	if rg != "" {
		v, isBytes := strings.CutPrefix(rg, "bytes=")
		v, open := strings.CutSuffix(v, "-")
		off, err = strconv.ParseInt(v, 10, 64)
		if !isBytes || !open || err != nil || off < 0 {
			n.fail(w, "replica_get", status.Errorf(http.StatusBadRequest, "range %q: only bytes=N- is served", rg))
			return
		}
		m, f, err = n.openRest(name, r.Header.Get("If-Match"), off)
	} else {
		m, f, err = n.eng.Open(name)
	}
	if err != nil {
		if t, ok, _ := n.eng.Get(name); ok && t.Deleted {
			w.Header().Set(hdrDeleted, strconv.FormatUint(t.Version, 10))
		}
		n.fail(w, "replica_get", err)
		return
	}
	defer f.Close()
	n.setFileHeaders(w, m)
	code := http.StatusOK
	if rg != "" {
		w.Header().Set("Content-Length", strconv.FormatInt(m.Size-off, 10))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, m.Size-1, m.Size))
		code = http.StatusPartialContent
	}
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		io.Copy(w, f)
	}
}

func (n *Service) setFileHeaders(w http.ResponseWriter, m engine.Meta) {
	w.Header().Set(HdrServedBy, n.ring.Self().Addr())
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

func (n *Service) handleReplicaPut(w http.ResponseWriter, r *http.Request) {
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

func (n *Service) handleReplicaDelete(w http.ResponseWriter, r *http.Request) {
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
func (n *Service) handleHave(w http.ResponseWriter, r *http.Request) {
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

// fileURL builds the URL of name under prefix on a node's file service.
func fileURL(httpAddr, prefix, name string) string {
	return "http://" + httpAddr + prefix + url.PathEscape(name)
}

// List merges the local listings of every ring member, walking successors.
func (n *Service) List(ctx context.Context) ([]engine.Meta, error) {
	byName := map[string]engine.Meta{}
	cur := n.ring.Self()
	if !n.ring.InRing() {
		// A standby lists the ring it follows.
		for _, via := range n.cfg.Following() {
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
			if err = status.GetJSON(ctx, n.hc, "http://"+addr+"/files?local=1", &local); err == nil {
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

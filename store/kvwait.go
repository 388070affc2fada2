package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"tide/store/kvserver"
	"tide/store/status"
)

// POST /kv-wait?wait=D waits for many writes in one request: what an
// antipode barrier asks of its region (antipode/tideshim batches the
// waits of every barrier in flight into one such request). Each write is
// waited for as GET /kv/KEY?version=V&wait=D waits for it, and the
// answer streams a line per write as its wait ends, in the order they
// end, so that one slow write holds up no other.
//
// Request body, one line per write: the version, a space, the key
// escaped as a URL path segment (url.PathEscape), and optionally a space
// and the write's origin (X-Tide-Origin of its answer, decimal), "\n".
//
//	1733149573281738752 post-17
//	1733149573281739008 post-18 9121357740123415823
//
// A write with an origin is waited for by the origin's replication
// watermark in this region (kv/regions.go): once it passes the version,
// a read at the region's quorum returns the write, and the answer says
// so with no read. Only when this node has no mark of the origin, or its
// mark stands still for a few seconds, does the wait read as one without
// an origin does.
//
// Answer (200, text/plain), one line per write of the request, by its
// index there (from 0):
//
//	ok 0 1733149573281738752   a read at the region's quorum returned this version, at or above the one asked for
//	no 1 1733149570000000000   the wait passed; the last read returned this version (0: none)
//	err 2 some message         the read failed
//
// A write the answer does not list (it ended early) was not seen.

// maxWaitWrites bounds the writes one /kv-wait request may list.
const maxWaitWrites = 4096

// maxWaitBody bounds a /kv-wait request's body.
const maxWaitBody = 8 << 20

// waitedWrite is one line of a /kv-wait request.
type waitedWrite struct {
	key     []byte
	version uint64
	origin  uint64 // 0: none given
}

// parseWaits reads a /kv-wait request body.
func parseWaits(body []byte) ([]waitedWrite, error) {
	var out []waitedWrite
	for line := range bytes.Lines(body) {
		s, ok := bytes.CutSuffix(line, []byte("\n"))
		if !ok {
			return nil, fmt.Errorf("line %d: no newline at its end", len(out)+1)
		}
		vs, ks, ok := bytes.Cut(s, []byte(" "))
		if !ok {
			return nil, fmt.Errorf("line %d: want VERSION KEY", len(out)+1)
		}
		v, err := strconv.ParseUint(string(vs), 10, 64)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("line %d: version %q: want a write's version (X-Tide-Version)", len(out)+1, vs)
		}
		var origin uint64
		ks, os, hasOrigin := bytes.Cut(ks, []byte(" "))
		if hasOrigin {
			if origin, err = strconv.ParseUint(string(os), 10, 64); err != nil || origin == 0 {
				return nil, fmt.Errorf("line %d: origin %q: want the write's origin (X-Tide-Origin)", len(out)+1, os)
			}
		}
		key, err := url.PathUnescape(string(ks))
		if err != nil || key == "" {
			return nil, fmt.Errorf("line %d: key %q: want a non-empty key escaped as a URL path segment", len(out)+1, ks)
		}
		if len(out) == maxWaitWrites {
			return nil, fmt.Errorf("more than %d writes", maxWaitWrites)
		}
		out = append(out, waitedWrite{key: []byte(key), version: v, origin: origin})
	}
	if len(out) == 0 {
		return nil, errors.New("no write listed")
	}
	return out, nil
}

// waitResult is how one write's wait ended.
type waitResult struct {
	i   int
	v   uint64 // the version the last read returned
	ok  bool
	err error
}

func (n *Node) handleKVWait(w http.ResponseWriter, r *http.Request) {
	q, err := n.quorumParam(r, "r")
	if err != nil {
		n.fail(w, "kv_wait", err)
		return
	}
	ws := r.URL.Query().Get("wait")
	wait, err := time.ParseDuration(ws)
	if err != nil || wait < 0 || wait > kvserver.MaxWait {
		n.fail(w, "kv_wait", status.Errorf(http.StatusBadRequest, "wait=%q: want a duration such as 5s, at most %s", ws, kvserver.MaxWait))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxWaitBody+1))
	if err != nil {
		n.fail(w, "kv_wait", status.Errorf(http.StatusBadRequest, "read body: %v", err))
		return
	}
	if len(body) > maxWaitBody {
		n.fail(w, "kv_wait", status.Errorf(http.StatusRequestEntityTooLarge, "kv-wait: body over %d bytes", maxWaitBody))
		return
	}
	writes, err := parseWaits(body)
	if err != nil {
		n.fail(w, "kv_wait", status.Errorf(http.StatusBadRequest, "kv-wait: %v", err))
		return
	}
	ctx := r.Context()
	byMark, byRead := n.m.waits.WithLabelValues("mark"), n.m.waits.WithLabelValues("read")
	results := make(chan waitResult, len(writes))
	read := func(i int, wr waitedWrite, kw *kvserver.Wait, wait time.Duration) {
		byRead.Inc()
		go func() {
			rec, _, err := kw.Result(ctx, q, wait)
			results <- waitResult{i: i, v: rec.Version, ok: err == nil && rec.Version >= wr.version, err: err}
		}()
	}
	// marks are the waits for a watermark, by index: each fires into
	// results, with no goroutine of its own.
	marks := map[int]kvserver.MarkWait{}
	defer func() {
		for _, mw := range marks {
			n.kv.CancelMarkWait(mw)
		}
	}()
	for i, wr := range writes {
		if wr.origin != 0 {
			mw, passed, known := n.kv.AddMarkWait(wr.origin, wr.version, func() {
				results <- waitResult{i: i, v: wr.version, ok: true}
			})
			switch {
			case passed:
				byMark.Inc()
				results <- waitResult{i: i, v: wr.version, ok: true}
				continue
			case known:
				marks[i] = mw
				continue
			}
		}
		read(i, wr, n.kv.StartWait(wr.key, wr.version), wait) // here: see Wait
	}
	deadline := time.Now().Add(wait)
	var check <-chan time.Time
	if len(marks) > 0 {
		t := time.NewTicker(min(time.Second, max(wait, 10*time.Millisecond)))
		defer t.Stop()
		check = t.C
	}
	// The header goes at once: the client sends its next batch once it
	// has it.
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	bw := bufio.NewWriter(w)
	for range writes {
		var res waitResult
	next:
		for {
			select {
			case res = <-results:
				break next
			case now := <-check:
				// A mark that stands still, or the end of the wait: read.
				for i, mw := range marks {
					if (now.After(deadline) || n.kv.MarkStale(mw)) && n.kv.CancelMarkWait(mw) {
						delete(marks, i)
						read(i, writes[i], n.kv.StartWait(writes[i].key, writes[i].version), max(0, time.Until(deadline)))
					}
				}
			case <-ctx.Done():
				return // the client is gone
			}
		}
		if _, ok := marks[res.i]; ok && res.ok && res.err == nil {
			delete(marks, res.i) // fired
			byMark.Inc()
		}
		switch {
		case res.ok:
			fmt.Fprintf(bw, "ok %d %d\n", res.i, res.v)
		case res.err != nil:
			fmt.Fprintf(bw, "err %d %s\n", res.i, strings.ReplaceAll(res.err.Error(), "\n", " "))
		default:
			fmt.Fprintf(bw, "no %d %d\n", res.i, res.v)
		}
		if len(results) == 0 {
			// Lines that end together go in one write.
			if bw.Flush() != nil || rc.Flush() != nil {
				break // the client is gone; ctx ends the waits
			}
		}
	}
	bw.Flush()
	n.ok("kv_wait", 200)
}

// GET /kv-marks?wait=D streams this node's replication watermarks of
// the other regions' nodes (kv/regions.go), for D (at most MaxWait): a
// line per origin as its mark rises, "ORIGIN VERSION\n" in decimal, every
// mark known at the start first, then an empty line. A mark says that a read at this region's
// quorum returns every write its origin coordinated up to VERSION, so a
// reader that follows the stream waits for such a write (its
// X-Tide-Origin and X-Tide-Version) with no request of its own
// (antipode/tideshim does). Rises within markLinger of one another go in
// one write. The stream ends after D; the client asks again.
func (n *Node) handleKVMarks(w http.ResponseWriter, r *http.Request) {
	ws := r.URL.Query().Get("wait")
	wait, err := time.ParseDuration(ws)
	if err != nil || wait <= 0 || wait > kvserver.MaxWait {
		n.fail(w, "kv_marks", status.Errorf(http.StatusBadRequest, "wait=%q: want a duration such as 10s, at most %s", ws, kvserver.MaxWait))
		return
	}
	rose, stop := n.kv.SubscribeMarks()
	defer stop()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	bw := bufio.NewWriter(w)
	sent := map[uint64]uint64{}
	line := func(o, v uint64) {
		bw.WriteString(strconv.FormatUint(o, 10))
		bw.WriteByte(' ')
		bw.WriteString(strconv.FormatUint(v, 10))
		bw.WriteByte('\n')
	}
	end := time.NewTimer(wait)
	defer end.Stop()
	for first := true; ; first = false {
		n.kv.Marks(sent, line)
		if first {
			bw.WriteByte('\n') // every mark known at the start has gone
		}
		if bw.Flush() != nil || rc.Flush() != nil {
			return // the client is gone
		}
		select {
		case <-rose:
		case <-end.C:
			n.ok("kv_marks", 200)
			return
		case <-r.Context().Done():
			return
		}
		time.Sleep(markLinger)
	}
}

// markLinger is how long a mark stream waits after a rise for others to
// send with it.
const markLinger = time.Millisecond

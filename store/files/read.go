package files

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"tide/chord"
	"tide/store/engine"
	"tide/store/status"
)

// Reads. Put acknowledges an upload once a majority of its owner's
// replica set holds it, the owner among them (W = N/2+1 of N). A read
// compares versions across enough of the set to meet every such
// majority, and serves the newest:
//
//   - the owner asks N-W of its replicas (1 of 2 for N = 3) for their
//     versions while it looks up its own, and serves a replica's copy
//     when it is newer: an owner that has just taken over a range, or
//     one that was cut off while another node took uploads, may hold an
//     older copy than an acknowledged one;
//   - any other node forwards the read to the owner; if the owner has
//     not answered within hedgeAfter, it also asks the rest of the
//     owner's set, N-W+1 of them, for the newest they hold, and serves
//     whichever answer comes first. An owner that gives no answer within
//     ownerAnswerTimeout, or is silent to a ping once it has not answered
//     within silentAfter (dead, cut off, paused), is passed over for the
//     next suspectFor: reads ask the rest of its set at once.
//
// A replica whose copy is a tombstone says so in a 404's X-Tide-Deleted
// header, with the deletion's version, so that a delete newer than a
// copy elsewhere wins.

var (
	// peerAnswerTimeout bounds the wait for replicas' versions.
	peerAnswerTimeout = time.Second
	// ownerAnswerTimeout bounds a non-owner's wait for the owner's answer
	// (its headers) before it reads from the owner's replicas. It leaves
	// the owner time to hear from its own replicas.
	ownerAnswerTimeout = 3 * time.Second
	// copyAnswerTimeout bounds the wait for the headers of a copy a node
	// said it held moments before: it may have frozen since (paused,
	// cut off), and the read then fails clearly rather than waiting for
	// the transport's ResponseHeaderTimeout, beyond most clients' own.
	copyAnswerTimeout = 3 * time.Second
)

// answerGrace is how long a read waits for the rest of the replicas
// once enough have answered. N-W answers meet every majority of the
// current replica set, but not one of a set that has just changed: a
// new member, given the owner's older copy by repair, answers as well
// as one that holds the newer copy the old set acknowledged. Every
// replica that is up answers within milliseconds, so a read hears from
// them all; one that is down or paused costs a read this much.
const answerGrace = 100 * time.Millisecond

// hdrDeleted carries a tombstone's version on a replica's 404.
const hdrDeleted = "X-Tide-Deleted"

// copyVersion is what one node holds of a file: version 0 for nothing.
type copyVersion struct {
	ref     chord.Ref
	version uint64
	live    bool // a file, not a tombstone
}

// Get writes the file name to w: through the owner, or as the owner. A
// leaving node routes even a read forwarded to it, as it does uploads
// (put): those are stored by its successor with the successor's replica
// set, and the leaving node's own set may hold no copy they
// acknowledged.
func (n *Service) Get(ctx context.Context, w http.ResponseWriter, r *http.Request, name string) error {
	key := n.eng.KeyOf(name)
	if r.Header.Get(HdrForwarded) == "" || n.cfg.Leaving() {
		owner, err := n.owner(ctx, key)
		if err != nil {
			return err
		}
		if owner != n.ring.Self() {
			return n.proxyGet(ctx, w, r, owner, name)
		}
	}
	if err := n.acting(ctx); err != nil {
		return err
	}
	return n.ownerGet(ctx, w, r, name)
}

// ownerGet serves the newest copy among this node's and N-W of its
// replicas'.
func (n *Service) ownerGet(ctx context.Context, w http.ResponseWriter, r *http.Request, name string) error {
	self := n.ring.Self()
	local, ok := n.versionAt(ctx, self, name)
	if !ok {
		return status.Errorf(http.StatusInternalServerError, "read the metadata of %q", name)
	}
	best := local
	set := n.localReplicaSet()
	alone := len(set) == 1
	if alone {
		// A node that knows no successor acts as an owner only once the
		// members it lost touch with were found down or out of any ring
		// (acting, cutOff): a verdict that stands for a second. One that
		// has come back since may hold newer copies, so they are asked
		// too; in a ring of one there are none, and those still gone
		// refuse at once.
		for _, c := range slices.Backward(n.ring.Contacts()) {
			if len(set) < n.cfg.Replicas {
				set = append(set, c)
			}
		}
	}
	// A set shorter than N (a node that has just joined knows its first
	// successor alone, for a moment) is still asked N-W of its members:
	// the first successor is the node the range came from.
	if need := min(n.cfg.Replicas-(n.cfg.Replicas/2+1), len(set)-1); need > 0 {
		pctx, cancel := context.WithTimeout(ctx, peerAnswerTimeout)
		answers := n.versionsAt(pctx, set[1:], name, need)
		cancel()
		known := 0
		for _, a := range answers {
			if a.version > 0 {
				known++
			}
			if a.version > best.version {
				best = a
			}
		}
		// A replica that holds neither a copy nor a tombstone was in no
		// majority that acknowledged an upload or delete: it may have
		// just joined the set (the majority then includes a node that
		// has left it). Its answer does not count. With too few answers
		// that do, a copy of this node's own may be older than an
		// acknowledged one (it was cut off, and the ring moved on).
		if known < need && len(answers) < len(set)-1 && local.version > 0 && best == local && !alone {
			return status.Errorf(http.StatusServiceUnavailable, "%q: %d of the %d other replicas answered, %d of them with a version; %d needed to be sure of the newest copy", name, len(answers), len(set)-1, known, need)
		}
	}
	if best.version > local.version {
		if !best.live {
			return engine.ErrNotFound
		}
		if n.tryGet(ctx, w, r, best.ref, name) {
			return nil
		}
		return status.Errorf(http.StatusServiceUnavailable, "%q: the newest copy (version %d, on %s) could not be read", name, best.version, best.ref)
	}
	if served, err := n.serveLocal(w, r, name); served || err != nil {
		return err
	}
	if local.version > 0 {
		return engine.ErrNotFound // a tombstone
	}
	// Nothing here: a transfer may be in flight from a successor beyond
	// the replicas asked (a previous owner, right after a join).
	for _, s := range n.fallbacks() {
		if n.tryGet(ctx, w, r, s, name) {
			return nil
		}
	}
	return engine.ErrNotFound
}

// serveLocal writes this node's live copy of name, reporting whether it
// had one.
func (n *Service) serveLocal(w http.ResponseWriter, r *http.Request, name string) (bool, error) {
	m, f, err := n.eng.Open(name)
	if errors.Is(err, engine.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	n.setFileHeaders(w, m)
	if r.Method != http.MethodHead {
		io.Copy(w, f)
	}
	return true, nil
}

// hedgeAfter is how long a read through a non-owner waits for the
// owner's answer before it also asks the owner's replicas, and serves
// whichever answer comes first. Both are the newest acknowledged copy:
// the owner compares its own with N-W replicas', and the replicas'
// path hears from N-W+1 of the rest, so each meets every majority an
// upload was acknowledged by. A paused or cut-off owner then costs a
// read this much and a round of HEADs, where waiting for the owner to be
// found silent costs silentAfter. An owner answers within
// milliseconds, or within answerGrace when one of its replicas is
// paused, so on a healthy ring the replicas are seldom asked.
const hedgeAfter = 150 * time.Millisecond

// source is a read's answer, not yet written: a 200 from another node
// (resp), this node's own copy (local), or err (engine.ErrNotFound, or
// why there is no answer).
type source struct {
	resp    *http.Response
	from    chord.Ref // the node that sent resp
	release func()    // closes resp and ends its request
	local   bool
	err     error
}

// conclusive reports whether s settles the read: a copy to serve, or a
// certain miss.
func (s source) conclusive() bool {
	return s.err == nil || errors.Is(s.err, engine.ErrNotFound)
}

// close gives the answer up unwritten.
func (s source) close() {
	if s.release != nil {
		s.release()
	}
}

// serve writes s to w.
func (n *Service) serve(w http.ResponseWriter, r *http.Request, name string, s source) error {
	defer s.close()
	switch {
	case s.resp != nil:
		n.relay(r.Context(), w, s.resp, name, s.from)
		return nil
	case s.local:
		served, err := n.serveLocal(w, r, name)
		if !served && err == nil {
			err = status.Errorf(http.StatusServiceUnavailable, "%q: this node's copy went away as it was about to be served", name)
		}
		return err
	}
	return s.err
}

// proxyGet asks the owner for name; if the owner has not answered within
// hedgeAfter, the rest of its replica set too (the first answer is
// served); if the owner has been silent moments ago, only the rest.
func (n *Service) proxyGet(ctx context.Context, w http.ResponseWriter, r *http.Request, owner chord.Ref, name string) error {
	// An owner that did not answer moments ago is passed over at once,
	// as uploads pass it over (standin.go).
	if n.suspect.has(owner) {
		return n.serve(w, r, name, n.replicaSource(ctx, r.Method, owner, name))
	}
	och := n.ownerSource(ctx, r.Method, owner, name)
	hedge := time.NewTimer(hedgeAfter)
	defer hedge.Stop()
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	var rch chan source
	var replicas source // an inconclusive answer of the replicas'
	for och != nil || rch != nil {
		select {
		case s := <-och:
			och = nil
			switch {
			case s.conclusive():
				if rch != nil {
					hcancel()
					go func() { (<-rch).close() }()
				}
				return n.serve(w, r, name, s)
			case rch == nil && replicas.err != nil:
				return replicas.err // neither answered
			case rch == nil:
				// The owner is silent before the hedge: the replicas alone.
				return n.serve(w, r, name, n.replicaSource(ctx, r.Method, owner, name))
			}
		case <-hedge.C:
			rch = make(chan source, 1)
			go func() { rch <- n.replicaSource(hctx, r.Method, owner, name) }()
		case s := <-rch:
			rch = nil
			if s.conclusive() || och == nil {
				if och != nil {
					// The owner's answer is still awaited, so that a
					// silent owner is found out; then given up.
					go func() { (<-och).close() }()
				}
				return n.serve(w, r, name, s)
			}
			replicas = s
		}
	}
	return replicas.err
}

// ownerSource asks the owner for name, and sends its answer (a 200, a
// miss, or none) on the channel returned. The wait outlives ctx, up to
// ownerAnswerTimeout, or until the owner is found silent (silenceGuard):
// a read the replicas answered still learns whether the owner is
// silent, and the next one passes it over at once.
func (n *Service) ownerSource(ctx context.Context, method string, owner chord.Ref, name string) chan source {
	ch := make(chan source, 1)
	go func() {
		gctx, answered, stop := n.silenceGuard(context.WithoutCancel(ctx), owner)
		resp, release := n.fetchWithin(gctx, method, owner, "/files/", name, http.Header{HdrForwarded: {"1"}}, ownerAnswerTimeout, answered)
		switch {
		case resp == nil:
			stop()
			n.suspect.add(owner)
			ch <- source{err: status.Errorf(http.StatusServiceUnavailable, "the owner of %q (%s) did not answer", name, owner)}
		case resp.StatusCode == http.StatusOK:
			ch <- source{resp: resp, from: owner, release: func() { release(); stop() }}
		case resp.StatusCode == http.StatusNotFound:
			release()
			stop()
			ch <- source{err: engine.ErrNotFound}
		default:
			// An owner that cannot serve the read (short of replicas'
			// answers, itself out of the ring) is passed over as one that
			// did not answer.
			release()
			stop()
			n.suspect.add(owner)
			ch <- source{err: status.Errorf(http.StatusServiceUnavailable, "the owner of %q (%s) answered %s", name, owner, resp.Status)}
		}
	}()
	return ch
}

// replicaSource finds the newest copy of name among the nodes after
// owner, without the owner, and opens it.
func (n *Service) replicaSource(ctx context.Context, method string, owner chord.Ref, name string) source {
	// Every node this one knows of is asked, not only those it takes for
	// the owner's replicas: a node's view of the ring may be a moment
	// old, and a copy newer than the replicas' is never wrong to serve.
	// Enough of the likely replicas must answer to meet every majority
	// that acknowledged an upload.
	nrep := n.cfg.Replicas
	need := nrep - (nrep/2 + 1) + 1
	cands := n.nodesAfter(owner)
	likely := likelyReplicas(n.ring.Self(), n.ring.Predecessor(), n.cfg.Leaving(), owner, cands, nrep-1)
	pctx, cancel := context.WithTimeout(ctx, peerAnswerTimeout)
	answers := n.versionsAt(pctx, cands, name, len(cands))
	cancel()
	got := 0
	for _, a := range answers {
		if containsRef(likely, a.ref) {
			got++
		}
	}
	if got < need {
		return source{err: status.Errorf(http.StatusServiceUnavailable, "the owner of %q (%s) did not answer, and %d of its %d other replicas did, %d needed to find the newest copy", name, owner, got, len(likely), need)}
	}
	var best copyVersion
	for _, a := range answers {
		if a.version > best.version {
			best = a
		}
	}
	if best.version == 0 {
		// Without the owner a miss is not certain: this node's view of
		// who follows it may be a moment old.
		return source{err: status.Errorf(http.StatusServiceUnavailable, "the owner of %q (%s) did not answer, and none of the %d other nodes asked holds a copy", name, owner, len(answers))}
	}
	if !best.live {
		return source{err: engine.ErrNotFound} // deleted, as a replica knows
	}
	if best.ref == n.ring.Self() {
		return source{local: true}
	}
	resp, release := n.fetchWithin(ctx, method, best.ref, "/internal/file/", name, nil, copyAnswerTimeout, nil)
	if resp != nil && resp.StatusCode == http.StatusOK {
		return source{resp: resp, from: best.ref, release: release}
	}
	if resp != nil {
		release()
	}
	return source{err: status.Errorf(http.StatusServiceUnavailable, "the owner of %q (%s) did not answer, and the newest copy (version %d, on %s) could not be read", name, owner, best.version, best.ref)}
}

// likelyReplicas returns the first k of cands, the nodes self knows
// ordered after owner, that may be in owner's replica set. Self is one
// only if it knows every node between owner and itself, and is not
// leaving. It knows them when its predecessor pred is owner, or one of
// the cands before it, or stands before owner (the ring has healed
// around a silent owner, and self took over its range); a predecessor
// lost to silence, most likely the silent owner, is given the benefit
// of the doubt. Its successor list holds N-1 nodes, so more may stand
// between the last of them and itself, and a leaving node is in no set
// that acknowledged an upload routed past it. Counting it anyway let a
// read take its copy, and one replica's, for a majority of the owner's
// set.
func likelyReplicas(self, pred chord.Ref, leaving bool, owner chord.Ref, cands []chord.Ref, k int) []chord.Ref {
	i := slices.Index(cands, self)
	selfOK := i >= 0 && !leaving && (pred.IsZero() || pred == owner ||
		slices.Contains(cands[:i], pred) || chord.Between(owner.ID, pred.ID, self.ID))
	out := make([]chord.Ref, 0, k)
	for _, c := range cands {
		if len(out) == k {
			break
		}
		if c != self || selfOK {
			out = append(out, c)
		}
	}
	return out
}

// nodesAfter returns the nodes this node knows of (itself and its
// successor list), but owner, in ring order from owner's position: the
// first N-1 are the owner's replicas as far as this node can tell.
func (n *Service) nodesAfter(owner chord.Ref) []chord.Ref {
	out := []chord.Ref{}
	for _, r := range append([]chord.Ref{n.ring.Self()}, n.ring.Successors()...) {
		if r != owner && !r.IsZero() && !containsRef(out, r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b chord.Ref) int {
		return cmp.Compare(uint32(a.ID-owner.ID), uint32(b.ID-owner.ID))
	})
	return out
}

// versionAt asks node t which version of name it holds; ok is false if
// it did not say.
func (n *Service) versionAt(ctx context.Context, t chord.Ref, name string) (copyVersion, bool) {
	if t == n.ring.Self() {
		m, ok, err := n.eng.Get(name)
		if err != nil {
			return copyVersion{}, false
		}
		if !ok {
			return copyVersion{ref: t}, true
		}
		return copyVersion{ref: t, version: m.Version, live: !m.Deleted}, true
	}
	addr, err := n.httpAddrOf(ctx, t)
	if err != nil {
		return copyVersion{}, false
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, fileURL(addr, "/internal/file/", name), nil)
	resp, err := n.hc.Do(req)
	if err != nil {
		return copyVersion{}, false
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		v, err := strconv.ParseUint(resp.Header.Get("X-Tide-Version"), 10, 64)
		if err != nil {
			return copyVersion{}, false
		}
		return copyVersion{ref: t, version: v, live: true}, true
	case http.StatusNotFound:
		v, _ := strconv.ParseUint(resp.Header.Get(hdrDeleted), 10, 64)
		return copyVersion{ref: t, version: v}, true
	}
	return copyVersion{}, false
}

// answerDelay, set by tests alone, delays the version answers of the
// replicas it names as every node of the process sees them.
var answerDelay atomic.Pointer[func(chord.Ref) time.Duration]

// DelayAnswersForTest makes every node of this process see the version
// answer of each replica d names come d(replica) late, so that a test
// fixes the order answers come in; nil undoes it. For tests only.
func DelayAnswersForTest(d func(chord.Ref) time.Duration) {
	if d == nil {
		answerDelay.Store(nil)
		return
	}
	answerDelay.Store(&d)
}

// versionsAt asks targets at once and returns the answers once all have
// answered or failed, or answerGrace after need of them have answered
// with a version (a copy or a tombstone).
func (n *Service) versionsAt(ctx context.Context, targets []chord.Ref, name string, need int) []copyVersion {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		c  copyVersion
		ok bool
	}
	ch := make(chan answer, len(targets))
	delay := answerDelay.Load()
	for _, t := range targets {
		go func() {
			if delay != nil {
				time.Sleep((*delay)(t))
			}
			c, ok := n.versionAt(ctx, t, name)
			ch <- answer{c, ok}
		}()
	}
	var out []copyVersion
	known := 0
	var grace <-chan time.Time
	for range targets {
		var a answer
		select {
		case a = <-ch:
		case <-grace:
			return out
		}
		if a.ok {
			out = append(out, a.c)
			if a.c.version > 0 {
				known++
			}
			if known >= need && grace == nil {
				t := time.NewTimer(answerGrace)
				defer t.Stop()
				grace = t.C
			}
		}
	}
	return out
}

// tryGet relays node t's copy of name, reporting whether it had one to
// send.
func (n *Service) tryGet(ctx context.Context, w http.ResponseWriter, r *http.Request, t chord.Ref, name string) bool {
	resp, release := n.fetchWithin(ctx, r.Method, t, "/internal/file/", name, nil, copyAnswerTimeout, nil)
	if resp == nil {
		return false
	}
	defer release()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	n.relay(ctx, w, resp, name, t)
	return true
}

// fetchWithin asks node t for name and returns its answer, headers read,
// and release, which closes it: resp is nil if t did not answer. A
// positive within bounds the wait for the headers; answered, if set, is
// called once they arrive (or the request failed). hdr is added to the
// request's headers.
func (n *Service) fetchWithin(ctx context.Context, method string, t chord.Ref, prefix, name string, hdr http.Header, within time.Duration, answered func()) (resp *http.Response, release func()) {
	addr, err := n.httpAddrOf(ctx, t)
	if err != nil {
		if answered != nil {
			answered()
		}
		return nil, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(ctx, method, fileURL(addr, prefix, name), nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	var timer *time.Timer
	if within > 0 {
		timer = time.AfterFunc(within, cancel)
	}
	resp, err = n.hc.Do(req)
	if answered != nil {
		answered()
	}
	if err == nil && ctx.Err() != nil {
		// Given up on as silent just before answering: its body would be
		// cut off.
		resp.Body.Close()
		err = ctx.Err()
	}
	if err == nil && timer != nil && !timer.Stop() {
		// No answer in time: the request is cancelled.
		resp.Body.Close()
		err = context.DeadlineExceeded
	}
	if err != nil {
		cancel()
		return nil, nil
	}
	return resp, func() { resp.Body.Close(); cancel() }
}

// relayStallTimeout is how long a relay waits for more of a copy from a
// sender that has stopped sending (paused, cut off mid-answer) before it
// takes the rest from another node holding the same copy, or ends the
// answer short when none does.
var relayStallTimeout = 2 * time.Second

// relay writes a 200 answer from node from to w. A sender that stops
// part way (no byte for relayStallTimeout, or a broken connection) is
// given up, and the rest is read from another node that holds the same
// copy (same ETag), from where the first stopped: the client sees one
// whole answer. With no such node the answer ends short of its
// Content-Length, an error the client sees at once, rather than a read
// that hangs until it gives up.
func (n *Service) relay(ctx context.Context, w http.ResponseWriter, resp *http.Response, name string, from chord.Ref) {
	for _, h := range []string{"Content-Type", "Content-Length", "X-Tide-Version", "ETag", HdrServedBy} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(http.StatusOK)
	total, etag := resp.ContentLength, resp.Header.Get("ETag")
	sent, stalled, werr := copyGuarded(w, resp.Body)
	tried := []chord.Ref{from}
	for werr == nil && sent < total && etag != "" {
		n.log.Warn("read: the node sending the file stopped; reading the rest elsewhere", "file", name, "from", tried[len(tried)-1].String(), "sent", sent, "of", total, "stalled", stalled)
		body, src, release := n.resume(ctx, name, etag, sent, &tried)
		if body == nil {
			break
		}
		var k int64
		k, stalled, werr = copyGuarded(w, body)
		release()
		sent += k
		n.m.resumed.Inc()
		n.log.Info("read: resumed from another copy", "file", name, "from", src.String(), "sent", sent, "of", total)
	}
	if werr == nil && sent < total {
		n.log.Warn("read: no node could send the rest of the file; answer cut short", "file", name, "sent", sent, "of", total, "asked", len(tried))
	}
}

// resume opens the rest of name's copy etag from offset off, on this
// node or another that holds it (not one in tried, to which the node
// asked is added).
func (n *Service) resume(ctx context.Context, name, etag string, off int64, tried *[]chord.Ref) (io.Reader, chord.Ref, func()) {
	for _, t := range n.nodesAfter(chord.Ref{}) {
		if containsRef(*tried, t) {
			continue
		}
		*tried = append(*tried, t)
		if t == n.ring.Self() {
			if _, f, err := n.openRest(name, etag, off); err == nil {
				return f, t, func() { f.Close() }
			}
			continue
		}
		resp, release := n.fetchWithin(ctx, http.MethodGet, t, "/internal/file/", name,
			http.Header{"Range": {"bytes=" + strconv.FormatInt(off, 10) + "-"}, "If-Match": {etag}}, copyAnswerTimeout, nil)
		if resp == nil {
			continue
		}
		if resp.StatusCode != http.StatusPartialContent {
			release()
			continue
		}
		return resp.Body, t, release
	}
	return nil, chord.Ref{}, nil
}

// openRest opens this node's copy of name at offset off, if it is the
// copy etag (an ETag: the MD5 in quotes) names and holds more than off
// bytes.
func (n *Service) openRest(name, etag string, off int64) (engine.Meta, *os.File, error) {
	m, f, err := n.eng.Open(name)
	if err != nil {
		return m, nil, err
	}
	switch {
	case `"`+m.MD5+`"` != etag:
		err = status.Errorf(http.StatusPreconditionFailed, "%q: this node holds another copy (%s)", name, m.MD5)
	case off >= m.Size:
		err = status.Errorf(http.StatusRequestedRangeNotSatisfiable, "%q: %d bytes, range from %d", name, m.Size, off)
	default:
		_, err = f.Seek(off, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return m, nil, err
	}
	return m, f, nil
}

// copyGuarded copies src to w until src ends, fails, or sends nothing
// for relayStallTimeout (stalled; src is then closed if it can be).
// werr is a failed write to w: the client has gone.
func copyGuarded(w io.Writer, src io.Reader) (sent int64, stalled bool, werr error) {
	var st atomic.Bool
	timer := time.AfterFunc(relayStallTimeout, func() {
		st.Store(true)
		if c, ok := src.(io.Closer); ok {
			c.Close()
		}
	})
	defer timer.Stop()
	buf := make([]byte, 64<<10)
	for {
		timer.Reset(relayStallTimeout)
		k, err := src.Read(buf)
		timer.Stop()
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return sent, false, werr
			}
			sent += int64(k)
		}
		if err != nil {
			return sent, st.Load(), nil
		}
	}
}

package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"tide/chord"
	"tide/store/engine"
	"tide/store/status"
)

// capWriter fails a write that would take the node past its capacity or
// the file past the size limit.
type capWriter struct {
	w        *engine.Writer
	n        *Service
	maxBytes int64
}

func (c *capWriter) Write(p []byte) (int, error) {
	if c.w.Size()+int64(len(p)) > c.maxBytes {
		return 0, status.Errorf(http.StatusRequestEntityTooLarge, "file larger than the limit of %d bytes", c.maxBytes)
	}
	if used, capacity := c.n.Disk(); capacity > 0 && used+c.w.Size()+int64(len(p)) > capacity {
		return 0, status.Errorf(http.StatusInsufficientStorage, "node %s is full: %d of %d bytes used", c.n.ring.Self().Addr(), used, capacity)
	}
	if err := c.n.eng.CheckSpace(int64(len(p))); err != nil {
		return 0, err
	}
	k, err := c.w.Write(p)
	if err != nil {
		return k, diskErr{err}
	}
	return k, nil
}

// store writes one version of a file to the local engine.
func (n *Service) store(name string, body io.Reader, size int64, version uint64) (engine.Meta, error) {
	if size > n.cfg.MaxFileSize {
		return engine.Meta{}, status.Errorf(http.StatusRequestEntityTooLarge, "file of %d bytes is larger than the limit of %d", size, n.cfg.MaxFileSize)
	}
	if used, capacity := n.Disk(); size > 0 && capacity > 0 && used+size > capacity {
		return engine.Meta{}, status.Errorf(http.StatusInsufficientStorage, "node %s is full: %d of %d bytes used, %d more requested", n.ring.Self().Addr(), used, capacity, size)
	}
	if err := n.eng.CheckSpace(max(size, 0)); err != nil {
		return engine.Meta{}, err
	}
	w, err := n.eng.Create()
	if err != nil {
		return engine.Meta{}, n.diskError(name, err)
	}
	defer w.Abort()
	if _, err := io.Copy(&capWriter{w: w, n: n, maxBytes: n.cfg.MaxFileSize}, body); err != nil {
		var se *status.Error
		var de diskErr
		switch {
		case errors.As(err, &se):
			return engine.Meta{}, err
		case errors.As(err, &de):
			return engine.Meta{}, n.diskError(name, de.err)
		}
		return engine.Meta{}, status.Errorf(http.StatusBadRequest, "receive %q: %v", name, err)
	}
	if size >= 0 && w.Size() != size {
		return engine.Meta{}, status.Errorf(http.StatusBadRequest, "receive %q: got %d of %d bytes", name, w.Size(), size)
	}
	m, _, err := w.Commit(name, version)
	if engine.IsDiskFull(err) {
		return m, err
	}
	if err != nil {
		return m, n.diskError(name, err)
	}
	return m, nil
}

// diskErr is a failed write to this node's disk, as opposed to a failed
// read of the body being stored.
type diskErr struct{ err error }

func (e diskErr) Error() string { return e.err.Error() }

// diskError says a store of name failed on this node's disk: 507 if the
// disk is full (the node recovers when space returns), 500 otherwise.
func (n *Service) diskError(name string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return status.Errorf(http.StatusInsufficientStorage, "node %s is out of disk space storing %q: %v", n.ring.Self().Addr(), name, err)
	}
	return status.Errorf(http.StatusInternalServerError, "node %s could not store %q: %v", n.ring.Self().Addr(), name, err)
}

// Put stores a file through this node. Unless forwarded is set, the file is
// routed to its owner, successor(md5_low32(name)); the owner stores it,
// copies it to the rest of the replica set, and answers once a majority of
// the set holds it.
func (n *Service) Put(ctx context.Context, name string, body io.Reader, size int64, forwarded bool) (engine.Meta, error) {
	return n.put(ctx, name, body, size, forwarded, 0)
}

// put is Put; an owner refuses a forward whose version would be newer
// than notAfter (HdrNotAfter; 0 for none).
func (n *Service) put(ctx context.Context, name string, body io.Reader, size int64, forwarded bool, notAfter uint64) (engine.Meta, error) {
	key := n.eng.KeyOf(name)
	if !forwarded || n.cfg.Leaving() {
		owner, err := n.owner(ctx, key)
		if err != nil {
			return engine.Meta{}, err
		}
		if owner != n.ring.Self() {
			if n.suspect.has(owner) {
				return n.putElsewhere(ctx, owner, name, body, size, fmt.Errorf("owner %s of %q was unreachable moments ago", owner.Addr(), name))
			}
			return n.forwardOrStandIn(ctx, owner, name, body, size)
		}
	}
	if err := n.acting(ctx); err != nil {
		return engine.Meta{}, err
	}
	v := n.clock.Next()
	if notAfter != 0 && v > notAfter {
		return engine.Meta{}, &refusal{status.Errorf(http.StatusServiceUnavailable, "upload of %q reached its owner %s %s after its sender stopped waiting for it; nothing stored", name, n.ring.Self().Addr(), time.Duration(v-notAfter)+lateAfter)}
	}
	m, err := n.store(name, body, size, v)
	if err != nil {
		return engine.Meta{}, err
	}
	set := n.localReplicaSet()
	need := len(set)/2 + 1
	if acks := 1 + n.replicate(ctx, m, set[1:], need-1); acks < need {
		return m, status.Errorf(http.StatusServiceUnavailable, "%q stored on %d of %d replicas, %d needed; it will be re-replicated", name, acks, len(set), need)
	}
	return m, nil
}

// acting fails a request this node would act on as a file's owner or
// stand-in while it is not in a ring: between a restart and its join,
// other nodes still forward to it, and it would take itself for the
// file's only replica (reads would miss uploads acknowledged while it was
// down, and an upload would be acknowledged with one copy); or while it
// is alone in its ring having lost touch with members that may hold
// newer copies (cutOff, lone.go).
func (n *Service) acting(ctx context.Context) error {
	if !n.ring.InRing() {
		return &refusal{status.Errorf(http.StatusServiceUnavailable, "node %s is not in a ring yet (starting or rejoining); try again or another node", n.ring.Self().Addr())}
	}
	return n.cutOff(ctx)
}

// owner returns the node responsible for key. A leaving node never names
// itself: it routes through its successor.
func (n *Service) owner(ctx context.Context, key chord.ID) (chord.Ref, error) {
	self := n.ring.Self()
	if n.cfg.Leaving() {
		succ := n.ring.Successor(0)
		if succ == self {
			return chord.Ref{}, status.Errorf(http.StatusServiceUnavailable, "node is leaving and has no successor")
		}
		o, err := n.rpc.FindSuccessor(ctx, succ, key)
		if err != nil || o == self {
			return succ, nil
		}
		return o, nil
	}
	if !n.ring.InRing() {
		// A standby asks the ring it follows.
		for _, via := range n.cfg.Following() {
			if ref, err := n.rpc.CallRef(ctx, via, "get_info"); err == nil {
				if o, err := n.rpc.FindSuccessor(ctx, ref, key); err == nil {
					return o, nil
				}
			}
		}
		return chord.Ref{}, status.Errorf(http.StatusServiceUnavailable, "look up owner of key %d: %v", key, status.ErrNoRing)
	}
	if n.ring.Owns(key) {
		return self, nil
	}
	o, err := n.ring.FindSuccessor(ctx, key)
	if err != nil {
		return chord.Ref{}, status.Errorf(http.StatusServiceUnavailable, "look up owner of key %d: %v", key, err)
	}
	return o, nil
}

// localReplicaSet is this node followed by its first N-1 distinct
// successors.
func (n *Service) localReplicaSet() []chord.Ref {
	self := n.ring.Self()
	set := []chord.Ref{self}
	for _, s := range n.ring.Successors() {
		if len(set) == n.cfg.Replicas {
			break
		}
		if s != self && !containsRef(set, s) {
			set = append(set, s)
		}
	}
	return set
}

func containsRef(list []chord.Ref, r chord.Ref) bool {
	for _, x := range list {
		if x == r {
			return true
		}
	}
	return false
}

// replicate copies m to each target in parallel and returns how many
// succeeded, once enough of them have (or all have finished): a slow or
// hung target does not hold up the answer. The copies still under way go
// on, detached from ctx's cancellation, until they finish or stall.
func (n *Service) replicate(ctx context.Context, m engine.Meta, targets []chord.Ref, enough int) int {
	results := make(chan bool, len(targets))
	bg := context.WithoutCancel(ctx)
	for _, t := range targets {
		go func() {
			err := n.push(bg, t, m)
			if err != nil {
				n.m.replFailures.Inc()
				n.log.Warn("replicate", "file", m.Name, "to", t.String(), "err", err)
			}
			results <- err == nil
		}()
	}
	ok := 0
	for range targets {
		select {
		case r := <-results:
			if r {
				ok++
			}
		case <-ctx.Done():
			return ok
		}
		if ok >= enough {
			break
		}
	}
	return ok
}

// push copies the local version m of a file (or its tombstone) to node t.
func (n *Service) push(ctx context.Context, t chord.Ref, m engine.Meta) error {
	addr, err := n.httpAddrOf(ctx, t)
	if err != nil {
		return err
	}
	u := fileURL(addr, "/internal/file/", m.Name) + "?version=" + strconv.FormatUint(m.Version, 10)
	var req *http.Request
	if m.Deleted {
		req, err = http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	} else {
		var f *os.File
		var cur engine.Meta
		cur, f, err = n.eng.Open(m.Name)
		if err != nil {
			return err
		}
		defer f.Close()
		if cur.Version != m.Version {
			return fmt.Errorf("push %q: local version changed", m.Name)
		}
		rctx, body, done := guardStall(ctx, f)
		defer done()
		req, err = http.NewRequestWithContext(rctx, http.MethodPut, u, body)
		if req != nil {
			req.ContentLength = cur.Size
		}
	}
	if err != nil {
		return err
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return stallCause(req.Context(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("push %q to %s: %s: %s", m.Name, t.Addr(), resp.Status, msg)
	}
	io.Copy(io.Discard, resp.Body)
	n.m.pushed.Inc()
	return nil
}

// forwardTo streams an upload to its owner, or, with standInFor set, to
// a stand-in for that owner. It fails with *notSent when to could not be
// reached and nothing of the upload left.
func (n *Service) forwardTo(ctx context.Context, to chord.Ref, name string, body io.Reader, size int64, standInFor chord.Ref, notAfter uint64) (engine.Meta, error) {
	role := forwardRole(standInFor)
	addr, err := n.forwardAddr(ctx, to, role, name)
	if err != nil {
		return engine.Meta{}, err
	}
	src := &sourceReader{r: body}
	rctx, guarded, done := guardStall(ctx, src)
	defer done()
	req, err := http.NewRequestWithContext(rctx, http.MethodPut, fileURL(addr, "/files/", name), guarded)
	if err != nil {
		return engine.Meta{}, err
	}
	req.ContentLength = size
	setForwarded(req, standInFor)
	if notAfter != 0 {
		req.Header.Set(HdrNotAfter, strconv.FormatUint(notAfter, 10))
	}
	resp, err := n.hc.Do(req)
	done()
	if src.err != nil {
		return engine.Meta{}, status.Errorf(http.StatusBadRequest, "receive %q: %v", name, src.err)
	}
	if err != nil {
		fail := status.Errorf(http.StatusServiceUnavailable, "forward %q to %s %s: %v", name, role, to.Addr(), stallCause(rctx, err))
		if unsent(err, src.n) && ctx.Err() == nil {
			return engine.Meta{}, &notSent{fail}
		}
		return engine.Meta{}, fail
	}
	if err := forwardAnswer(resp); err != nil {
		return engine.Meta{}, err
	}
	return engine.Meta{Name: name, Key: n.eng.KeyOf(name), Size: size}, nil
}

// forwardRole names the receiver of a forward in errors.
func forwardRole(standInFor chord.Ref) string {
	if standInFor.IsZero() {
		return "owner"
	}
	return "stand-in"
}

// forwardAddr finds the file service of node to, the receiver of a
// forward; it fails with *notSent when to cannot be reached.
func (n *Service) forwardAddr(ctx context.Context, to chord.Ref, role, name string) (string, error) {
	addr, err := n.httpAddrOf(ctx, to)
	if err != nil {
		err = status.Errorf(http.StatusServiceUnavailable, "reach %s %s of %q: %v", role, to.Addr(), name, err)
		if ctx.Err() == nil {
			return "", &notSent{err}
		}
		return "", err
	}
	return addr, nil
}

// setForwarded marks req as a forward, standing in for standInFor if set.
func setForwarded(req *http.Request, standInFor chord.Ref) {
	req.Header.Set(HdrForwarded, "1")
	if !standInFor.IsZero() {
		req.Header.Set(HdrStandIn, standInFor.String())
	}
}

// forwardAnswer reads the answer to a forward and closes it: nil for a
// success, else the receiver's error with its status.
func forwardAnswer(resp *http.Response) error {
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		err := &status.Error{Code: resp.StatusCode, Msg: string(status.TrimNL(msg))}
		if resp.Header.Get(HdrRefused) != "" {
			return &notSent{err} // the owner refused it whole
		}
		return err
	}
	return nil
}

// sourceReader remembers a read error of the client's body, so that a
// truncated upload is blamed on the client, not on the owner.
type sourceReader struct {
	r   io.Reader
	err error
	n   int64 // bytes read
}

func (s *sourceReader) Read(p []byte) (int, error) {
	k, err := s.r.Read(p)
	s.n += int64(k)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return k, err
}

// Delete removes a file everywhere by writing a tombstone at its owner and
// the owner's replicas.
func (n *Service) Delete(ctx context.Context, name string, forwarded bool) error {
	key := n.eng.KeyOf(name)
	if !forwarded || n.cfg.Leaving() {
		owner, err := n.owner(ctx, key)
		if err != nil {
			return err
		}
		if owner != n.ring.Self() {
			return n.deleteThroughOwner(ctx, owner, name)
		}
	}
	if err := n.acting(ctx); err != nil {
		return err
	}
	if found, err := n.findAnywhere(ctx, name); err != nil {
		return err
	} else if !found {
		return engine.ErrNotFound
	}
	v := n.clock.Next()
	if _, err := n.eng.Delete(name, v); err != nil {
		return err
	}
	tomb := engine.Meta{Name: name, Key: key, Version: v, Deleted: true}
	set := n.localReplicaSet()
	if acks := 1 + n.replicate(ctx, tomb, set[1:], len(set)/2); acks < len(set)/2+1 {
		return status.Errorf(http.StatusServiceUnavailable, "delete of %q reached %d of %d replicas", name, acks, len(set))
	}
	return nil
}

// findAnywhere reports whether a live copy of name exists here or on the
// next nodes of the ring (replicas, or an old owner still handing off).
func (n *Service) findAnywhere(ctx context.Context, name string) (bool, error) {
	if m, ok, err := n.eng.Get(name); err != nil || (ok && !m.Deleted) {
		return ok, err
	}
	for _, s := range n.fallbacks() {
		addr, err := n.httpAddrOf(ctx, s)
		if err != nil {
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, fileURL(addr, "/internal/file/", name), nil)
		resp, err := n.hc.Do(req)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return true, nil
		}
	}
	return false, nil
}

// fallbacks are the nodes that may hold a copy of a file this node owns
// but lacks: its successors, which hold replicas and, right after a join,
// the file's previous owner.
func (n *Service) fallbacks() []chord.Ref {
	self := n.ring.Self()
	var out []chord.Ref
	for _, s := range n.ring.Successors() {
		if s != self && !containsRef(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// hlc hands out versions: hybrid logical clock timestamps in nanoseconds,
// strictly increasing on this node and never behind any version observed.
type hlc struct {
	mu   sync.Mutex
	last uint64
}

func (c *hlc) Next() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := uint64(time.Now().UnixNano())
	c.last = max(now, c.last+1)
	return c.last
}

func (c *hlc) Observe(v uint64) {
	c.mu.Lock()
	c.last = max(c.last, v)
	c.mu.Unlock()
}

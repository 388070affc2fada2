package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"sync"
	"time"

	"tide/chord"
	"tide/chord/rpc"
	"tide/store/files"
	"tide/store/status"
	"tide/tlsconf"
)

// Client does what the seed's upload.py and download.py do: hash the name,
// ask any node for find_successor, and transfer to or from the owner's file
// service.
type Client struct {
	RPC  *rpc.Client
	HTTP *http.Client
}

// NewClient returns a client with default transports.
func NewClient() *Client {
	return &Client{RPC: rpc.NewClient(), HTTP: &http.Client{}}
}

// NewClientWith returns a client that reaches nodes over mutual TLS with
// t (nil: plain text) and sends token, if not empty, as its HTTP bearer
// token.
func NewClientWith(t *tlsconf.Config, token string) *Client {
	var rt http.RoundTripper = &http.Transport{DialContext: nodeDialer(t, 5*time.Second), MaxIdleConnsPerHost: 16}
	if token != "" {
		rt = BearerTransport{Token: token, Base: rt}
	}
	return &Client{RPC: &rpc.Client{TLS: t}, HTTP: &http.Client{Transport: rt}}
}

// BearerTransport adds an Authorization: Bearer header to every request
// that has none.
type BearerTransport struct {
	Token string
	Base  http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (b BearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.Token)
	}
	base := b.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

// Close releases the client's connections.
func (c *Client) Close() { c.RPC.Close() }

// Owner returns the owner of name and its file service address, asking the
// node at chordAddr.
func (c *Client) Owner(ctx context.Context, chordAddr, name string) (chord.Ref, string, error) {
	owner, err := c.RPC.CallRef(ctx, chordAddr, "find_successor", uint32(chord.KeyOf(name)))
	if err != nil {
		return chord.Ref{}, "", fmt.Errorf("find_successor at %s: %w", chordAddr, err)
	}
	addr, err := c.RPC.HTTPAddr(ctx, owner.Addr())
	if err != nil {
		return owner, "", fmt.Errorf("file address of %s: %w", owner.Addr(), err)
	}
	return owner, addr, nil
}

// target picks the file service to talk to: the owner's, as the seed
// scripts do, or, if the owner cannot be reached (it may have just crashed
// or left), the entry node's, which routes the request and fails over to
// the owner's successors.
func (c *Client) target(ctx context.Context, chordAddr, name string) (string, error) {
	_, addr, err := c.Owner(ctx, chordAddr, name)
	if err == nil {
		return addr, nil
	}
	entry, err2 := c.RPC.HTTPAddr(ctx, chordAddr)
	if err2 != nil {
		return "", err
	}
	return entry, nil
}

// The client's deadlines, so that a node that hangs (a paused process or
// container keeps its connections open and answers nothing) fails a
// transfer instead of stalling it for ever.
var (
	// downloadAnswerTimeout bounds the wait for a download's answer (its
	// headers); the owner answers at once, and a non-owner within its own
	// wait for the owner (3 s) and the owner's replicas (1 s).
	downloadAnswerTimeout = 5 * time.Second
	// uploadAnswerTimeout bounds the wait for an upload's answer once its
	// body is sent: the owner stores, syncs and copies it to a majority.
	uploadAnswerTimeout = 30 * time.Second
	// transferStallTimeout bounds how long a body may make no progress.
	transferStallTimeout = 10 * time.Second
)

// errNoAnswer marks a node that did not answer in time.
var errNoAnswer = errors.New("no answer")

// Upload sends r as the file name to its owner with uploadserver's
// multipart form. It fails, rather than waits, if the node stops taking
// the body for transferStallTimeout or does not answer within
// uploadAnswerTimeout of the body's end.
func (c *Client) Upload(ctx context.Context, chordAddr, name string, r io.Reader) error {
	if err := files.ValidName(name); err != nil {
		return err
	}
	addr, err := c.target(ctx, chordAddr, name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watch := newWatchdog(transferStallTimeout, func(d time.Duration) {
		cancel(fmt.Errorf("%w: %s took no data for %s (is it paused?)", errNoAnswer, addr, d))
	})
	defer watch.stop()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("files", name)
		if err == nil {
			_, err = io.Copy(part, r)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	body := &watchedReader{r: pr, w: watch, after: uploadAnswerTimeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/upload", body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := c.HTTP.Do(req)
	watch.stop()
	if err != nil {
		return fmt.Errorf("upload to %s: %w", addr, causeOf(ctx, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("upload to %s: %s: %s", addr, resp.Status, status.TrimNL(msg))
	}
	return nil
}

// Download copies the file name from its owner to w and returns its size
// as announced, or -1. If the owner does not answer within
// downloadAnswerTimeout, it reads through the entry node, which turns to
// the owner's replicas; a transfer that makes no progress for
// transferStallTimeout fails.
func (c *Client) Download(ctx context.Context, chordAddr, name string, w io.Writer, onSize func(int64)) error {
	if err := files.ValidName(name); err != nil {
		return err
	}
	addr, err := c.target(ctx, chordAddr, name)
	if err != nil {
		return err
	}
	err = c.download(ctx, addr, name, w, onSize)
	if !errors.Is(err, errNoAnswer) {
		return err
	}
	entry, err2 := c.RPC.HTTPAddr(ctx, chordAddr)
	if err2 != nil || entry == addr {
		return err
	}
	if err2 := c.download(ctx, entry, name, w, onSize); err2 != nil {
		return fmt.Errorf("%v; then through %s: %w", err, entry, err2)
	}
	return nil
}

// download GETs name from the node at addr. An error wrapping errNoAnswer
// means nothing was written to w.
func (c *Client) download(ctx context.Context, addr, name string, w io.Writer, onSize func(int64)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watch := newWatchdog(downloadAnswerTimeout, func(d time.Duration) {
		cancel(fmt.Errorf("%w from %s for %s", errNoAnswer, addr, d))
	})
	defer watch.stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/"+url.PathEscape(name), nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		err = causeOf(ctx, err)
		if !errors.Is(err, errNoAnswer) {
			// A node that cannot be reached answers nothing either.
			err = fmt.Errorf("%w: %v", errNoAnswer, err)
		}
		return fmt.Errorf("download from %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := fmt.Errorf("download %q from %s: %s: %s", name, addr, resp.Status, status.TrimNL(msg))
		if resp.StatusCode == http.StatusServiceUnavailable {
			err = fmt.Errorf("%w: %w", errNoAnswer, err)
		}
		return err
	}
	// The body: no data for transferStallTimeout fails it. (Bytes may
	// have reached w: the error no longer means nothing was written.)
	watch.reset(transferStallTimeout, func(d time.Duration) {
		cancel(fmt.Errorf("%s sent no data for %s (is it paused?)", addr, d))
	})
	if onSize != nil {
		onSize(resp.ContentLength)
	}
	n, err := io.Copy(w, &watchedReader{r: resp.Body, w: watch})
	if err != nil {
		return fmt.Errorf("download %q: %w", name, causeOf(ctx, err))
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("download %q: got %d of %d bytes", name, n, resp.ContentLength)
	}
	return nil
}

// causeOf names why ctx ended, if it did, in place of err.
func causeOf(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	return err
}

// watchdog calls its function when it is not reset in time.
type watchdog struct {
	mu    sync.Mutex
	t     *time.Timer
	d     time.Duration
	fire  func(time.Duration)
	ended bool
}

func newWatchdog(d time.Duration, fire func(time.Duration)) *watchdog {
	w := &watchdog{d: d, fire: fire}
	w.t = time.AfterFunc(d, w.expire)
	return w
}

func (w *watchdog) expire() {
	w.mu.Lock()
	ended, fire, d := w.ended, w.fire, w.d
	w.mu.Unlock()
	if !ended {
		fire(d)
	}
}

// reset restarts the wait, with d and fire if fire is not nil.
func (w *watchdog) reset(d time.Duration, fire func(time.Duration)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	if fire != nil {
		w.d, w.fire = d, fire
	}
	w.t.Reset(w.d)
}

func (w *watchdog) stop() {
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
	w.t.Stop()
}

// watchedReader resets its watchdog on every read; at the end of the
// data, to after (if positive), the wait for the answer.
type watchedReader struct {
	r     io.Reader
	w     *watchdog
	after time.Duration
}

func (r *watchedReader) Read(p []byte) (int, error) {
	k, err := r.r.Read(p)
	if err == io.EOF && r.after > 0 {
		r.w.mu.Lock()
		r.w.d = r.after
		r.w.mu.Unlock()
	}
	r.w.reset(0, nil)
	return k, err
}

// Ring walks the ring from the node at chordAddr, following successors,
// and returns each member's report.
func (c *Client) Ring(ctx context.Context, chordAddr string) ([]Info, error) {
	start, err := c.RPC.CallRef(ctx, chordAddr, "get_info")
	if err != nil {
		return nil, err
	}
	var out []Info
	seen := map[chord.Ref]bool{}
	cur := start
	for !seen[cur] && len(out) < 4096 {
		seen[cur] = true
		info := Info{ID: uint32(cur.ID), ChordAddr: cur.Addr()}
		if addr, err := c.RPC.HTTPAddr(ctx, cur.Addr()); err == nil {
			if err := status.GetJSON(ctx, c.HTTP, "http://"+addr+"/internal/info", &info); err != nil {
				info.HTTPAddr = addr
			}
		}
		out = append(out, info)
		next, err := c.RPC.CallRef(ctx, cur.Addr(), "get_successor", 0)
		if err != nil || next.IsZero() {
			break
		}
		cur = next
	}
	return out, nil
}

// Leave asks the node at chordAddr to hand off its files and leave.
func (c *Client) Leave(ctx context.Context, chordAddr string) (int, error) {
	addr, err := c.RPC.HTTPAddr(ctx, chordAddr)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/internal/leave", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("leave %s: %s: %s", chordAddr, resp.Status, status.TrimNL(msg))
	}
	var out struct {
		Moved int `json:"moved"`
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.Moved, err
}

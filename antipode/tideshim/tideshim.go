// Package tideshim is antipode's shim for the tide store's key-value API
// across regions (tide node --region). A write's version is the one the
// store gave it (X-Tide-Version: a hybrid logical clock timestamp; the
// last writer wins); it is visible in a region once a read there at the
// region's quorum returns that version or a newer one. Such a read writes
// the version it answers back to a write quorum of the region's replicas
// if it is not there yet, so every later read in the region sees it too.
//
// Versions are per key. A wait is event-driven: it asks the region's node
// to answer once its read returns the version (GET /kv/KEY?version=V&
// wait=D), and the node reads again whenever it stores a write of the key
// (and every 20 ms, for a node that is not one of the key's replicas). A
// wait the node ends unanswered, or that fails, is asked again with
// bounded backoff (antipode.Backoff).
package tideshim

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"tide/antipode"
)

// Writer writes through a node of the writer's region.
type Writer struct {
	// Addr is the HTTP address (host:port) of a node of the region.
	Addr string
	// Store is the name lineages use for this store.
	Store string
	// Client makes the requests; nil takes DefaultClient.
	Client *http.Client
}

// DefaultClient is the HTTP client of Writers and Waiters that name none.
// A waiting barrier holds a connection to its region's node for as long as
// the region lags, so a busy reader holds hundreds at once: they are kept
// for the next barriers rather than closed and dialed again.
var DefaultClient = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}

func client(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return DefaultClient
}

func kvURL(addr, key string) string { return "http://" + addr + "/kv/" + url.PathEscape(key) }

// Put writes key=value, acknowledged by the region's write quorum, and
// returns the write's identifier.
func (w *Writer) Put(ctx context.Context, key string, value []byte) (antipode.WriteID, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, kvURL(w.Addr, key), strings.NewReader(string(value)))
	if err != nil {
		return antipode.WriteID{}, err
	}
	resp, err := client(w.Client).Do(req)
	if err != nil {
		return antipode.WriteID{}, fmt.Errorf("tide put %q: %w", key, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return antipode.WriteID{}, fmt.Errorf("tide put %q: %s: %s", key, resp.Status, strings.TrimSpace(string(b)))
	}
	v, err := strconv.ParseUint(resp.Header.Get("X-Tide-Version"), 10, 64)
	if err != nil || v == 0 {
		return antipode.WriteID{}, fmt.Errorf("tide put %q: no version in the answer (X-Tide-Version %q)", key, resp.Header.Get("X-Tide-Version"))
	}
	io.Copy(io.Discard, resp.Body)
	return antipode.WriteID{Store: w.Store, Key: key, Version: v}, nil
}

// Get reads key through a node of a region, at the region's read quorum:
// its value if found, and the version it holds (a delete's version too;
// 0: never written).
func Get(ctx context.Context, c *http.Client, addr, key string) (value []byte, found bool, version uint64, err error) {
	return get(ctx, c, kvURL(addr, key), key)
}

// getAtLeast is Get that the node answers once the read returns version
// want or newer, or wait has passed.
func getAtLeast(ctx context.Context, c *http.Client, addr, key string, want uint64, wait time.Duration) (value []byte, found bool, version uint64, err error) {
	u := kvURL(addr, key) + "?version=" + strconv.FormatUint(want, 10) + "&wait=" + wait.String()
	return get(ctx, c, u, key)
}

func get(ctx context.Context, c *http.Client, u, key string) (value []byte, found bool, version uint64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, 0, err
	}
	resp, err := client(c).Do(req)
	if err != nil {
		return nil, false, 0, fmt.Errorf("tide get %q: %w", key, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, false, 0, fmt.Errorf("tide get %q: %w", key, err)
	}
	if h := resp.Header.Get("X-Tide-Version"); h != "" {
		if version, err = strconv.ParseUint(h, 10, 64); err != nil {
			return nil, false, 0, fmt.Errorf("tide get %q: X-Tide-Version %q: %w", key, h, err)
		}
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return b, true, version, nil
	case http.StatusNotFound:
		return nil, false, version, nil
	}
	return nil, false, 0, fmt.Errorf("tide get %q: %s: %s", key, resp.Status, strings.TrimSpace(string(b)))
}

// Waiter tells when writes are visible in one region, through a node of
// it.
type Waiter struct {
	addr    string
	backoff antipode.Backoff
	// Client makes the requests; nil takes DefaultClient.
	Client *http.Client
}

// NewWaiter returns a Waiter reading through the node at addr (HTTP
// host:port) of the caller's region; b paces its polls (zero:
// antipode.DefaultBackoff).
func NewWaiter(addr string, b antipode.Backoff) *Waiter {
	return &Waiter{addr: addr, backoff: b}
}

// longWait bounds one wait the node is asked for, under DefaultClient's
// time-out.
const longWait = 10 * time.Second

// Wait implements antipode.Waiter: it returns once a read of the key at
// the region's quorum returns the write's version or a newer one.
func (w *Waiter) Wait(ctx context.Context, id antipode.WriteID) error {
	var seen uint64
	err := antipode.Poll(ctx, w.backoff, nil, func(ctx context.Context) (bool, error) {
		wait := longWait
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		if wait <= 0 {
			return false, ctx.Err()
		}
		_, _, v, err := getAtLeast(ctx, w.Client, w.addr, id.Key, id.Version, wait)
		if err != nil {
			return false, err
		}
		seen = v
		return v >= id.Version, nil
	})
	if err != nil {
		return fmt.Errorf("%w (the region holds version %d of %q)", err, seen, id.Key)
	}
	return nil
}

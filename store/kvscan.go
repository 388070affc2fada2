package store

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"tide/kv"
	"tide/store/status"
)

// Scans list the keys of the whole store in ring order, for SCAN, KEYS and
// DBSIZE. A cursor is a ring position (plus one; 0 starts and ends a
// scan), not a node: the next page asks whichever nodes replicate that
// position then, so a scan goes on across joins and leaves. Each range is
// read from every replica, and a page needs R of them (W + R > N), so no
// key acknowledged before the scan reached its position is missed; a key
// moving meanwhile may be listed twice. A page holds every key of each
// position it covers.

// scanPage is one node's answer to /internal/kv/scan.
type scanPage struct {
	Recs []kv.Record `msgpack:"r"` // keys, versions, tombstones, deadlines; no values
	// More: the node stopped at Last (a position, whose keys are all in
	// Recs) before the end of the range asked.
	More bool   `msgpack:"m"`
	Last uint32 `msgpack:"l"`
}

// handleKVScan answers GET /internal/kv/scan?from=P&to=Q&limit=N with the
// records this node holds at positions [P, Q], in ring order.
func (n *Node) handleKVScan(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, err1 := strconv.ParseUint(q.Get("from"), 10, 32)
	to, err2 := strconv.ParseUint(q.Get("to"), 10, 32)
	limit, err3 := strconv.Atoi(q.Get("limit"))
	if err1 != nil || err2 != nil || err3 != nil || from > to || limit < 1 {
		n.fail(w, "kv_scan", status.Errorf(http.StatusBadRequest, "want from <= to (ring positions) and limit >= 1"))
		return
	}
	var page scanPage
	lo := uint32(from) - 1 // Scan's ranges are open below; position 0 wraps to the whole top
	var last uint32
	err := n.eng.KV().(kv.VersionScanner).ScanVersions(lo, uint32(to), func(pos uint32, rec kv.Record) bool {
		if pos < uint32(from) || pos > uint32(to) {
			return true // (max, to] of a scan from 0 wraps through the top
		}
		if len(page.Recs) >= limit && pos != last {
			page.More, page.Last = true, last
			return false
		}
		last = pos
		rec.Key = append([]byte(nil), rec.Key...)
		page.Recs = append(page.Recs, rec)
		return true
	})
	if err != nil {
		n.fail(w, "kv_scan", err)
		return
	}
	b, _ := msgpack.Marshal(&page)
	w.Header().Set("Content-Type", "application/msgpack")
	w.Write(b)
}

// scanKeys returns the live keys of the store from cursor on, at least
// count of them unless the ring ends first, and the cursor to go on from.
func (n *Node) scanKeys(ctx context.Context, cursor uint64, count int) ([]kv.Record, uint64, error) {
	if cursor > 1<<32 {
		return nil, 0, fmt.Errorf("invalid cursor")
	}
	count = max(count, 1)
	p := uint64(0)
	if cursor > 0 {
		p = cursor - 1
	}
	var out []kv.Record
	now := uint64(time.Now().UnixNano())
	for len(out) < count && p <= 0xffffffff {
		ring := n.kvRing.Load()
		ms := ring.Members()
		if len(ms) == 0 {
			return nil, 0, status.ErrNoRing
		}
		end := uint64(0xffffffff)
		if i := slices.IndexFunc(ms, func(m kv.Member) bool { return uint64(m.Token) >= p }); i >= 0 {
			end = uint64(ms[i].Token)
		}
		reps := ring.Preference(uint32(p), n.cfg.KV.N)
		need := min(max(n.cfg.KV.R, 1), len(reps))
		newest := map[string]kv.Record{}
		answered := 0
		stop := end
		var errs []error
		for _, peer := range reps {
			httpAddr := ""
			for _, m := range ring.members {
				if m.addrs["peer"] == peer {
					httpAddr = m.addrs["http"]
				}
			}
			page, err := n.scanPeer(ctx, httpAddr, p, end, count-len(out))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", httpAddr, err))
				continue
			}
			answered++
			if page.More {
				stop = min(stop, uint64(page.Last))
			}
			for _, r := range page.Recs {
				if cur, ok := newest[string(r.Key)]; !ok || r.Newer(cur) {
					newest[string(r.Key)] = r
				}
			}
		}
		if answered < need {
			return nil, 0, fmt.Errorf("scan of ring positions %d to %d: %d of %d replicas answered, %d needed: %v", p, end, answered, len(reps), need, errs)
		}
		var page []kv.Record
		for _, r := range newest {
			if pos := uint64(n.pos(r.Key)); pos <= stop && r.Live(now) {
				page = append(page, r)
			}
		}
		slices.SortFunc(page, func(a, b kv.Record) int {
			pa, pb := n.pos(a.Key), n.pos(b.Key)
			if pa != pb {
				if pa < pb {
					return -1
				}
				return 1
			}
			return slices.Compare(a.Key, b.Key)
		})
		out = append(out, page...)
		p = stop + 1
	}
	if p > 0xffffffff {
		return out, 0, nil
	}
	return out, p + 1, nil
}

func (n *Node) scanPeer(ctx context.Context, httpAddr string, from, to uint64, limit int) (scanPage, error) {
	if httpAddr == "" {
		return scanPage{}, fmt.Errorf("no HTTP address known")
	}
	u := fmt.Sprintf("http://%s/internal/kv/scan?from=%d&to=%d&limit=%d", httpAddr, from, to, max(limit, 1))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return scanPage{}, err
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return scanPage{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return scanPage{}, fmt.Errorf("scan: HTTP %d", resp.StatusCode)
	}
	var page scanPage
	if err := msgpack.NewDecoder(resp.Body).Decode(&page); err != nil {
		return scanPage{}, fmt.Errorf("scan: %w", err)
	}
	return page, nil
}

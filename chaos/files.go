package chaos

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Files is a file workload: Clients clients, each the only writer of its
// Names files, uploading and overwriting them with Size bytes of fresh
// content.
type Files struct {
	Clients int
	Names   int
	Size    int
}

// FilesResult is what a file workload saw and what its checks found.
type FilesResult struct {
	Counts
	// LostFiles names files that did not download as their last
	// acknowledged upload (or one that was not acknowledged).
	LostFiles []string `json:"lost_files,omitempty"`
	// UnderReplicated names files with fewer copies than the replica
	// count (or the number of nodes, if smaller) at the end.
	UnderReplicated []string       `json:"under_replicated,omitempty"`
	Errors          map[string]int `json:"errors,omitempty"`
	// Reads counts the downloads made under the faults, each of one of
	// its client's own files, right after an upload and through another
	// node; ReadsFailed those that failed. Stale names those that
	// answered what the file could not hold then: an older acknowledged
	// upload's content, or "not found".
	Reads       int      `json:"reads"`
	ReadsFailed int      `json:"reads_failed"`
	Stale       []string `json:"stale,omitempty"`
}

// fileClient uploads, downloads and deletes files through any node (the
// node forwards to the file's owner).
type fileClient struct{ hc *http.Client }

func newFileClient(timeout time.Duration) fileClient {
	return fileClient{&http.Client{Timeout: timeout}}
}

func (f fileClient) do(ctx context.Context, method, url string, body []byte) ([]byte, int, error) {
	b, code, _, err := f.doHeader(ctx, method, url, body)
	return b, code, err
}

// doHeader is do, with the answer's headers.
func (f fileClient) doHeader(ctx context.Context, method, url string, body []byte) ([]byte, int, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, 0, nil, err
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		return nil, 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, resp.Header, err
	}
	if resp.StatusCode/100 != 2 {
		return b, resp.StatusCode, resp.Header, &statusErr{resp.StatusCode, fmt.Sprintf("%s %s: %d %s", method, url, resp.StatusCode, strings.TrimSpace(shorten(string(b), 200)))}
	}
	return b, resp.StatusCode, resp.Header, nil
}

// put uploads body as name through n, and returns the version the owner
// gave it (0 if it did not say).
func (f fileClient) put(ctx context.Context, n *Node, name string, body []byte) (uint64, error) {
	b, _, err := f.do(ctx, http.MethodPut, "http://"+n.HTTP+"/files/"+name, body)
	var m struct {
		Version uint64 `json:"version"`
	}
	if err == nil {
		json.Unmarshal(b, &m)
	}
	return m.Version, err
}

// get downloads name through n; served names the copy it came from (its
// version, and the node that held it).
func (f fileClient) get(ctx context.Context, n *Node, name string) (body []byte, code int, served string, err error) {
	body, code, h, err := f.doHeader(ctx, http.MethodGet, "http://"+n.HTTP+"/files/"+name, nil)
	if h != nil {
		served = fmt.Sprintf("version %s from %s", h.Get("X-Tide-Version"), h.Get("X-Tide-Served-By"))
	}
	return body, code, served, err
}

func (f fileClient) del(ctx context.Context, n *Node, name string) error {
	_, code, err := f.do(ctx, http.MethodDelete, "http://"+n.HTTP+"/files/"+name, nil)
	if code == http.StatusNotFound {
		return nil
	}
	return err
}

// local lists the files a node holds itself: name to MD5.
func (f fileClient) local(ctx context.Context, n *Node) (map[string]string, error) {
	b, _, err := f.do(ctx, http.MethodGet, "http://"+n.HTTP+"/files?local=1", nil)
	if err != nil {
		return nil, err
	}
	var list []struct {
		Name string `json:"name"`
		MD5  string `json:"md5"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("files of %s: %w", n.Name, err)
	}
	out := map[string]string{}
	for _, m := range list {
		out[m.Name] = m.MD5
	}
	return out, nil
}

// filler is size bytes for name: a header naming it, then pseudo-random
// bytes (incompressible, so that a full disk is really full).
func filler(name string, size int) []byte {
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(len(name)), uint64(time.Now().UnixNano())))
	for i := 0; i+8 <= size; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	copy(b, name+"\n")
	return b
}

func md5hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

// filesRun is a file workload in progress.
type filesRun struct {
	cfg     Files
	cluster *Cluster
	timeout time.Duration
	tally   *tally

	mu sync.Mutex
	// acked is each file's last acknowledged content (MD5); maybe the
	// contents of every upload that was not acknowledged.
	acked map[string]string
	maybe map[string][]string
	// uploads is each file's uploads so far, for the report of a stale
	// read.
	uploads map[string][]upload
	// reads, readsFailed and stale are FilesResult's.
	reads, readsFailed int
	stale              []string
}

func fileName(client, j int) string { return fmt.Sprintf("c%d-f%d", client, j) }

// upload is one upload of a file, as its client saw it.
type upload struct {
	start, end time.Time
	via        string
	sum        string
	version    uint64 // as the owner answered (0: no answer)
	out        Outcome
}

func (u upload) String() string {
	return fmt.Sprintf("%s-%s via %s: %s, MD5 %s, version %d", u.start.Format("15:04:05.000"), u.end.Format("05.000"), u.via, u.out, u.sum, u.version)
}

func (f *filesRun) run(ctx context.Context, id int) {
	fc := newFileClient(f.timeout)
	entry := id
	for i := 0; ctx.Err() == nil; i++ {
		live := f.cluster.Live()
		if len(live) == 0 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		n := live[entry%len(live)]
		name := fileName(id, i%f.cfg.Names)
		body := filler(name, f.cfg.Size)
		sum := md5hex(body)
		octx, cancel := context.WithTimeout(ctx, f.timeout)
		start := time.Now()
		version, err := fc.put(octx, n, name, body)
		end := time.Now()
		cancel()
		if ctx.Err() != nil && err != nil {
			f.mu.Lock()
			f.maybe[name] = append(f.maybe[name], sum)
			f.mu.Unlock()
			return
		}
		out := classify(err)
		f.tally.record(id, n.Name, start, end, out, err)
		f.mu.Lock()
		if f.uploads == nil {
			f.uploads = map[string][]upload{}
		}
		f.uploads[name] = append(f.uploads[name], upload{start, end, n.Name, sum, version, out})
		if out == Acked {
			f.acked[name] = sum
		} else {
			// Even a clear failure may leave the upload on a replica
			// that repairs it onto the others, and an unanswered one
			// may land after later uploads: either may be what a
			// download finds at the end.
			f.maybe[name] = append(f.maybe[name], sum)
		}
		f.mu.Unlock()
		if err != nil {
			entry++
		}
		f.check(ctx, fc, live[(entry+1+i)%len(live)], fileName(id, (i*7+3)%f.cfg.Names))
	}
}

// check downloads name, one of the calling client's own files, through
// n: it must hold the client's last acknowledged upload of it, or one
// whose outcome the client did not learn (which may take effect at any
// time). The client is the file's only writer and waits for the read,
// so neither changes while it runs.
func (f *filesRun) check(ctx context.Context, fc fileClient, n *Node, name string) {
	f.mu.Lock()
	want, ok := f.acked[name]
	f.mu.Unlock()
	if !ok {
		return
	}
	octx, cancel := context.WithTimeout(ctx, f.timeout)
	start := time.Now()
	body, code, served, err := fc.get(octx, n, name)
	cancel()
	if ctx.Err() != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	// A stale read's report says which copy answered and what the
	// client uploaded, so that a failed run can be traced in the nodes'
	// logs.
	history := func() string {
		var b strings.Builder
		for _, u := range f.uploads[name] {
			b.WriteString("\n    upload " + u.String())
		}
		return b.String()
	}
	at := start.Format("15:04:05.000")
	switch {
	case code == http.StatusNotFound:
		f.stale = append(f.stale, fmt.Sprintf("%s through %s at %s: not found, after an acknowledged upload%s", name, n.Name, at, history()))
	case err != nil:
		f.readsFailed++
	default:
		if got := md5hex(body); got != want && !slices.Contains(f.maybe[name], got) {
			f.stale = append(f.stale, fmt.Sprintf("%s through %s at %s: MD5 %s (%s), not the last acknowledged %s nor an upload whose outcome is unknown%s", name, n.Name, at, got, served, want, history()))
		}
	}
}

// mayHold reports whether sum is a content file name may end with: its
// last acknowledged upload's, or one of the uploads whose outcome its
// client did not learn.
func (f *filesRun) mayHold(name, sum, acked string) bool {
	if sum == acked {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.maybe[name], sum)
}

// verify downloads every acknowledged file once the cluster is healed and
// waits (up to a minute) for each to have its full replica count.
func (f *filesRun) verify(ctx context.Context, end time.Time, replicas int) FilesResult {
	res := FilesResult{Counts: f.tally.close(end)}
	fc := newFileClient(f.timeout)
	f.mu.Lock()
	acked := make(map[string]string, len(f.acked))
	for k, v := range f.acked {
		acked[k] = v
	}
	f.mu.Unlock()
	final := map[string]string{}
	for name, want := range acked {
		var body []byte
		var code int
		var err error
		for try := 0; try < 20; try++ {
			live := f.cluster.Live()
			octx, cancel := context.WithTimeout(ctx, f.timeout)
			body, code, _, err = fc.get(octx, live[try%len(live)], name)
			cancel()
			if err == nil || code == http.StatusNotFound || ctx.Err() != nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			res.Lost++
			res.LostFiles = append(res.LostFiles, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		got := md5hex(body)
		f.mu.Lock()
		ok := got == want
		for _, m := range f.maybe[name] {
			ok = ok || got == m
		}
		f.mu.Unlock()
		if !ok {
			res.Lost++
			res.LostFiles = append(res.LostFiles, fmt.Sprintf("%s: downloaded %d bytes with MD5 %s, not the acknowledged %s", name, len(body), got, want))
			continue
		}
		final[name] = got
	}
	// Replica counts: every file on min(replicas, nodes) nodes.
	deadline := time.Now().Add(time.Minute)
	for {
		live := f.cluster.Live()
		want := min(replicas, len(live))
		// A file's copies are those of one content it may hold: the one
		// downloaded above, or another its uploads may have left (an
		// upload that was not acknowledged may still take effect after
		// the download, when the healed replicas reconcile).
		byContent := map[string]map[string]int{}
		for _, n := range live {
			held, err := fc.local(ctx, n)
			if err != nil {
				continue
			}
			for name := range final {
				if sum, ok := held[name]; ok && f.mayHold(name, sum, acked[name]) {
					if byContent[name] == nil {
						byContent[name] = map[string]int{}
					}
					byContent[name][sum]++
				}
			}
		}
		copies := map[string]int{}
		for name, counts := range byContent {
			for _, c := range counts {
				copies[name] = max(copies[name], c)
			}
		}
		res.UnderReplicated = res.UnderReplicated[:0]
		for name := range final {
			if copies[name] < want {
				res.UnderReplicated = append(res.UnderReplicated, fmt.Sprintf("%s: %d of %d copies", name, copies[name], want))
			}
		}
		if len(res.UnderReplicated) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	f.tally.mu.Lock()
	res.Errors = f.tally.errs
	f.tally.mu.Unlock()
	f.mu.Lock()
	res.Reads, res.ReadsFailed, res.Stale = f.reads, f.readsFailed, slices.Clone(f.stale)
	f.mu.Unlock()
	return res
}

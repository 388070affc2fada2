package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"tide/cluster"
	"tide/store"
	"tide/store/engine"
)

// FilesResult is what `tide bench files` measures.
type FilesResult struct {
	Nodes     int              `json:"nodes"`
	Replicas  int              `json:"replicas"`
	Transfers []TransferResult `json:"transfers"`
	// ReReplication: files held by a crashed node, and the seconds from the
	// crash until every file again has Replicas copies.
	ReReplicatedFiles   int     `json:"rereplicated_files"`
	ReReplicatedBytes   int64   `json:"rereplicated_bytes"`
	ReReplicationSecond float64 `json:"rereplication_seconds"`
}

// TransferResult is the throughput of one file size.
type TransferResult struct {
	Size         int64   `json:"size_bytes"`
	Count        int     `json:"count"`
	UploadMBps   float64 `json:"upload_mb_per_sec"`
	DownloadMBps float64 `json:"download_mb_per_sec"`
}

// Files starts a ring of real node processes and measures upload and
// download throughput through the same client `tide upload` uses, then the
// time to restore every file's replicas after one node is killed.
func Files(ctx context.Context, nodes, replicas int, sizes []int64, totalPerSize int64, crashFiles int, log io.Writer) (FilesResult, error) {
	res := FilesResult{Nodes: nodes, Replicas: replicas}
	dir, err := os.MkdirTemp("", "tide-bench-files-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	local := &cluster.Local{Dir: dir}
	defer local.StopAll(5 * time.Second)
	procs, err := StartRing(ctx, local, nodes, replicas, []string{"--tick", "250ms", "--full-repair", "5s"}, log)
	if err != nil {
		return res, err
	}
	c := store.NewClient()
	defer c.Close()
	var addrs []string
	for _, p := range procs {
		addrs = append(addrs, p.Spec.ChordAddr)
	}
	if err := WaitConverged(ctx, c.RPC, addrs, time.Minute); err != nil {
		return res, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range sizes {
		count := int(max(1, totalPerSize/size))
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		tr := TransferResult{Size: size, Count: count}
		t := time.Now()
		for i := range count {
			name := fmt.Sprintf("bench-%d-%d", size, i)
			if err := c.Upload(ctx, addrs[i%len(addrs)], name, bytes.NewReader(data)); err != nil {
				return res, err
			}
		}
		tr.UploadMBps = float64(size) * float64(count) / 1e6 / time.Since(t).Seconds()
		t = time.Now()
		for i := range count {
			name := fmt.Sprintf("bench-%d-%d", size, i)
			var sink countWriter
			if err := c.Download(ctx, addrs[(i+1)%len(addrs)], name, &sink, nil); err != nil {
				return res, err
			}
			if int64(sink) != size {
				return res, fmt.Errorf("download %s: %d bytes, want %d", name, sink, size)
			}
		}
		tr.DownloadMBps = float64(size) * float64(count) / 1e6 / time.Since(t).Seconds()
		fmt.Fprintf(log, "size %d x %d: upload %.1f MB/s, download %.1f MB/s\n", size, count, tr.UploadMBps, tr.DownloadMBps)
		res.Transfers = append(res.Transfers, tr)
	}
	if crashFiles <= 0 || nodes <= replicas {
		return res, nil
	}
	// Re-replication: more files, then kill one node and time the repair.
	small := make([]byte, 256<<10)
	for i := range crashFiles {
		if err := c.Upload(ctx, addrs[i%len(addrs)], fmt.Sprintf("crash-%d", i), bytes.NewReader(small)); err != nil {
			return res, err
		}
	}
	want, err := copiesByName(ctx, procs)
	if err != nil {
		return res, err
	}
	victim := procs[1]
	var lost []string
	local1, err := localNames(ctx, victim.Spec.HTTPAddr)
	if err != nil {
		return res, err
	}
	for _, m := range local1 {
		lost = append(lost, m.Name)
		res.ReReplicatedBytes += m.Size
	}
	res.ReReplicatedFiles = len(lost)
	fmt.Fprintf(log, "killing %s, which holds %d of %d files\n", victim.Spec.Name, len(lost), len(want))
	t := time.Now()
	victim.Kill()
	survivors := append(append([]*cluster.Proc(nil), procs[:1]...), procs[2:]...)
	for {
		got, err := copiesByName(ctx, survivors)
		if err == nil {
			ok := true
			for name := range want {
				if got[name] < replicas {
					ok = false
					break
				}
			}
			if ok {
				break
			}
		}
		if time.Since(t) > 5*time.Minute {
			return res, fmt.Errorf("replicas not restored within 5 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.ReReplicationSecond = time.Since(t).Seconds()
	return res, nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

func localNames(ctx context.Context, httpAddr string) ([]engine.Meta, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/files?local=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out []engine.Meta
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out, err
}

func copiesByName(ctx context.Context, procs []*cluster.Proc) (map[string]int, error) {
	out := map[string]int{}
	for _, p := range procs {
		ms, err := localNames(ctx, p.Spec.HTTPAddr)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			if !m.Deleted {
				out[m.Name]++
			}
		}
	}
	return out, nil
}

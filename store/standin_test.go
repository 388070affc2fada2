package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"tide/chord"
	"tide/store/files"
)

// TestUploadThroughStandIn checks that an upload through a remaining node
// succeeds while its file's owner is dead and the ring has not noticed
// (no Chord tick runs after the kill): the node the upload was sent to
// hands it to the owner's successor, which stores it for the owner and
// copies it to the rest of the owner's replica set; a delete goes the same
// way. Once the owner is back and the ring has it again, repair gives it
// the tombstone.
func TestUploadThroughStandIn(t *testing.T) {
	ctx := context.Background()
	manual := func(c *Config) { c.TickInterval = time.Hour } // the test ticks the ring itself
	nodes := []*Node{startTestNode(t, "", 3, manual)}
	for len(nodes) < 5 {
		nodes = append(nodes, startTestNode(t, nodes[0].ring.Self().Addr(), 3, manual))
	}
	tick := func(ns []*Node) {
		for _, n := range ns {
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			n.ring.Tick(tctx)
			cancel()
		}
	}
	waitFor(t, "ring to converge", func() bool { tick(nodes); return ringConverged(nodes) })
	for range 10 {
		tick(nodes) // fingers
	}

	// The owner of the file, and a node to upload through that is neither
	// the owner nor its successor (the stand-in).
	owner := nodes[2]
	var ids []chord.Ref
	for _, n := range nodes {
		ids = append(ids, n.ring.Self())
	}
	var name string
	for i := 0; ; i++ {
		name = fmt.Sprintf("standin-%d.txt", i)
		if chord.SuccessorAmong(ids, chord.KeyOf(name)) == owner.ring.Self() {
			break
		}
	}
	standInRef := chord.SuccessorAmong(ids, owner.ring.Self().ID+1)
	var standIn, via *Node
	for _, n := range nodes {
		switch r := n.ring.Self(); {
		case r == standInRef:
			standIn = n
		case r != owner.ring.Self() && via == nil:
			via = n
		}
	}
	c := NewClient()
	defer c.Close()
	upload(t, c, via, name, []byte("before"))

	cfg := restartConfig(owner)
	owner.Close()
	data := content(name, 5000)
	uctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.Upload(uctx, via.ring.Self().Addr(), name, bytes.NewReader(data)); err != nil {
		t.Fatalf("upload through %s while owner %s is dead and the ring has not noticed: %v", via.ring.Self().Addr(), owner.ring.Self().Addr(), err)
	}
	_, body := httpGet(t, "http://"+standIn.HTTPAddr()+"/metrics")
	if !strings.Contains(body, "tide_files_stand_ins_total 1") {
		t.Errorf("the owner's successor did not count the upload as stood in for:\n%s", grepLines(body, "stand_ins"))
	}
	for _, n := range nodes {
		if n == owner {
			continue
		}
		got, err := download(c, n, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("download through %s after the stand-in took the upload: %d bytes, %v", n.ring.Self().Addr(), len(got), err)
		}
	}
	// A second upload skips the owner it found unreachable.
	upload(t, c, via, name, []byte("second"))
	// So does a delete: the stand-in writes the tombstone with a majority
	// of the owner's set, and the file reads as gone through every node.
	req, _ := http.NewRequest(http.MethodDelete, "http://"+via.HTTPAddr()+"/files/"+name, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("delete through %s while the owner is dead: %s %s", via.ring.Self().Addr(), resp.Status, msg)
	}
	for _, n := range nodes {
		if n == owner {
			continue
		}
		if _, err := download(c, n, name); err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("download through %s after the delete through a stand-in: %v, want 404", n.ring.Self().Addr(), err)
		}
	}

	// The owner comes back; once the ring has it again, repair gives it
	// the newest copy.
	back, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Close() })
	nodes[2] = back
	waitFor(t, "the returned owner to hold the tombstone", func() bool {
		tick(nodes)
		m, ok, err := back.eng.Get(name)
		return err == nil && ok && m.Deleted
	})
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// TestOwnerRefusesLateUpload: a forwarded upload that reaches its owner
// after the newest version its sender allowed (the sender may have
// passed the owner over and had a stand-in acknowledge it, and the
// client may have overwritten the file since) is refused whole, with
// HdrRefused, and changes nothing; one in time is stored. Before the
// refusal, an owner that woke from a pause stored such an upload under a
// newer version than the overwrite, which it replaced everywhere.
func TestOwnerRefusesLateUpload(t *testing.T) {
	nodes := startCluster(t, 3, 3)
	c := NewClient()
	defer c.Close()
	name := "late.txt"
	upload(t, c, nodes[0], name, []byte("acknowledged"))
	owner, _ := ownerOf(t, nodes, name)
	forward := func(body string, notAfter time.Time) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, "http://"+owner.HTTPAddr()+"/files/"+name, strings.NewReader(body))
		req.Header.Set(files.HdrForwarded, "1")
		req.Header.Set(files.HdrNotAfter, fmt.Sprint(notAfter.UnixNano()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := forward("late", time.Now().Add(-time.Second))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(files.HdrRefused) == "" {
		t.Fatalf("an upload past its %s: %s (%s %q), want 503 with %s", files.HdrNotAfter, resp.Status, files.HdrRefused, resp.Header.Get(files.HdrRefused), files.HdrRefused)
	}
	for _, via := range nodes {
		if got, err := download(c, via, name); err != nil || string(got) != "acknowledged" {
			t.Fatalf("download via %s after a late upload: %q, %v; want the acknowledged upload", via.ring.Self(), got, err)
		}
	}
	if resp := forward("in time", time.Now().Add(time.Minute)); resp.StatusCode != http.StatusCreated {
		t.Fatalf("an upload within its %s: %s", files.HdrNotAfter, resp.Status)
	}
	if got, err := download(c, nodes[0], name); err != nil || string(got) != "in time" {
		t.Fatalf("download after an upload in time: %q, %v", got, err)
	}
}

// TestOutOfRingRefusesForwards: a node that is not in a ring (here a
// standby; also a node between its restart and its join, which the
// others still forward to) refuses a read, upload or delete forwarded to
// it as an owner or stand-in, with 503 and HdrRefused, and stores
// nothing. Before, it took itself for the file's only replica: it
// answered "not found" for a file acknowledged while it was down, and
// acknowledged an upload with one copy.
func TestOutOfRingRefusesForwards(t *testing.T) {
	n := startTestNode(t, "", 3, func(c *Config) { c.Standby = true })
	name := "out-of-ring.txt"
	for _, tc := range []struct {
		method string
		body   string
		hdr    map[string]string
	}{
		{http.MethodGet, "", nil},
		{http.MethodPut, "one copy", nil},
		{http.MethodPut, "one copy", map[string]string{files.HdrStandIn: n.ring.Self().String()}},
		{http.MethodDelete, "", nil},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+n.HTTPAddr()+"/files/"+name, strings.NewReader(tc.body))
		req.Header.Set(files.HdrForwarded, "1")
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(msg), "not in a ring") {
			t.Fatalf("forwarded %s %v to a node out of a ring: %s %q, want 503 saying it is not in a ring", tc.method, tc.hdr, resp.Status, msg)
		}
		if tc.method == http.MethodPut && resp.Header.Get(files.HdrRefused) == "" {
			t.Fatalf("forwarded upload %v refused without %s", tc.hdr, files.HdrRefused)
		}
	}
	if _, ok, _ := n.eng.Get(name); ok {
		t.Fatal("a node out of a ring stored a forwarded upload or delete")
	}
}

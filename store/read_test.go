package store

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"tide/chord"
	"tide/store/files"
)

// TestOwnerReadsNewestReplica: an owner whose own copy is older than its
// replicas' (as after it took over a range, or was cut off while
// an upload went elsewhere) serves the replica's newer copy, and a
// replicas' newer tombstone makes the file gone; through the owner and
// through the other nodes alike. Before reads compared versions, the
// owner served its own copy.
func TestOwnerReadsNewestReplica(t *testing.T) {
	name := "newest.bin"
	nodes, c, older, newer := olderCopyOnThree(t, 3, name)
	owner, replicas := ownerOf(t, nodes, name)
	m, _, _ := owner.eng.Get(name)
	internal := func(method string, n *Node, version uint64, body []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, fmt.Sprintf("http://%s/internal/file/%s?version=%d", n.HTTPAddr(), name, version), bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%s on %s: %s", method, n.ring.Self(), resp.Status)
		}
	}
	// A majority without the owner holds each newer write.
	for _, r := range replicas {
		internal(http.MethodPut, r, m.Version+1, newer)
	}
	for _, via := range nodes {
		got, err := download(c, via, name)
		if err != nil || !bytes.Equal(got, newer) {
			t.Fatalf("download via %s (owner: %v): %v, %d bytes; the newer copy has %d, the owner's %d", via.ring.Self(), via == owner, err, len(got), len(newer), len(older))
		}
	}
	for _, r := range replicas {
		internal(http.MethodDelete, r, m.Version+2, nil)
	}
	for _, via := range nodes {
		_, err := download(c, via, name)
		if err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("download via %s after a newer delete on a replica: %v, want 404", via.ring.Self(), err)
		}
	}
}

// TestOwnerReadsPastEmptyReplica: one replica holds a newer copy than
// the owner's (the majority that acknowledged it had a node that has
// since left the replica set, and the owner was cut off), and the other
// holds the owner's older copy (a new member of the set, given it by
// repair) or nothing (a new member still empty). Every read through the
// owner serves the newer copy: the owner hears from every replica that
// answers promptly, not only from the first, and a replica that holds
// nothing does not count. Before, whichever replica answered first
// decided, and the owner served its own older copy about every other
// read. Each replica holds the newer copy in turn, and its answers come
// 20 ms late (well within answerGrace): the other replica's answer is
// always the first.
func TestOwnerReadsPastEmptyReplica(t *testing.T) {
	name := "past-empty.bin"
	nodes, c, older, newer := olderCopyOnThree(t, 3, name)
	owner, replicas := ownerOf(t, nodes, name)
	m, _, _ := owner.eng.Get(name)
	defer files.DelayAnswersForTest(nil)
	for i, holder := range replicas {
		other := replicas[1-i]
		version := m.Version + 1 + uint64(i)
		if i > 0 {
			// other held the newer copy last round; it now holds the
			// owner's older one again, and holder (left empty) the newer.
			if err := other.eng.Drop(name, version-1); err != nil {
				t.Fatal(err)
			}
			putVersion(t, other, name, m.Version, older)
		}
		putVersion(t, holder, name, version, newer)
		if mo, _, _ := other.eng.Get(name); mo.Version != m.Version {
			t.Fatalf("round %d: the other replica holds version %d, not the owner's %d", i, mo.Version, m.Version)
		}
		late := holder.ring.Self()
		files.DelayAnswersForTest(func(r chord.Ref) time.Duration {
			if r == late {
				return 20 * time.Millisecond
			}
			return 0
		})
		read := func(what string) {
			t.Helper()
			for j := range 30 {
				got, err := download(c, owner, name)
				if err != nil || !bytes.Equal(got, newer) {
					t.Fatalf("read %d through the owner, the newer copy on replica %d, the other %s: %v, %d bytes; the newer copy has %d, the owner's %d", j, i, what, err, len(got), len(newer), len(older))
				}
			}
		}
		read("holding the owner's copy")
		if err := other.eng.Drop(name, m.Version); err != nil {
			t.Fatal(err)
		}
		read("empty")
	}
}

// TestLeavingNodeReadsWhereItWrites: a leaving node routes uploads to the
// successor that takes its range, which stores them with its own replica
// set; it must route the reads forwarded to it there too. Here the
// newer copy was acknowledged by a majority of the successor's set that
// leaves out one of the leaving node's replicas, and the successor is
// then lost: a read the leaving node answered as the owner would compare
// its own older copy with that replica's equally old one and serve it.
func TestLeavingNodeReadsWhereItWrites(t *testing.T) {
	name := "leaving-read.bin"
	nodes, _, _, newer := olderCopyOnThree(t, 4, name)
	byRef := map[chord.Ref]*Node{}
	for _, n := range nodes {
		byRef[n.ring.Self()] = n
	}
	leaver, _ := ownerOf(t, nodes, name)
	// The ring after the leaver: its successor s, then x (a replica of
	// the leaver's set, and of s's), then y (in s's set only).
	s := byRef[leaver.ring.Successor(0)]
	x := byRef[s.ring.Successor(0)]
	y := byRef[x.ring.Successor(0)]
	m, _, _ := leaver.eng.Get(name)
	leaver.leaving.Store(true)
	// The newer upload, as the leaver routes it: s stores it, and s and y
	// (a majority of s's set) acknowledge it; x missed it.
	for _, n := range []*Node{s, y} {
		putVersion(t, n, name, m.Version+1, newer)
	}
	s.Close()
	// A read another node forwards to the leaver, which it still takes
	// for the owner.
	for i := range 5 {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/files/%s", leaver.HTTPAddr(), name), nil)
		req.Header.Set(files.HdrForwarded, "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && !bytes.Equal(got, newer) {
			t.Fatalf("read %d forwarded to the leaving node: an older copy (%d bytes, served by %s; leaving %s, s %s, x %s, y %s; the leaving node's successors %v); the acknowledged one has %d", i, len(got), resp.Header.Get(files.HdrServedBy), leaver.ring.Self(), s.ring.Self(), x.ring.Self(), y.ring.Self(), leaver.ring.Successors(), len(newer))
		}
		if resp.StatusCode != http.StatusOK {
			t.Logf("read %d forwarded to the leaving node: %s %s", i, resp.Status, got)
		}
	}
}

// ownerOf returns the node that owns name and the others.
func ownerOf(t *testing.T, nodes []*Node, name string) (*Node, []*Node) {
	t.Helper()
	var owner *Node
	var rest []*Node
	for _, n := range nodes {
		if n.ring.Owns(chord.KeyOf(name)) {
			owner = n
		} else {
			rest = append(rest, n)
		}
	}
	if owner == nil {
		t.Fatal("no node owns the file")
	}
	return owner, rest
}

// putVersion stores data as version v of name on n alone, as a replica
// is sent a copy.
func putVersion(t *testing.T, n *Node, name string, v uint64, data []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://%s/internal/file/%s?version=%d", n.HTTPAddr(), name, v), bytes.NewReader(data))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("put version %d of %s on %s: %s", v, name, n.ring.Self(), resp.Status)
	}
}

// olderCopyOnThree starts a ring of size nodes that keep 3 copies,
// uploads name, and waits for its 3 copies; it returns the ring, a
// client, that content and a newer one of another size.
func olderCopyOnThree(t *testing.T, size int, name string) ([]*Node, *Client, []byte, []byte) {
	t.Helper()
	nodes := startCluster(t, size, 3)
	c := NewClient()
	t.Cleanup(c.Close)
	older, newer := content(name, 4096), content("other-"+name, 5000)
	upload(t, c, nodes[0], name, older)
	waitFor(t, "3 copies", func() bool { return copies(nodes, name) == 3 })
	return nodes, c, older, newer
}

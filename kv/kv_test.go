package kv

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

func TestPartitioners(t *testing.T) {
	if got := Partitioners["md5-mod10000"]([]byte("bed")); got != 4019 {
		t.Fatalf("md5-mod10000(bed) = %d, want 4019", got)
	}
	if got := Partitioners["md5-low32"]([]byte("a.txt")); got != 607204990 {
		t.Fatalf("md5-low32(a.txt) = %d, want 607204990", got)
	}
}

func TestBuckets(t *testing.T) {
	for _, c := range []struct{ lo, hi uint32 }{{0, 0}, {100, 200}, {4000000000, 100}, {5, 6}} {
		b := 16
		for i := range b {
			lo, hi := bucketRange(i, c.lo, c.hi, b)
			// every position of the bucket's range maps back to bucket i
			for _, p := range []uint32{lo + 1, hi} {
				if lo == hi {
					continue
				}
				if got := bucketOf(p, c.lo, c.hi, b); got != i {
					t.Fatalf("range (%d,%d]: pos %d of bucket %d maps to %d", c.lo, c.hi, p, i, got)
				}
			}
		}
	}
}

// TestPreferenceCached checks the cached preference lists against a walk
// of the ring, for rings with repeated addresses (several tokens per
// node) and list lengths past the cache's, and that appending to one
// leaves the ring's copy alone.
func TestPreferenceCached(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		var ms []Member
		nodes := 1 + rng.IntN(12)
		for range 1 + rng.IntN(20) {
			ms = append(ms, Member{Addr: fmt.Sprint("n", rng.IntN(nodes)), Token: rng.Uint32()})
		}
		r := NewStaticRing(Partitioners["md5-low32"], ms)
		for range 50 {
			pos := rng.Uint32()
			n := 1 + rng.IntN(12)
			got := r.Preference(pos, n)
			i := sort.Search(len(r.members), func(i int) bool { return r.members[i].Token >= pos }) % len(r.members)
			if want := r.walk(i, n); !slices.Equal(got, want) {
				t.Fatalf("Preference(%d, %d) = %v, want %v", pos, n, got, want)
			}
			before := slices.Clone(r.Preference(pos, 12))
			_ = append(got, "intruder")
			if after := r.Preference(pos, 12); !slices.Equal(before, after) {
				t.Fatalf("an append to a returned list changed the ring's: %v, then %v", before, after)
			}
		}
	}
}

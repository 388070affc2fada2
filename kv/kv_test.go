package kv

import "testing"

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

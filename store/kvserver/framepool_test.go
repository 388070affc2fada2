package kvserver

import "testing"

func TestFramePool(t *testing.T) {
	var p framePool
	for _, n := range []int{0, 100, framePoolMin - 1, framePoolMin, framePoolStep, framePoolStep + 1, 1 << 20, framePoolClasses * framePoolStep, framePoolClasses*framePoolStep + 1} {
		b := p.get(n)
		if len(b) != n {
			t.Fatalf("get(%d) has length %d", n, len(b))
		}
		pooled := n >= framePoolMin && n <= framePoolClasses*framePoolStep
		if c := p.class(n); (c >= 0) != pooled {
			t.Fatalf("class(%d) = %d", n, c)
		}
		if pooled && cap(b)%framePoolStep != 0 {
			t.Fatalf("get(%d) has capacity %d, not a whole class", n, cap(b))
		}
		p.put(b)
	}
	// A buffer handed back serves the next frame of its class. sync.Pool
	// may drop what it is given (under the race detector, a quarter of
	// it, at random), but not every time.
	reused := false
	for range 50 {
		b := p.get(1 << 20)
		p.put(b)
		c := p.get(1<<20 - 100)
		if len(c) != 1<<20-100 {
			t.Fatalf("length %d", len(c))
		}
		if &c[:1][0] == &b[:1][0] {
			reused = true
			break
		}
	}
	if !reused {
		t.Fatal("a recycled buffer was never handed out again")
	}
	// A foreign buffer (not of a class size) is not pooled.
	p.put(make([]byte, 0, framePoolStep+1))
	if c := p.get(framePoolStep + 1); cap(c) != 2*framePoolStep {
		t.Fatalf("capacity %d", cap(c))
	}
}

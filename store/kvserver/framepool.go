package kvserver

import "sync"

// framePool recycles the buffers of large inbound frames. A node receiving
// a range stream gets a frame of about a MiB per chunk; allocating each
// afresh makes the kernel hand over and zero new pages at the stream's
// rate, which costs more CPU than storing the data. Buffers come in
// classes of framePoolStep bytes; frames outside the pooled sizes are
// allocated as usual. The pools empty themselves when the garbage
// collector runs while they sit unused.
type framePool struct {
	classes [framePoolClasses]sync.Pool
}

const (
	framePoolStep    = 256 << 10
	framePoolClasses = 16 // pooled frames: 64 KiB to 4 MiB
	framePoolMin     = 64 << 10
)

// class is the class of a frame of n bytes, or -1 when it is not pooled.
func (p *framePool) class(n int) int {
	if n < framePoolMin {
		return -1
	}
	c := (n - 1) / framePoolStep
	if c >= framePoolClasses {
		return -1
	}
	return c
}

// get returns a buffer of length n.
func (p *framePool) get(n int) []byte {
	c := p.class(n)
	if c < 0 {
		return make([]byte, n)
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, (c+1)*framePoolStep)
}

// put hands back a buffer get returned, once nothing refers to it.
func (p *framePool) put(b []byte) {
	c := p.class(cap(b))
	if c < 0 || cap(b) != (c+1)*framePoolStep {
		return
	}
	b = b[:0]
	p.classes[c].Put(&b)
}

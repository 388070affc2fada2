package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// stallTimeout bounds how long a transfer to another node may make no
// progress: the transport reads nothing more of the body (the receiver's
// socket buffers are full and it reads nothing). A node that hangs (SIGSTOP, a paused container)
// keeps its connections open and reads nothing, and without this deadline
// an upload would wait for it until its client gave up.
var stallTimeout = 10 * time.Second

// errStalled is the cause of a transfer cancelled for making no progress.
var errStalled = errors.New("no progress")

// stallGuard cancels a request whose body the transport has not read for
// stallTimeout.
type stallGuard struct {
	r     io.Reader
	timer *time.Timer
}

// guardStall returns a context for a request sending body, the body to
// send in its place, and a function to call once the answer's headers
// are in (or the request failed).
func guardStall(ctx context.Context, body io.Reader) (context.Context, io.Reader, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	g := &stallGuard{r: body}
	g.timer = time.AfterFunc(stallTimeout, func() {
		cancel(fmt.Errorf("%w for %s", errStalled, stallTimeout))
	})
	var r io.Reader = g
	if body == nil {
		r = nil
	}
	return ctx, r, func() { g.timer.Stop() }
}

func (g *stallGuard) Read(p []byte) (int, error) {
	g.timer.Reset(stallTimeout)
	k, err := g.r.Read(p)
	if err != nil {
		// All sent (or the source failed): the wait for the answer is
		// the transport's ResponseHeaderTimeout, which allows for the
		// receiver's fsync.
		g.timer.Stop()
	}
	return k, err
}

// stallCause names a stall as the reason a request failed.
func stallCause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); errors.Is(c, errStalled) {
		return fmt.Errorf("%w (%v)", c, err)
	}
	return err
}

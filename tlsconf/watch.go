package tlsconf

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// WatchFiles calls reload on SIGHUP and whenever one of paths changes
// (size or modification time, checked every interval; 0 means 2s), until
// ctx ends: how a process picks up a new tokens or ACL file without a
// restart. A reload that fails is logged and the old contents stay in
// force; what is a failure (an empty file, a syntax error) is reload's to
// say. name says what is reloaded, in the log.
func WatchFiles(ctx context.Context, interval time.Duration, log *slog.Logger, name string, reload func() error, paths ...string) {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	type stamp struct {
		mtime time.Time
		size  int64
	}
	stat := func() []stamp {
		out := make([]stamp, len(paths))
		for i, p := range paths {
			if st, err := os.Stat(p); err == nil {
				out[i] = stamp{st.ModTime(), st.Size()}
			}
		}
		return out
	}
	last := stat()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(interval)
	defer t.Stop()
	do := func(why string) {
		if err := reload(); err != nil {
			log.Error(name+": reload failed; keeping the old one", "trigger", why, "err", err)
			return
		}
		log.Info(name+": reloaded", "trigger", why)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			last = stat()
			do("SIGHUP")
		case <-t.C:
			now := stat()
			changed := false
			for i := range now {
				changed = changed || now[i] != last[i]
			}
			if changed {
				last = now
				do("file changed")
			}
		}
	}
}

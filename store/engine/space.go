package engine

import (
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"tide/store/status"
)

// A node refuses writes while the free space of its data directory's
// filesystem is below a reserve, before pebble can meet ENOSPC: pebble
// treats a failed write to its log as fatal and ends the process. The
// reserve leaves room for what must still be written while writes are
// refused (deletes, which free space, and pebble's own flushes and
// compactions), and for the writes already accepted when the check
// passed. Client writes are refused at the reserve; the engine itself
// refuses a commit that adds data once free space falls below half the
// reserve, the last line before pebble's log (floor).

// DefaultDiskReserve is the reserve on a filesystem of 512 MiB or more;
// a smaller one reserves an eighth of its size (see SetDiskReserve).
const DefaultDiskReserve = 64 << 20

// spaceFresh is how long a measurement of free space stands when free
// space is well above the reserve; near it, every check measures.
const spaceFresh = 100 * time.Millisecond

// space tracks the free bytes of the data directory's filesystem.
type space struct {
	dir     string
	reserve atomic.Int64 // 0: no reserve, nothing is refused
	free    atomic.Int64 // at the last statfs
	at      atomic.Int64 // unix nanoseconds of the last statfs
	refused atomic.Int64
	// statfs measures; tests replace it (SetStatfs) while the node runs.
	statfs atomic.Pointer[statfsFunc]
}

type statfsFunc = func(dir string) (free, size int64, err error)

func statfs(dir string) (free, size int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return int64(uint64(st.Bavail) * uint64(st.Bsize)), int64(uint64(st.Blocks) * uint64(st.Bsize)), nil
}

// SetDiskReserve sets the free space below which writes are refused.
// A negative reserve picks the default: DefaultDiskReserve, or an eighth
// of the filesystem if that is less. 0 refuses nothing.
func (e *Engine) SetDiskReserve(reserve int64) error {
	if reserve < 0 {
		_, size, err := (*e.space.statfs.Load())(e.dir)
		if err != nil {
			return fmt.Errorf("free space of %s: %w", e.dir, err)
		}
		reserve = min(DefaultDiskReserve, size/8)
	}
	e.space.reserve.Store(reserve)
	e.space.at.Store(0)
	return nil
}

// SetStatfs replaces how free space is measured: f returns the free and
// total bytes of dir's filesystem. Tests use it to fill a disk without
// filling one.
func (e *Engine) SetStatfs(f func(dir string) (free, size int64, err error)) {
	e.space.statfs.Store(&f)
	e.space.at.Store(0)
}

// DiskReserve returns the reserve in force.
func (e *Engine) DiskReserve() int64 { return e.space.reserve.Load() }

// FreeBytes returns the free space of the data directory's filesystem,
// measured at most spaceFresh ago.
func (e *Engine) FreeBytes() int64 { return e.space.freeBytes(0) }

// WritesRefused counts the writes refused because the disk was full.
func (e *Engine) WritesRefused() int64 { return e.space.refused.Load() }

// freeBytes measures free space, or returns the last measurement if it is
// fresh and far enough above the reserve that need bytes cannot matter.
func (s *space) freeBytes(need int64) int64 {
	now := time.Now().UnixNano()
	free := s.free.Load()
	if now-s.at.Load() < int64(spaceFresh) && free-need > 4*s.reserve.Load()+64<<20 {
		return free
	}
	f, _, err := (*s.statfs.Load())(s.dir)
	if err != nil {
		return free // keep the last figure; a failing statfs refuses nothing new
	}
	s.free.Store(f)
	s.at.Store(now)
	return f
}

// IsDiskFull reports whether err is a refusal for lack of disk space: a
// *status.Error with code 507, whose text starts with "disk full".
func IsDiskFull(err error) bool {
	var se *status.Error
	return errors.As(err, &se) && se.Code == http.StatusInsufficientStorage
}

// CheckSpace refuses a write of need bytes that would leave less free
// space than the reserve. Its error answers 507 and says how much is free.
func (e *Engine) CheckSpace(need int64) error { return e.space.check(need, 1) }

// checkFloor is CheckSpace at half the reserve: the engine's own refusal
// of a commit that adds data, for writes that passed CheckSpace while
// others took the space, and for writes (hand-offs, repairs) that do
// not go through it.
func (e *Engine) checkFloor(need int64) error { return e.space.check(need, 2) }

func (s *space) check(need int64, div int64) error {
	reserve := s.reserve.Load() / div
	if reserve <= 0 {
		return nil
	}
	free := s.freeBytes(need)
	if free-need >= reserve {
		return nil
	}
	s.refused.Add(1)
	return &status.Error{Code: http.StatusInsufficientStorage,
		Msg: fmt.Sprintf("disk full: %s free on the filesystem of %s, below the reserve of %s (--disk-reserve); writes are refused until space returns",
			sizeString(free), s.dir, sizeString(s.reserve.Load()))}
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

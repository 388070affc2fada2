package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"tide/store/files"
)

func newUploadCmd() *cobra.Command {
	var name string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "upload FILE ADDR",
		Short: "Upload a file to the ring",
		Long: `Upload FILE the way the seed's upload.py does: hash its name, ask the node at
ADDR for find_successor, and POST the file to the owner's /upload. ADDR is
either address of any node: its Chord address (a bare IP means port 5057) or
its HTTP address.`,
		Example: `  tide upload README.md 127.0.0.1
  tide upload --name notes.txt ./draft.txt 127.0.0.2:5058`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			if st.IsDir() {
				return fmt.Errorf("%s is a directory", args[0])
			}
			if name == "" {
				name = filepath.Base(args[0])
			}
			c, err := newStoreClient()
			if err != nil {
				return err
			}
			defer c.Close()
			pr := newProgress("upload "+name, st.Size(), quiet)
			err = c.Upload(cmd.Context(), nodeAddr(args[1]), name, pr.reader(f))
			pr.finish(err)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name to store the file under (default: the file's base name)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing on success")
	return cmd
}

func newDownloadCmd() *cobra.Command {
	var out string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "download NAME ADDR",
		Short: "Download a file from the ring",
		Long: `Download NAME the way the seed's download.py does: hash it, ask the node at
ADDR for find_successor, and GET it from the owner. The file is written to
--output (default: NAME in the current directory; - for standard output),
through a temporary file so a failed download leaves nothing behind. ADDR is
either address of any node: its Chord address (a bare IP means port 5057) or
its HTTP address.`,
		Example: `  tide download README.md 127.0.0.3 -o /tmp/README.md
  tide download README.md 127.0.0.1:5058 -o - | head`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := files.ValidName(name); err != nil {
				return err
			}
			if out == "" {
				out = name
			}
			c, err := newStoreClient()
			if err != nil {
				return err
			}
			defer c.Close()
			pr := newProgress("download "+name, -1, quiet || out == "-")
			if out == "-" {
				err := c.Download(cmd.Context(), nodeAddr(args[1]), name, pr.writer(os.Stdout), pr.setTotal)
				pr.finish(err)
				return err
			}
			tmp, err := os.CreateTemp(filepath.Dir(out), ".tide-download-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			err = c.Download(cmd.Context(), nodeAddr(args[1]), name, pr.writer(tmp), pr.setTotal)
			if err == nil {
				err = tmp.Close()
			} else {
				tmp.Close()
			}
			if err == nil {
				err = os.Rename(tmp.Name(), out)
			}
			pr.finish(err)
			return err
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write the file (- for standard output)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing on success")
	return cmd
}

// progress reports a transfer's bytes on standard error: a line every half
// second for transfers that last, and a summary at the end.
type progress struct {
	what  string
	total atomic.Int64
	done  atomic.Int64
	quiet bool
	start time.Time
	stop  chan struct{}
}

func newProgress(what string, total int64, quiet bool) *progress {
	p := &progress{what: what, quiet: quiet, start: time.Now(), stop: make(chan struct{})}
	p.total.Store(total)
	if !quiet {
		go p.loop()
	}
	return p
}

func (p *progress) setTotal(n int64) { p.total.Store(n) }

func (p *progress) loop() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			d, tot := p.done.Load(), p.total.Load()
			if tot > 0 {
				fmt.Fprintf(os.Stderr, "%s: %s of %s (%.0f%%), %s\n", p.what, human(d), human(tot), 100*float64(d)/float64(tot), p.rate(d))
			} else {
				fmt.Fprintf(os.Stderr, "%s: %s, %s\n", p.what, human(d), p.rate(d))
			}
		}
	}
}

func (p *progress) rate(d int64) string {
	s := time.Since(p.start).Seconds()
	if s <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MB/s", float64(d)/1e6/s)
}

func (p *progress) finish(err error) {
	close(p.stop)
	if err == nil && !p.quiet {
		d := p.done.Load()
		fmt.Fprintf(os.Stderr, "%s: %s in %s (%s)\n", p.what, human(d), time.Since(p.start).Round(time.Millisecond), p.rate(d))
	}
}

type countingReader struct {
	r io.Reader
	p *progress
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.done.Add(int64(n))
	return n, err
}

type countingWriter struct {
	w io.Writer
	p *progress
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.p.done.Add(int64(n))
	return n, err
}

func (p *progress) reader(r io.Reader) io.Reader { return countingReader{r, p} }
func (p *progress) writer(w io.Writer) io.Writer { return countingWriter{w, p} }

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

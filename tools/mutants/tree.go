package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// source is the tree mutants are made in: a commit, or the tracked files
// of the working tree.
type source struct {
	desc     string
	populate func(dir string) error            // writes the whole tree into dir
	read     func(path string) ([]byte, error) // one file of it
}

func newSource(root, rev string, worktree bool) (*source, error) {
	if worktree {
		ls, err := gitOutput(root, "ls-files", "-z")
		if err != nil {
			return nil, fmt.Errorf("list tracked files: %w", err)
		}
		files := strings.Split(strings.TrimSuffix(ls, "\x00"), "\x00")
		return &source{
			desc:     "the tracked files of the working tree " + root,
			populate: func(dir string) error { return copyTree(root, dir, files) },
			read:     func(path string) ([]byte, error) { return os.ReadFile(filepath.Join(root, path)) },
		}, nil
	}
	// Resolved once, so that a commit made during the run does not change
	// the code under some of the mutants.
	commit, err := gitOutput(root, "rev-parse", "--verify", "--end-of-options", rev+"^{commit}")
	if err != nil {
		return nil, fmt.Errorf("-rev %s: %w", rev, err)
	}
	commit = strings.TrimSpace(commit)
	subject, _ := gitOutput(root, "log", "-1", "--format=%h %s", commit)
	return &source{
		desc:     "commit " + clip(strings.TrimSpace(subject), 100),
		populate: func(dir string) error { return extractCommit(root, commit, dir) },
		read: func(path string) ([]byte, error) {
			out, err := gitOutput(root, "show", commit+":"+filepath.ToSlash(path))
			return []byte(out), err
		},
	}, nil
}

// copyTree copies files (relative to root) into dst, keeping their
// permission bits and symlinks. A tracked file deleted from the working
// tree is skipped, as are submodules.
func copyTree(root, dst string, files []string) error {
	for _, f := range files {
		src := filepath.Join(root, f)
		info, err := os.Lstat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		to := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			data, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			if err := os.WriteFile(to, data, info.Mode().Perm()); err != nil {
				return err
			}
		}
	}
	return nil
}

// extractCommit writes the files of commit into dst, as git archive
// gives them: modes and symlinks kept, export-ignore honoured.
func extractCommit(root, commit, dst string) error {
	cmd := exec.Command("git", "archive", "--format=tar", commit)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	err = untar(pipe, dst)
	io.Copy(io.Discard, pipe)
	if werr := cmd.Wait(); werr != nil && err == nil {
		err = fmt.Errorf("git archive %s: %w: %s", commit, werr, strings.TrimSpace(stderr.String()))
	}
	return err
}

func untar(r io.Reader, dst string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name := strings.TrimSuffix(h.Name, "/")
		if !filepath.IsLocal(name) {
			return fmt.Errorf("archive entry %q is outside the tree", h.Name)
		}
		to := filepath.Join(dst, name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(to, 0o755)
		case tar.TypeSymlink:
			if err = os.MkdirAll(filepath.Dir(to), 0o755); err == nil {
				err = os.Symlink(h.Linkname, to)
			}
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				break
			}
			var f *os.File
			if f, err = os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(h.Mode).Perm()); err != nil {
				break
			}
			if _, err = io.Copy(f, tr); err != nil {
				f.Close()
				break
			}
			err = f.Close()
		}
		if err != nil {
			return fmt.Errorf("extract %s: %w", h.Name, err)
		}
	}
}

func gitOutput(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

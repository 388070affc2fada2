package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// nodeUID is the numeric user (and group) the node runs as inside the
// image: "nobody", so the container never runs tide as root.
const nodeUID = 65534

// dockerfile describes the node image: nothing but the static tide binary,
// a data volume owned by the node's user, and an empty /tmp.
const dockerfile = `FROM scratch
COPY tide /tide
COPY --chown=65534:65534 data /data
COPY tmp /tmp
USER 65534:65534
VOLUME /data
EXPOSE 5057 5058
ENTRYPOINT ["/tide"]
CMD ["node", "--help"]
`

// NewClient connects to the Docker engine named by the environment
// (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, DOCKER_API_VERSION),
// or to the local socket, negotiating the API version on first use.
func NewClient() (*client.Client, error) {
	return client.New(client.FromEnv)
}

// ModuleRoot returns the directory of the go.mod that governs dir: dir
// itself or its nearest ancestor holding a go.mod file.
func ModuleRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod in %s or any parent directory", dir)
		}
		d = parent
	}
}

// BuildBinary compiles ./cmd/tide of the module at repoDir into out as a
// statically linked linux binary (CGO_ENABLED=0: pebble then uses the pure
// Go zstd codec), for the architecture of the machine running the build.
// It checks the result with CheckStatic.
func BuildBinary(ctx context.Context, repoDir, out string) error {
	if repoDir == "" || out == "" {
		return errors.New("docker: BuildBinary needs a repository directory and an output path")
	}
	if _, err := os.Stat(filepath.Join(repoDir, "cmd", "tide")); err != nil {
		return fmt.Errorf("docker: %s does not look like the tide repository: %w", repoDir, err)
	}
	absOut, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", absOut, "./cmd/tide")
	cmd.Dir = repoDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if outb, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker: go build ./cmd/tide: %w\n%s", err, outb)
	}
	return CheckStatic(absOut)
}

// CheckStatic returns an error unless path is a statically linked ELF
// executable: one with no program interpreter and no shared-library
// dependencies, so it runs in an image built FROM scratch.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("docker: %s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("docker: %s is dynamically linked (it has a program interpreter); build it with CGO_ENABLED=0", path)
		}
	}
	libs, err := f.ImportedLibraries()
	if err == nil && len(libs) > 0 {
		return fmt.Errorf("docker: %s needs shared libraries %v; build it with CGO_ENABLED=0", path, libs)
	}
	return nil
}

// BuildImage builds the node image tag FROM scratch around the static tide
// binary at binaryPath, through the engine's build API with a build
// context streamed from memory. The image's entrypoint is /tide, it runs
// as an unprivileged user and declares /data as a volume. Rebuilding a tag
// removes the image the tag pointed at before, unless something still
// uses it, so repeated builds leave no dangling images.
func BuildImage(ctx context.Context, cli *client.Client, binaryPath, tag string) error {
	if cli == nil {
		return errors.New("docker: BuildImage needs a client")
	}
	if tag == "" {
		return errors.New("docker: BuildImage needs an image tag")
	}
	if err := CheckStatic(binaryPath); err != nil {
		return err
	}
	bin, err := os.Open(binaryPath)
	if err != nil {
		return err
	}
	defer bin.Close()
	st, err := bin.Stat()
	if err != nil {
		return err
	}

	var oldID string
	if old, err := cli.ImageInspect(ctx, tag); err == nil {
		oldID = old.ID
	}

	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeBuildContext(pw, bin, st.Size())) }()
	res, err := cli.ImageBuild(ctx, pr, client.ImageBuildOptions{
		Tags:        []string{tag},
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{LabelManaged: "true"},
		// The classic builder needs no session, which a context
		// streamed over the API cannot offer BuildKit.
		Version: build.BuilderV1,
	})
	if err != nil {
		pr.CloseWithError(err)
		return fmt.Errorf("docker: build image %s: %w", tag, err)
	}
	defer res.Body.Close()
	var log strings.Builder
	dec := json.NewDecoder(res.Body)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("docker: build image %s: reading the build output: %w", tag, err)
		}
		if m.Error != nil {
			return fmt.Errorf("docker: build image %s: %s\n%s", tag, m.Error.Message, log.String())
		}
		log.WriteString(m.Stream)
	}
	img, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		return fmt.Errorf("docker: build image %s: the build ended without the image:\n%s", tag, log.String())
	}
	if oldID != "" && oldID != img.ID {
		// The old image is dangling now; it stays if a container uses it.
		_, _ = cli.ImageRemove(ctx, oldID, client.ImageRemoveOptions{PruneChildren: true})
	}
	return nil
}

// RemoveImage deletes the image tag (and the untagged layers under it).
// An image that does not exist is not an error.
func RemoveImage(ctx context.Context, cli *client.Client, tag string) error {
	_, err := cli.ImageRemove(ctx, tag, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: remove image %s: %w", tag, err)
	}
	return nil
}

// filesTar is a tar of files (absolute path -> contents) and the
// directories above them, owned by nodeUID: files mode 0400, directories
// 0700.
func filesTar(files map[string][]byte) io.Reader {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	dirs := map[string]bool{}
	var paths []string
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		rel := strings.TrimPrefix(path.Clean(p), "/")
		for d := path.Dir(rel); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var ds []string
	for d := range dirs {
		ds = append(ds, d)
	}
	sort.Strings(ds) // parents first
	for _, d := range ds {
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: nodeUID, Gid: nodeUID, ModTime: now})
	}
	for _, p := range paths {
		b := files[p]
		tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(path.Clean(p), "/"), Mode: 0o400, Uid: nodeUID, Gid: nodeUID, Size: int64(len(b)), ModTime: now})
		tw.Write(b)
	}
	tw.Close()
	return &buf
}

// writeBuildContext writes the tar build context: the Dockerfile, the
// binary as "tide", and the directories the image copies.
func writeBuildContext(w io.Writer, bin io.Reader, size int64) error {
	tw := tar.NewWriter(w)
	now := time.Now()
	files := []struct {
		hdr  tar.Header
		body io.Reader
	}{
		{tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile)), ModTime: now}, strings.NewReader(dockerfile)},
		{tar.Header{Name: "tide", Mode: 0o755, Size: size, ModTime: now}, bin},
		{tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: nodeUID, Gid: nodeUID, ModTime: now}, nil},
		{tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: now}, nil},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&f.hdr); err != nil {
			return err
		}
		if f.body != nil {
			n, err := io.Copy(tw, f.body)
			if err != nil {
				return err
			}
			if n != f.hdr.Size {
				return fmt.Errorf("%s: wrote %d of %d bytes", f.hdr.Name, n, f.hdr.Size)
			}
		}
	}
	return tw.Close()
}

// Engine connects to the Docker engine named by the environment and
// checks that it answers.
func Engine(ctx context.Context) (*client.Client, error) {
	cli, err := NewClient()
	if err != nil {
		return nil, err
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, err
	}
	return cli, nil
}

// BuildImageAs builds the node image around binaryPath (BuildImage) under
// a fresh tag, repo:prefix-<8 hex digits>, and returns the tag: an image
// of its own for a test or a run, removed with RemoveImage.
func BuildImageAs(ctx context.Context, cli *client.Client, binaryPath, repo, prefix string) (string, error) {
	var b [4]byte
	rand.Read(b[:])
	tag := repo + ":" + prefix + "-" + hex.EncodeToString(b[:])
	return tag, BuildImage(ctx, cli, binaryPath, tag)
}

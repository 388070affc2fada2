package docker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerfileMatchesDeploy checks that deploy/docker/Dockerfile, which
// `make image` builds, is the Dockerfile BuildImage streams: one image,
// whichever way it is made.
func TestDockerfileMatchesDeploy(t *testing.T) {
	root, err := ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "docker", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if got := strings.Join(lines, "\n"); got != dockerfile {
		t.Errorf("deploy/docker/Dockerfile, without comments:\n%s\nBuildImage's Dockerfile:\n%s", got, dockerfile)
	}
}

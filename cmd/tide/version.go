package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at link time: go build -ldflags "-X main.version=v1.2.3"
// (make release does). Builds without it say "dev".
var version = "dev"

// buildInfo is what tide version reports.
type buildInfo struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Time     string `json:"commit_time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func currentBuild() buildInfo {
	b := buildInfo{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	return b
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print tide's version, commit, Go version and platform",
		Long: `Print the version this binary was released as (make release sets it; a plain
go build says dev), the commit it was built from and when that commit was
made (with "modified" if the tree had uncommitted changes), the Go version
and the platform.`,
		Example: "  tide version\n  tide version --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b := currentBuild()
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(b)
			}
			var parts []string
			if c := b.Commit; c != "" {
				if len(c) > 12 {
					c = c[:12]
				}
				if b.Modified {
					c += "+modified"
				}
				if b.Time != "" {
					c += " of " + b.Time
				}
				parts = append(parts, "commit "+c)
			}
			parts = append(parts, b.Go, b.Platform)
			fmt.Printf("tide %s (%s)\n", b.Version, strings.Join(parts, ", "))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// defaultTimeout bounds a mutant's test command when its block sets none.
const defaultTimeout = 20 * time.Minute

// mutant is one block of the list.
type mutant struct {
	Name        string
	Invariant   string
	File        string
	Run         string
	Timeout     time.Duration
	Original    string
	Replacement string
	line        int // where the block starts in the list
	has         map[string]bool
}

// apply checks that m's original occurs exactly once in src and returns
// src with it replaced.
func apply(src string, m *mutant) (string, error) {
	if n := strings.Count(src, m.Original); n != 1 {
		return "", fmt.Errorf("original snippet occurs %d times in %s, want exactly 1", n, m.File)
	}
	return strings.Replace(src, m.Original, m.Replacement, 1), nil
}

// mutate applies m to the file at path.
func mutate(path string, m *mutant) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := apply(string(src), m)
	if err != nil {
		return err
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(out), info.Mode().Perm())
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	fields = map[string]bool{
		"name": true, "invariant": true, "file": true, "run": true, "timeout": true,
		"original": true, "replacement": true,
	}
)

// parse reads a mutant list (the format is in the package comment).
// Errors name the line.
func parse(data []byte) ([]*mutant, error) {
	lines := strings.Split(string(data), "\n")
	for i := range lines {
		lines[i] = strings.TrimSuffix(lines[i], "\r")
	}
	var (
		ms   []*mutant
		cur  *mutant
		last string // the field a continuation line extends
	)
	set := func(m *mutant, key, val string) {
		switch key {
		case "name":
			m.Name = val
		case "invariant":
			m.Invariant = val
		case "file":
			m.File = val
		case "run":
			m.Run = val
		case "timeout":
			d, err := time.ParseDuration(val)
			if err != nil {
				d = -1 // reported by check
			}
			m.Timeout = d
		case "original":
			m.Original = val
		case "replacement":
			m.Replacement = val
		}
	}
	for i := 0; i < len(lines); i++ {
		line, n := lines[i], i+1
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(line, "#") {
			last = ""
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			switch last {
			case "invariant":
				cur.Invariant += " " + trimmed
			case "run":
				cur.Run += " " + trimmed
			default:
				return nil, fmt.Errorf("%d: an indented line continues an invariant or run field, and follows none", n)
			}
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok || !fields[key] {
			return nil, fmt.Errorf("%d: want a field (name, invariant, file, run, timeout, original, replacement) as \"key: value\", got %q", n, line)
		}
		val = strings.TrimSpace(val)
		if key == "name" {
			cur = &mutant{line: n, has: map[string]bool{}}
			ms = append(ms, cur)
		} else if cur == nil {
			return nil, fmt.Errorf("%d: field %s before the first name", n, key)
		}
		if cur.has[key] {
			return nil, fmt.Errorf("%d: mutant %q has two %s fields", n, cur.Name, key)
		}
		cur.has[key] = true
		last = key
		if key != "original" && key != "replacement" {
			set(cur, key, val)
			continue
		}
		if val != "" {
			return nil, fmt.Errorf("%d: %s: the text goes on the lines after, between ``` fences", n, key)
		}
		last = ""
		i++
		for i < len(lines) && strings.TrimSpace(lines[i]) == "" {
			i++
		}
		if i == len(lines) || !strings.HasPrefix(lines[i], "```") {
			return nil, fmt.Errorf("%d: %s: want an opening ``` fence on the next line", n, key)
		}
		open := i + 1
		var text []string
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			text = append(text, lines[i])
		}
		if i == len(lines) {
			return nil, fmt.Errorf("%d: %s: the fence opened here is never closed (by a line of just ```)", open, key)
		}
		set(cur, key, strings.Join(text, "\n"))
	}
	names := map[string]bool{}
	for _, m := range ms {
		if err := m.check(); err != nil {
			return nil, fmt.Errorf("%d: mutant %q: %w", m.line, m.Name, err)
		}
		if names[m.Name] {
			return nil, fmt.Errorf("%d: a second mutant named %q", m.line, m.Name)
		}
		names[m.Name] = true
	}
	return ms, nil
}

func (m *mutant) check() error {
	if !nameRE.MatchString(m.Name) {
		return fmt.Errorf("a name is letters, digits, '.', '_' and '-'")
	}
	for _, k := range []string{"invariant", "file", "run", "original", "replacement"} {
		if !m.has[k] {
			return fmt.Errorf("no %s field", k)
		}
	}
	if m.Invariant == "" || m.Run == "" {
		return fmt.Errorf("empty invariant or run")
	}
	if !filepath.IsLocal(m.File) {
		return fmt.Errorf("file %q is not a path inside the repository", m.File)
	}
	if m.Original == "" {
		return fmt.Errorf("empty original")
	}
	if m.Original == m.Replacement {
		return fmt.Errorf("the replacement is the original")
	}
	switch {
	case !m.has["timeout"]:
		m.Timeout = defaultTimeout
	case m.Timeout <= 0:
		return fmt.Errorf("timeout is not a positive Go duration such as 20m")
	}
	return nil
}

package resp

import (
	"bytes"
	"path"
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pat, s string
		want   bool
	}{
		{"*", "", true}, {"*", "a/b", true}, {"user:*", "user:1", true}, {"user:*", "users", false},
		{"h?llo", "hello", true}, {"h?llo", "hllo", false}, {"h[ae]llo", "hallo", true}, {"h[ae]llo", "hillo", false},
		{"h[^e]llo", "hallo", true}, {"h[^e]llo", "hello", false}, {"h[a-b]llo", "hbllo", true}, {"h[a-b]llo", "hcllo", false},
		{`h\*llo`, "h*llo", true}, {`h\*llo`, "hello", false}, {"a*b*c", "aXXbYYc", true}, {"a*b*c", "aXXbYY", false},
		{"", "", true}, {"", "a", false}, {"**", "", true}, {"a*", "a", true}, {"*a", "ba", true}, {"*a", "ab", false},
		{"[z-a]", "m", true}, {"[abc", "b", true}, {`[\]]`, "]", true}, {`a\`, `a\`, true}, {"*?", "", false},
		{"*ab*ab", "xabyabab", true}, {"*aab", "aaab", true}, {"a*a*a*b", "aaaa", false},
	} {
		if got := Glob([]byte(c.pat), []byte(c.s)); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.pat, c.s, got, c.want)
		}
		if got := globRef([]byte(c.pat), []byte(c.s)); got != c.want {
			t.Errorf("globRef(%q, %q) = %v, want %v", c.pat, c.s, got, c.want)
		}
	}
}

// TestGlobManyStars: patterns whose stars a backtracking matcher tries in
// every combination (Redis's and globRef take time exponential in the
// number of stars here) finish, with the right answer.
func TestGlobManyStars(t *testing.T) {
	s := []byte(strings.Repeat("a", 4096))
	for _, pat := range []string{strings.Repeat("*a", 40) + "*b", strings.Repeat("*?", 30) + "b", strings.Repeat("*[a-c]", 40) + "[^a]"} {
		if Glob([]byte(pat), s) {
			t.Errorf("%q matches %d a's", pat, len(s))
		}
	}
	if !Glob([]byte(strings.Repeat("*a", 40)+"*"), s) {
		t.Error("*a*a...* does not match a's")
	}
}

// globRef is the backtracking matcher, Redis's way: each * tries every
// length. The reference for Glob's semantics (on short inputs).
func globRef(pat, s []byte) bool {
	for len(pat) > 0 {
		switch pat[0] {
		case '*':
			for i := 0; i <= len(s); i++ {
				if globRef(pat[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if len(s) == 0 {
				return false
			}
			s, pat = s[1:], pat[1:]
		case '[':
			if len(s) == 0 {
				return false
			}
			pat = pat[1:]
			not := len(pat) > 0 && pat[0] == '^'
			if not {
				pat = pat[1:]
			}
			match := false
			for len(pat) > 0 && pat[0] != ']' {
				switch {
				case pat[0] == '\\' && len(pat) > 1:
					match = match || pat[1] == s[0]
					pat = pat[2:]
				case len(pat) >= 3 && pat[1] == '-' && pat[2] != ']':
					lo, hi := min(pat[0], pat[2]), max(pat[0], pat[2])
					match = match || (s[0] >= lo && s[0] <= hi)
					pat = pat[3:]
				default:
					match = match || pat[0] == s[0]
					pat = pat[1:]
				}
			}
			if len(pat) > 0 {
				pat = pat[1:]
			}
			if match == not {
				return false
			}
			s = s[1:]
		case '\\':
			if len(pat) > 1 {
				pat = pat[1:]
			}
			fallthrough
		default:
			if len(s) == 0 || s[0] != pat[0] {
				return false
			}
			s, pat = s[1:], pat[1:]
		}
	}
	return len(s) == 0
}

// FuzzGlob checks Glob against globRef, and against path.Match where
// their semantics meet: no '/' in the string (path.Match's * stops at
// it), a pattern path.Match accepts, and no class holding '-' or '\' or
// empty (Redis reads those where path.Match refuses), and ASCII only
// (path.Match's ? and classes take a rune, Redis's a byte).
func FuzzGlob(f *testing.F) {
	f.Add("a*[b-c]?\\*", "abc?*")
	f.Add("*a*a*a*b", "aaaaaaaaaaaaaaaa")
	f.Add("[^a-c]*x", "dxx")
	f.Add("h\\[ello", "h[ello")
	f.Add("[", "[")
	f.Fuzz(func(t *testing.T, pat, s string) {
		got := Glob([]byte(pat), []byte(s))
		if !Glob([]byte("*"), []byte(s)) {
			t.Fatal("* must match everything")
		}
		if strings.Count(pat, "*") <= 6 && len(s) <= 64 {
			if want := globRef([]byte(pat), []byte(s)); got != want {
				t.Fatalf("Glob(%q, %q) = %v, the backtracking reference says %v", pat, s, got, want)
			}
		}
		if strings.ContainsRune(s, '/') || !ascii(s) || !ascii(pat) || strings.Contains(pat, "[]") || strings.Contains(pat, "[^]") {
			return
		}
		if i := strings.IndexByte(pat, '['); i >= 0 && bytes.ContainsAny([]byte(pat[i:]), "-\\") {
			return
		}
		if want, err := path.Match(pat, s); err == nil && got != want {
			t.Fatalf("Glob(%q, %q) = %v, path.Match says %v", pat, s, got, want)
		}
	})
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

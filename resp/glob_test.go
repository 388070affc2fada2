package resp

import "testing"

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pat, s string
		want   bool
	}{
		{"*", "", true}, {"*", "a/b", true}, {"user:*", "user:1", true}, {"user:*", "users", false},
		{"h?llo", "hello", true}, {"h?llo", "hllo", false}, {"h[ae]llo", "hallo", true}, {"h[ae]llo", "hillo", false},
		{"h[^e]llo", "hallo", true}, {"h[^e]llo", "hello", false}, {"h[a-b]llo", "hbllo", true}, {"h[a-b]llo", "hcllo", false},
		{`h\*llo`, "h*llo", true}, {`h\*llo`, "hello", false}, {"a*b*c", "aXXbYYc", true}, {"a*b*c", "aXXbYY", false},
	} {
		if got := Glob([]byte(c.pat), []byte(c.s)); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.pat, c.s, got, c.want)
		}
	}
}

func FuzzGlob(f *testing.F) {
	f.Add("a*[b-c]?\\*", "abc?*")
	f.Fuzz(func(t *testing.T, pat, s string) {
		Glob([]byte(pat), []byte(s)) // must not panic or hang
		if !Glob([]byte("*"), []byte(s)) {
			t.Fatal("* must match everything")
		}
	})
}

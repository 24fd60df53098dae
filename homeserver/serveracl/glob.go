package serveracl

import (
	"strings"
	"unicode/utf8"
)

// glob is a compiled glob-style pattern (appendices, "Glob-style matching"): * matches zero or
// more characters, ? exactly one; everything else matches itself, case-insensitively (patterns
// are lowered at compile time, names when matched).
type glob struct {
	// parts are the literal runs between the * of the pattern; a ? inside a part matches any one
	// character. anchoredStart/End say whether the pattern starts/ends with a literal part.
	parts                      []string
	anchoredStart, anchoredEnd bool
	// exact is set for a pattern without any wildcard (compared as a string).
	exact   string
	isExact bool
}

func compile(pattern string) glob {
	p := strings.ToLower(pattern)
	if !strings.ContainsAny(p, "*?") {
		return glob{exact: p, isExact: true}
	}
	g := glob{anchoredStart: !strings.HasPrefix(p, "*"), anchoredEnd: !strings.HasSuffix(p, "*")}
	for _, part := range strings.Split(p, "*") {
		if part != "" {
			g.parts = append(g.parts, part)
		}
	}
	if len(g.parts) == 0 { // only stars: matches anything
		g.anchoredStart, g.anchoredEnd = false, false
	}
	return g
}

// match reports whether the whole of s (already lower-case) matches the pattern. Literal runs
// are placed leftmost-first: with only * as a variable-length wildcard that is enough (a run
// placed further left never prevents the next one from matching), so matching is linear in the
// number of runs times the length of s, without backtracking.
func (g glob) match(s string) bool {
	if g.isExact {
		return s == g.exact
	}
	parts := g.parts
	if len(parts) == 0 {
		return true
	}
	if g.anchoredStart {
		n, ok := matchAt(s, parts[0])
		if !ok {
			return false
		}
		if len(parts) == 1 && g.anchoredEnd {
			return n == len(s)
		}
		s, parts = s[n:], parts[1:]
	}
	last := ""
	if g.anchoredEnd && len(parts) > 0 {
		last, parts = parts[len(parts)-1], parts[:len(parts)-1]
	}
	for _, part := range parts {
		i, n, ok := find(s, part)
		if !ok {
			return false
		}
		s = s[i+n:]
	}
	if !g.anchoredEnd {
		return true
	}
	if last == "" { // the pattern ended with its (anchored) first part, already matched
		return s == ""
	}
	// The last part must match a suffix of what is left: try the one suffix with as many
	// characters as the part has.
	k := utf8.RuneCountInString(last)
	i := len(s)
	for ; k > 0 && i > 0; k-- {
		_, size := utf8.DecodeLastRuneInString(s[:i])
		i -= size
	}
	if k > 0 {
		return false
	}
	n, ok := matchAt(s[i:], last)
	return ok && n == len(s)-i
}

// matchAt matches part (literal characters and ?) at the start of s and returns how many bytes
// of s it covered.
func matchAt(s, part string) (int, bool) {
	n := 0
	for _, pc := range part {
		if n >= len(s) {
			return 0, false
		}
		sc, size := utf8.DecodeRuneInString(s[n:])
		if pc != '?' && pc != sc {
			return 0, false
		}
		n += size
	}
	return n, true
}

// find returns the first position where part matches in s, and the bytes it covers there.
func find(s, part string) (at, n int, ok bool) {
	for i := 0; i <= len(s); {
		if n, ok := matchAt(s[i:], part); ok {
			return i, n, true
		}
		if i == len(s) {
			break
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return 0, 0, false
}

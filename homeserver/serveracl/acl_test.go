package serveracl

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"evil.com", "evil.com", true},
		{"evil.com", "evil.com.au", false},
		{"evil.com", "xevil.com", false},
		{"EVIL.com", "evil.COM", true},
		{"*", "", true},
		{"*", "anything.example", true},
		{"**", "a", true},
		{"*.evil.com", "evil.com", false},
		{"*.evil.com", "a.evil.com", true},
		{"*.evil.com", "a.b.evil.com", true},
		{"*evil.com", "evil.com", true},
		{"evil.*", "evil.com", true},
		{"evil.*", "evil", false},
		{"e?il.com", "evil.com", true},
		{"e?il.com", "eil.com", false},
		{"e?il.com", "eviil.com", false},
		{"?", "", false},
		{"?", "a", true},
		{"?", "ab", false},
		{"*?", "", false},
		{"*?", "a", true},
		{"a*b", "ab", true},
		{"a*b", "a", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"a*b*c", "acb", false},
		{"*ab*ab", "abab", true},
		{"*ab*ab", "aab", false},
		{"*a?c*", "xxabcyy", true},
		{"*a?c", "abcabd", false},
		{"*a?c", "abdabc", true},
		{"ä?.org", "äx.org", true}, // ? is one character, not one byte
		{"ä?.org", "äxy.org", false},
		{"[::1]", "[::1]", true},
		{"1.2.3.*", "1.2.3.4", true},
		{".", "x", false}, // no regexp semantics
	} {
		if got := compile(tc.pattern).match(strings.ToLower(tc.name)); got != tc.want {
			t.Errorf("glob %q on %q = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

// globRegexp is the reference: the glob translated to an anchored regular expression.
func globRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range strings.ToLower(pattern) {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile("(?s)" + b.String())
}

func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{{"*.evil.com", "a.evil.com"}, {"a*b?c*", "aXbYcZ"}, {"*ab*ab", "abab"}, {"?*?", "ab"}, {"ä*", "äö"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if !utf8Valid(pattern) || !utf8Valid(name) {
			t.Skip()
		}
		name = strings.ToLower(name)
		want := globRegexp(pattern).MatchString(name)
		if got := compile(pattern).match(name); got != want {
			t.Fatalf("glob %q on %q = %v, regexp says %v", pattern, name, got, want)
		}
	})
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestHost(t *testing.T) {
	for in, want := range map[string]string{
		"example.org": "example.org", "example.org:8448": "example.org", "1.2.3.4:80": "1.2.3.4",
		"[::1]": "[::1]", "[::1]:8448": "[::1]", "[2001:db8::1]:1": "[2001:db8::1]",
	} {
		if got := Host(in); got != want {
			t.Errorf("Host(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAllows(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		allowed []string
		denied  []string
	}{
		{"deny list", `{"allow":["*"],"deny":["evil.com","*.evil.com"]}`,
			[]string{"good.org", "evil.com.au", "notevil.com", "1.2.3.4"},
			[]string{"evil.com", "EVIL.COM", "evil.com:8448", "sub.evil.com:1234"}},
		{"allow list", `{"allow":["good.org","*.good.org"]}`,
			[]string{"good.org", "a.good.org:8448"},
			[]string{"evil.com", "bad.org"}},
		{"deny wins over allow", `{"allow":["evil.com"],"deny":["evil.com"]}`, nil, []string{"evil.com"}},
		{"missing allow denies everyone", `{"deny":["evil.com"]}`, nil, []string{"good.org", "evil.com"}},
		{"empty content denies everyone", `{}`, nil, []string{"good.org"}},
		{"not an object", `[1,2]`, nil, []string{"good.org"}},
		{"no IP literals", `{"allow":["*"],"allow_ip_literals":false}`,
			[]string{"good.org", "1.2.3.4.example", "good.org:8448"},
			[]string{"1.2.3.4", "127.0.0.2:8448", "[::1]", "[2001:db8::1]:8448"}},
		{"IP literals by default", `{"allow":["*"]}`, []string{"1.2.3.4", "[::1]:8448"}, nil},
		{"non-boolean allow_ip_literals is true", `{"allow":["*"],"allow_ip_literals":"no"}`, []string{"1.2.3.4"}, nil},
		{"explicit true", `{"allow":["*"],"allow_ip_literals":true}`, []string{"1.2.3.4"}, nil},
		{"IP literal matched by deny", `{"allow":["*"],"deny":["127.0.0.2"]}`,
			[]string{"127.0.0.3:8448"}, []string{"127.0.0.2:8448"}},
		{"invalid entries ignored", `{"allow":[1,null,"*.good.org",{"x":1}],"deny":[true,"bad.good.org"]}`,
			[]string{"a.good.org"}, []string{"bad.good.org", "other.org"}},
		{"non-array deny is empty", `{"allow":["*"],"deny":"evil.com"}`, []string{"evil.com"}, nil},
		{"non-array allow is empty", `{"allow":"*"}`, nil, []string{"good.org"}},
		{"the port is not part of a pattern", `{"allow":["good.org:8448"]}`, nil, []string{"good.org:8448", "good.org"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acl := Parse([]byte(tc.content))
			for _, s := range tc.allowed {
				if !acl.Allows(s) {
					t.Errorf("%s denied, want allowed", s)
				}
			}
			for _, s := range tc.denied {
				if acl.Allows(s) {
					t.Errorf("%s allowed, want denied", s)
				}
			}
		})
	}
	var none *ACL
	if !none.Allows("anything.org") {
		t.Error("a room without an ACL denies a server")
	}
}

func TestCache(t *testing.T) {
	var c Cache
	loads := 0
	load := func(content string) func() ([]byte, error) {
		return func() ([]byte, error) { loads++; return []byte(content), nil }
	}
	a, err := c.Get("$a", load(`{"allow":["*"]}`))
	if err != nil || !a.Allows("x.org") {
		t.Fatalf("Get = %v, %v", a, err)
	}
	if b, _ := c.Get("$a", load(`{}`)); b != a || loads != 1 {
		t.Fatalf("second Get loaded again (%d loads) or returned another ACL", loads)
	}
	if b, _ := c.Get("$a\x00$redaction", load(`{}`)); b.Allows("x.org") || loads != 2 {
		t.Fatal("a new key did not load its content")
	}
	boom := errors.New("boom")
	if _, err := c.Get("$b", func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("load error = %v", err)
	}
	if _, err := c.Get("$b", load(`{"allow":["*"]}`)); err != nil || loads != 3 {
		t.Fatal("a failed load was cached")
	}
}

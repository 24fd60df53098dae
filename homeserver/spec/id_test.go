package spec_test

import (
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

func TestValidServerName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		// DNS names, with and without port.
		{"matrix.org", true},
		{"matrix.org:8888", true},
		{"localhost", true},
		{"my-server.example.org", true},
		{"MATRIX.ORG", true},
		{"a", true},
		{"example.org:1", true},
		{"example.org:65535", true},
		// IPv4.
		{"1.2.3.4", true},
		{"1.2.3.4:1234", true},
		// IPv6 in brackets.
		{"[1234:5678::abcd]", true},
		{"[1234:5678::abcd]:5678", true},
		{"[::1]", true},
		{"[::1]:8448", true},
		{"[2001:DB8::1]", true},
		{"[::ffff:1.2.3.4]", true},
		// Empty and bad hosts.
		{"", false},
		{":8448", false},
		{"exa mple.org", false},
		{"example_org", false},
		{"example.org/", false},
		{"exämple.org", false},
		{"@example.org", false},
		// Bad ports.
		{"example.org:", false},
		{"example.org:abc", false},
		{"example.org:123456", false},
		{"example.org:-1", false},
		{"example.org:80:80", false},
		{"example.org: 80", false},
		{"[::1]:", false},
		{"[::1]:x", false},
		// Bad IPv6 literals.
		{"[::1", false},
		{"[::1]x", false},
		{"[::1]]", false},
		{"[]", false},
		{"[:]", false},
		{"[::g]", false},
		{"[" + strings.Repeat("1", 46) + "]", false},
		{"::1", false}, // IPv6 without brackets
		{"2001:db8::1", false},
		// Length.
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
		{strings.Repeat("a", 250) + ":8448", true},
		{strings.Repeat("a", 251) + ":8448", false},
	} {
		err := spec.ValidServerName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidServerName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestValidLocalpart(t *testing.T) {
	for _, tc := range []struct {
		local string
		ok    bool
	}{
		{"alice", true},
		{"a", true},
		{"0123456789", true},
		{"a.b_c=d-e/f+g", true},
		{"", false},
		{"Alice", false},
		{"al ice", false},
		{"alice!", false},
		{"alice:example.org", false},
		{"@alice", false},
		{"ünï", false},
		{"alice\x00", false},
		{"alice#", false},
	} {
		if got := spec.ValidLocalpart(tc.local); got != tc.ok {
			t.Errorf("ValidLocalpart(%q) = %v, want %v", tc.local, got, tc.ok)
		}
	}
}

func TestParseUserID(t *testing.T) {
	for _, tc := range []struct {
		id            string
		ok            bool
		local, server string
	}{
		{"@alice:example.org", true, "alice", "example.org"},
		{"@alice:example.org:8448", true, "alice", "example.org:8448"},
		{"@alice:[::1]:8448", true, "alice", "[::1]:8448"},
		{"@alice:1.2.3.4", true, "alice", "1.2.3.4"},
		{"@a.b_c=d-e/f+g:localhost", true, "a.b_c=d-e/f+g", "localhost"},
		// Historical localparts (printable ASCII but ':') are accepted.
		{"@Alice!#~:example.org", true, "Alice!#~", "example.org"},
		{"@" + strings.Repeat("a", 255-len("@:example.org")) + ":example.org", true,
			strings.Repeat("a", 255-len("@:example.org")), "example.org"},

		{"", false, "", ""},
		{"@", false, "", ""},
		{"alice:example.org", false, "", ""},
		{"#alice:example.org", false, "", ""},
		{"@alice", false, "", ""},
		{"@:example.org", false, "", ""},
		{"@alice:", false, "", ""},
		{"@al ice:example.org", false, "", ""},
		{"@al\x7fice:example.org", false, "", ""},
		{"@alïce:example.org", false, "", ""},
		{"@alice:bad server", false, "", ""},
		{"@alice:example.org:", false, "", ""},
		{"@alice:[]", false, "", ""},
		{"@" + strings.Repeat("a", 256-len("@:example.org")) + ":example.org", false, "", ""},
	} {
		u, err := spec.ParseUserID(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("ParseUserID(%q) = %q, %v; want ok=%v", tc.id, u, err, tc.ok)
			continue
		}
		if !tc.ok {
			if u != "" {
				t.Errorf("ParseUserID(%q) returned %q with an error", tc.id, u)
			}
			continue
		}
		if string(u) != tc.id || u.String() != tc.id || u.Localpart() != tc.local || u.ServerName() != tc.server {
			t.Errorf("ParseUserID(%q) = %q (localpart %q, server %q); want localpart %q, server %q",
				tc.id, u, u.Localpart(), u.ServerName(), tc.local, tc.server)
		}
	}
}

func TestNewUserID(t *testing.T) {
	u := spec.NewUserID("alice", "example.org:8448")
	if u != "@alice:example.org:8448" || u.Localpart() != "alice" || u.ServerName() != "example.org:8448" {
		t.Fatalf("NewUserID = %q (%q, %q)", u, u.Localpart(), u.ServerName())
	}
}

func FuzzParseUserID(f *testing.F) {
	for _, seed := range []string{
		"@alice:example.org", "@alice:example.org:8448", "@alice:[::1]:8448", "@a:b", "@:b", "@a:", "@a:[]",
		"@a:b:c:d", "@Ä:x", "@a:1.2.3.4", "alice", "@@@:::", "@a:[::1]]", strings.Repeat("@a:b", 80),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := spec.ParseUserID(s)
		if err != nil {
			if u != "" {
				t.Fatalf("ParseUserID(%q) returned %q with error %v", s, u, err)
			}
			return
		}
		if string(u) != s {
			t.Fatalf("ParseUserID(%q) = %q", s, u)
		}
		if len(s) > 255 {
			t.Fatalf("accepted %d-byte user ID", len(s))
		}
		local, server := u.Localpart(), u.ServerName()
		if local == "" || strings.Contains(local, ":") {
			t.Fatalf("ParseUserID(%q): bad localpart %q", s, local)
		}
		if err := spec.ValidServerName(server); err != nil {
			t.Fatalf("ParseUserID(%q): server name %q is invalid: %v", s, server, err)
		}
		if back := spec.NewUserID(local, server); back != u {
			t.Fatalf("ParseUserID(%q): localpart %q + server %q = %q", s, local, server, back)
		}
		if again, err := spec.ParseUserID(string(spec.NewUserID(local, server))); err != nil || again != u {
			t.Fatalf("round trip of %q: %q, %v", s, again, err)
		}
	})
}

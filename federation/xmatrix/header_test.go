package xmatrix

import (
	"errors"
	"testing"
)

func TestParseHeader(t *testing.T) {
	want := Header{Origin: "origin.example.com", Destination: "dest.example.com", Key: "ed25519:key1", Sig: "ABC/def+123"}
	for _, s := range []string{
		// The form senders should use.
		`X-Matrix origin="origin.example.com",destination="dest.example.com",key="ed25519:key1",sig="ABC/def+123"`,
		// Scheme and names in any case, several spaces after the scheme.
		`x-matrix   ORIGIN="origin.example.com",Destination="dest.example.com",KEY="ed25519:key1",Sig="ABC/def+123"`,
		// Any order, spaces and tabs around commas and around "=".
		"X-Matrix sig=\"ABC/def+123\" ,\tkey = \"ed25519:key1\" , destination=\"dest.example.com\",origin=\"origin.example.com\"",
		// Unquoted token values, and colons and slashes unquoted as older servers send them.
		`X-Matrix origin=origin.example.com,destination=dest.example.com,key=ed25519:key1,sig=ABC/def+123`,
		// Backslash escapes in quoted values.
		`X-Matrix origin="origin.ex\ample.com",destination="dest.example.com",key="ed25519:\key1",sig="ABC/def+123"`,
		// Unknown parameters are ignored, empty list elements are allowed.
		`X-Matrix origin="origin.example.com",,extra="x, y",destination="dest.example.com",key="ed25519:key1",sig="ABC/def+123",`,
		"X-Matrix\torigin=\"origin.example.com\",destination=\"dest.example.com\",key=\"ed25519:key1\",sig=\"ABC/def+123\"",
	} {
		got, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%q): %v", s, err)
			continue
		}
		if got != want {
			t.Errorf("Parse(%q) = %+v, want %+v", s, got, want)
		}
	}

	// Without destination (servers before spec v1.3).
	got, err := Parse(`X-Matrix origin=a.org,key="ed25519:1",sig="xyz"`)
	if err != nil || got != (Header{Origin: "a.org", Key: "ed25519:1", Sig: "xyz"}) {
		t.Errorf("header without destination: %+v, %v", got, err)
	}
	// An IPv6 server name unquoted.
	got, err = Parse(`X-Matrix origin=[::1]:8448,key=ed25519:1,sig=xyz`)
	if err != nil || got.Origin != "[::1]:8448" {
		t.Errorf("IPv6 origin: %+v, %v", got, err)
	}
}

func TestParseHeaderRejects(t *testing.T) {
	for _, s := range []string{
		``,
		`X-Matrix`,
		`X-Matrix `,
		`Bearer abc`,
		`X-Matrixorigin="a",key="b",sig="c"`,
		`X-Matrix key="ed25519:1",sig="x"`,    // no origin
		`X-Matrix origin="a",sig="x"`,         // no key
		`X-Matrix origin="a",key="ed25519:1"`, // no sig
		`X-Matrix origin="a",key="ed25519:1",sig="x`,  // unterminated quote
		`X-Matrix origin="a",key="ed25519:1",sig="x\`, // backslash at the end
		`X-Matrix origin="a" key="ed25519:1",sig="x"`, // no comma
		`X-Matrix origin="a",origin="b",key="ed25519:1",sig="x"`,
		`X-Matrix origin=,key="ed25519:1",sig="x"`,
		`X-Matrix origin,key="ed25519:1",sig="x"`,
		`X-Matrix ="a",key="ed25519:1",sig="x"`,
		"X-Matrix origin=\"a\x01\",key=\"ed25519:1\",sig=\"x\"",
	} {
		if h, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted: %+v", s, h)
		} else if !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q): error %v does not match ErrMalformed", s, err)
		}
	}
}

func TestHeaderString(t *testing.T) {
	h := Header{Origin: "origin.example.com", Destination: "dest.example.com", Key: "ed25519:key1", Sig: "ABCDEF"}
	const want = `X-Matrix origin="origin.example.com",destination="dest.example.com",key="ed25519:key1",sig="ABCDEF"`
	if got := h.String(); got != want {
		t.Fatalf("String() = %s, want %s", got, want)
	}
	odd := Header{Origin: `a"b\c`, Key: "k", Sig: "s"}
	back, err := Parse(odd.String())
	if err != nil || back != odd {
		t.Fatalf("round trip of %+v: %+v, %v", odd, back, err)
	}
}

// FuzzXMatrixHeader: Parse never panics, and whatever it accepts survives String and Parse again.
func FuzzXMatrixHeader(f *testing.F) {
	for _, s := range []string{
		`X-Matrix origin="origin.example.com",destination="dest.example.com",key="ed25519:key1",sig="ABCDEF"`,
		`x-matrix origin=a.org,key=ed25519:1,sig=abc/+`,
		"X-Matrix  sig=\"x\" ,\tkey = \"k\" ,, origin=\"o\\\"q\"",
		`X-Matrix origin=[::1]:8448,key=ed25519:1,sig=xyz,unknown="a,b"`,
		`X-Matrix origin="a`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q): error %v does not match ErrMalformed", s, err)
			}
			return
		}
		if h.Origin == "" || h.Key == "" || h.Sig == "" {
			t.Fatalf("Parse(%q) accepted a header without origin, key or sig: %+v", s, h)
		}
		back, err := Parse(h.String())
		if err != nil {
			t.Fatalf("Parse(String()) of %+v (from %q): %v", h, s, err)
		}
		if back != h {
			t.Fatalf("round trip of %q: %+v, then %+v", s, h, back)
		}
	})
}

package xmatrix

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
)

func TestSignVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	keys := func(_ context.Context, server, keyID string) (ed25519.PublicKey, error) {
		switch {
		case server == "origin.org" && keyID == "ed25519:k1":
			return pub, nil
		case server == "origin.org" && keyID == "ed25519:other":
			return otherPub, nil
		case server == "down.org":
			return nil, errors.New("connection refused")
		}
		return nil, fmt.Errorf("%w: %s %s", event.ErrKeyNotFound, server, keyID)
	}
	ctx := context.Background()
	body := []byte(`{"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"b": 1, "a": 2}}]}`)
	req := Request{Method: "PUT", URI: "/_matrix/federation/v1/send/txn1?x=1", Origin: "origin.org", Destination: "dest.org", Content: body}
	header, err := Sign(req, "ed25519:k1", priv)
	if err != nil {
		t.Fatal(err)
	}

	// The received request verifies, with its body in another (equivalent) key order and spacing.
	got := req
	got.Content = []byte(`{"edus":[{"content":{"a":2,"b":1},"edu_type":"m.typing"}],"pdus":[]}`)
	origin, err := Verify(ctx, got, []string{header}, "dest.org", keys)
	if err != nil || origin != "origin.org" {
		t.Fatalf("Verify = %q, %v", origin, err)
	}
	// Other Authorization schemes next to it are ignored.
	if _, err := Verify(ctx, req, []string{"Bearer abc", header}, "dest.org", keys); err != nil {
		t.Fatalf("Verify with a Bearer header too: %v", err)
	}

	// A GET without a body signs no content.
	get := Request{Method: "GET", URI: "/_matrix/federation/v1/query/profile?user_id=%40a%3Aorigin.org", Origin: "origin.org", Destination: "dest.org"}
	gh, err := Sign(get, "ed25519:k1", priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, get, []string{gh}, "dest.org", keys); err != nil {
		t.Fatalf("GET: %v", err)
	}
	// Without the destination parameter (older servers) it is checked against our own name.
	h, _ := Parse(gh)
	h.Destination = ""
	if _, err := Verify(ctx, get, []string{h.String()}, "dest.org", keys); err != nil {
		t.Fatalf("header without destination: %v", err)
	}
	if _, err := Verify(ctx, get, []string{h.String()}, "third.org", keys); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("request for dest.org without destination, received by third.org: %v", err)
	}

	forged := func(edit func(r *Request, h *Header)) (Request, []string) {
		r := req
		h, _ := Parse(header)
		edit(&r, &h)
		return r, []string{h.String()}
	}
	for _, c := range []struct {
		name string
		edit func(r *Request, h *Header)
		want error
	}{
		{"other destination", func(_ *Request, h *Header) { h.Destination = "third.org" }, ErrWrongDestination},
		{"other method", func(r *Request, _ *Header) { r.Method = "POST" }, ErrBadSignature},
		{"other uri", func(r *Request, _ *Header) { r.URI = "/_matrix/federation/v1/send/txn2?x=1" }, ErrBadSignature},
		{"other query", func(r *Request, _ *Header) { r.URI = "/_matrix/federation/v1/send/txn1?x=2" }, ErrBadSignature},
		{"other body", func(r *Request, _ *Header) { r.Content = []byte(`{"pdus":[],"edus":[]}`) }, ErrBadSignature},
		{"no body", func(r *Request, _ *Header) { r.Content = nil }, ErrBadSignature},
		{"body not JSON", func(r *Request, _ *Header) { r.Content = []byte(`{"pdus":`) }, ErrNotJSON},
		{"other origin", func(_ *Request, h *Header) { h.Origin = "third.org" }, ErrUnknownKey},
		{"invalid origin", func(_ *Request, h *Header) { h.Origin = "bad origin" }, ErrMalformed},
		{"unknown key", func(_ *Request, h *Header) { h.Key = "ed25519:nope" }, ErrUnknownKey},
		{"not ed25519", func(_ *Request, h *Header) { h.Key = "curve25519:k1" }, ErrUnknownKey},
		{"other key's signature", func(_ *Request, h *Header) { h.Key = "ed25519:other" }, ErrBadSignature},
		{"key lookup fails", func(_ *Request, h *Header) { h.Origin = "down.org" }, ErrUnknownKey},
		{"sig not base64", func(_ *Request, h *Header) { h.Sig = "!!!" }, ErrBadSignature},
		{"sig truncated", func(_ *Request, h *Header) { h.Sig = h.Sig[:40] }, ErrBadSignature},
	} {
		r, hs := forged(c.edit)
		if origin, err := Verify(ctx, r, hs, "dest.org", keys); !errors.Is(err, c.want) {
			t.Errorf("%s: Verify = %q, %v; want %v", c.name, origin, err, c.want)
		}
	}

	// No X-Matrix header at all.
	for _, hs := range [][]string{nil, {"Bearer abc"}} {
		if _, err := Verify(ctx, req, hs, "dest.org", keys); !errors.Is(err, ErrMissing) {
			t.Errorf("headers %q: %v, want ErrMissing", hs, err)
		}
	}
	// Two headers: both must verify and name the same origin.
	if _, err := Verify(ctx, req, []string{header, `X-Matrix origin="origin.org",key="ed25519:k1",sig="AAAA"`}, "dest.org", keys); !errors.Is(err, ErrBadSignature) {
		t.Errorf("second header with a bad signature: %v", err)
	}
	if _, err := Verify(ctx, req, []string{header, `X-Matrix origin="third.org",key="ed25519:k1",sig="AAAA"`}, "dest.org", keys); !errors.Is(err, ErrMalformed) {
		t.Errorf("second header of another origin: %v", err)
	}
	if _, err := Sign(Request{Method: "GET", URI: "/", Origin: "a"}, "ed25519:k1", priv); err == nil {
		t.Error("Sign without a destination succeeded")
	}
}

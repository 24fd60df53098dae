package event

import (
	"context"
	"encoding/base64"
	"errors"
	"testing"
)

// Appendices, "Cryptographic Test Vectors" / "JSON Signing".
func TestSignJSONSpecVectors(t *testing.T) {
	key := specKey(t)
	for _, tc := range []struct{ in, want string }{
		{`{}`, `{"signatures":{"domain":{"ed25519:1":"K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}}`},
		{`{"one": 1, "two": "Two"}`, `{"one":1,"signatures":{"domain":{"ed25519:1":"KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}},"two":"Two"}`},
	} {
		got, err := SignJSON([]byte(tc.in), specServer, specKeyID, key)
		if err != nil {
			t.Fatalf("SignJSON(%s): %v", tc.in, err)
		}
		if string(got) != tc.want {
			t.Errorf("SignJSON(%s)\n got %s\nwant %s", tc.in, got, tc.want)
		}
		pub := key.Public().(ed25519PublicKey)
		if err := VerifyJSON(got, specServer, specKeyID, pub); err != nil {
			t.Errorf("VerifyJSON of own signature: %v", err)
		}
		if err := VerifyJSON([]byte(tc.want), specServer, specKeyID, pub); err != nil {
			t.Errorf("VerifyJSON of spec vector: %v", err)
		}
	}
}

func TestSignJSONKeepsOtherSignaturesAndUnsigned(t *testing.T) {
	a, b := newTestServer("a.example"), newTestServer("b.example")
	in := `{"unsigned":{"age":5},"x":"y"}`
	s1, err := SignJSON([]byte(in), a.name, a.keyID, a.key)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := SignJSON(s1, b.name, b.keyID, b.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyJSON(s2, a.name, a.keyID, a.public()); err != nil {
		t.Errorf("first signature lost: %v", err)
	}
	if err := VerifyJSON(s2, b.name, b.keyID, b.public()); err != nil {
		t.Errorf("second signature: %v", err)
	}
	if v, ok := member(s2, "unsigned"); !ok || string(v) != `{"age":5}` {
		t.Errorf("unsigned not kept: %s", s2)
	}
	// unsigned is not covered: changing it keeps the signatures valid.
	changed, _ := appendEdited(nil, s2, edit{"unsigned", []byte(`{"age":99}`)})
	if err := VerifyJSON(changed, a.name, a.keyID, a.public()); err != nil {
		t.Errorf("changing unsigned broke the signature: %v", err)
	}
	// Anything else is.
	tampered, _ := appendEdited(nil, s2, edit{"x", []byte(`"z"`)})
	if err := VerifyJSON(tampered, a.name, a.keyID, a.public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered object: err = %v, want ErrBadSignature", err)
	}
	if err := VerifyJSON(s2, a.name, "ed25519:other", a.public()); !errors.Is(err, ErrNoSignature) {
		t.Errorf("missing key ID: err = %v, want ErrNoSignature", err)
	}
	if err := VerifyJSON(s2, "c.example", a.keyID, a.public()); !errors.Is(err, ErrNoSignature) {
		t.Errorf("missing server: err = %v, want ErrNoSignature", err)
	}
}

func TestVerifyJSONFrom(t *testing.T) {
	a := newTestServer("a.example")
	signed, err := SignJSON([]byte(`{"k":1}`), a.name, a.keyID, a.key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := VerifyJSONFrom(ctx, signed, a.name, 0, a.addTo(keys{}).get); err != nil {
		t.Errorf("known key: %v", err)
	}
	if err := VerifyJSONFrom(ctx, signed, a.name, 0, keys{}.get); !errors.Is(err, ErrNoSignature) {
		t.Errorf("unknown key: err = %v, want ErrNoSignature", err)
	}
	// An extra signature by an unknown key (such as a policy server's) is skipped.
	withExtra, _ := appendEdited(nil, signed, edit{"signatures", []byte(`{"a.example":{"ed25519:policy_server":"AAAA","` + a.keyID + `":"` + mustSig(t, signed, a.name, a.keyID) + `"}}`)})
	if err := VerifyJSONFrom(ctx, withExtra, a.name, 0, a.addTo(keys{}).get); err != nil {
		t.Errorf("extra unknown-key signature: %v", err)
	}
	boom := errors.New("key server down")
	failing := func(context.Context, string, string, int64) (ed25519PublicKey, error) { return nil, boom }
	if err := VerifyJSONFrom(ctx, signed, a.name, 0, failing); !errors.Is(err, boom) {
		t.Errorf("key lookup failure: err = %v, want it passed through", err)
	}
}

func mustSig(t *testing.T, signed []byte, server, keyID string) string {
	t.Helper()
	sigs, err := signaturesOf(signed, server)
	if err != nil {
		t.Fatal(err)
	}
	return sigs[keyID]
}

// Appendices, "Cryptographic Test Vectors" / "Event Signing". The vectors use the pre-v11
// redaction rules (they keep the top-level origin), so they are checked with room version 6-10.
func TestSignEventSpecVectors(t *testing.T) {
	key := specKey(t)
	for _, name := range []string{"spec_event_minimal", "spec_event_redactable"} {
		t.Run(name, func(t *testing.T) {
			in := readTestdata(t, name+".json")
			want := mustCanonical(t, readTestdata(t, name+".signed.json"))
			for _, v := range []Version{V6, V7, V8, V9, V10} {
				got, err := Sign(v, in, specServer, specKeyID, key)
				if err != nil {
					t.Fatalf("v%s: Sign: %v", v, err)
				}
				if string(got) != string(want) {
					t.Fatalf("v%s: Sign\n got %s\nwant %s", v, got, want)
				}
			}
			if err := CheckContentHash(want); err != nil {
				t.Errorf("CheckContentHash of the spec's signed event: %v", err)
			}
			if err := VerifyJSON(mustRedact(t, V6, want), specServer, specKeyID, key.Public().(ed25519PublicKey)); err != nil {
				t.Errorf("the spec's signature does not verify over our redaction: %v", err)
			}
		})
	}
}

func TestSignEventContentHashVector(t *testing.T) {
	for name, want := range map[string]string{
		"spec_event_minimal":    "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos",
		"spec_event_redactable": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g",
	} {
		h, err := ContentHash(readTestdata(t, name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if got := base64.RawStdEncoding.EncodeToString(h[:]); got != want {
			t.Errorf("%s: content hash %s, want %s", name, got, want)
		}
	}
}

func mustRedact(t *testing.T, v Version, event []byte) []byte {
	t.Helper()
	r, err := Redact(v, event)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSignCosigning(t *testing.T) {
	a, b := newTestServer("a.example"), newTestServer("b.example")
	pa, err := Build(V10, Proto{
		RoomID: "!r:a.example", Sender: "@u:a.example", Type: "m.room.member", StateKey: ptr("@u:a.example"),
		Content: []byte(`{"membership":"join","join_authorised_via_users_server":"@mod:b.example"}`),
		Depth:   3, OriginServerTS: 10, PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"},
	}, a.name, a.keyID, a.key)
	if err != nil {
		t.Fatal(err)
	}
	// The authorising server adds its signature; the sender's must survive.
	both, err := Sign(V10, pa.Raw, b.name, b.keyID, b.key)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(V10, both)
	if err != nil {
		t.Fatal(err)
	}
	if p.EventID != pa.EventID {
		t.Errorf("co-signing changed the event ID: %s -> %s", pa.EventID, p.EventID)
	}
	getKey := b.addTo(a.addTo(keys{})).get
	if err := VerifyEventSignatures(context.Background(), V10, p, getKey); err != nil {
		t.Errorf("co-signed join: %v", err)
	}
	// Without the authorising server's signature the join fails.
	if err := VerifyEventSignatures(context.Background(), V10, pa, getKey); !errors.Is(err, ErrNoSignature) {
		t.Errorf("join without authorising signature: err = %v, want ErrNoSignature", err)
	}
	// Signing an event whose content changed since it was hashed drops the stale signatures.
	changed, _ := appendEdited(nil, both, edit{"content", []byte(`{"membership":"leave"}`)})
	resigned, err := Sign(V10, changed, b.name, b.keyID, b.key)
	if err != nil {
		t.Fatal(err)
	}
	if sigs, _ := member(resigned, "signatures"); string(sigs) == "" || hasServer(sigs, a.name) {
		t.Errorf("stale signature by %s kept: %s", a.name, sigs)
	}
}

func hasServer(sigs []byte, server string) bool {
	_, ok := member(sigs, server)
	return ok
}

func TestVerifyEventSignatures(t *testing.T) {
	ctx := context.Background()
	alice, bob, mod := newTestServer("alice.example"), newTestServer("bob.example"), newTestServer("mod.example")
	all := mod.addTo(bob.addTo(alice.addTo(keys{}))).get

	build := func(v Version, signer testServer, typ string, stateKey *string, content string) *PDU {
		t.Helper()
		p, err := Build(v, Proto{RoomID: "!r:alice.example", Sender: "@x:alice.example", Type: typ, StateKey: stateKey,
			Content: []byte(content), Depth: 5, OriginServerTS: 1000, PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}},
			signer.name, signer.keyID, signer.key)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, v := range Versions {
		msg := build(v, alice, "m.room.message", nil, `{"body":"hi"}`)
		if err := VerifyEventSignatures(ctx, v, msg, all); err != nil {
			t.Errorf("v%s: signed by sender's server: %v", v, err)
		}
		wrong := build(v, bob, "m.room.message", nil, `{"body":"hi"}`)
		if err := VerifyEventSignatures(ctx, v, wrong, all); !errors.Is(err, ErrNoSignature) {
			t.Errorf("v%s: signed by another server: err = %v, want ErrNoSignature", v, err)
		}
		if err := VerifyEventSignatures(ctx, v, msg, keys{}.get); !errors.Is(err, ErrNoSignature) {
			t.Errorf("v%s: unknown key: err = %v, want ErrNoSignature", v, err)
		}
		// A redacted copy still verifies (signatures cover the redacted form).
		red, err := msg.Redacted()
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyEventSignatures(ctx, v, red, all); err != nil {
			t.Errorf("v%s: redacted copy: %v", v, err)
		}
		if red.EventID != msg.EventID {
			t.Errorf("v%s: redacted copy has event ID %s, want %s", v, red.EventID, msg.EventID)
		}
		// Tampering with protected fields breaks the signature.
		forged, _ := appendEdited(nil, msg.Raw, edit{"origin_server_ts", []byte("1001")})
		fp, err := Parse(v, forged)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyEventSignatures(ctx, v, fp, all); !errors.Is(err, ErrBadSignature) {
			t.Errorf("v%s: forged timestamp: err = %v, want ErrBadSignature", v, err)
		}
		// Unprotected content changes keep the signature but fail the content hash.
		edited, _ := appendEdited(nil, msg.Raw, edit{"content", []byte(`{"body":"bye"}`)})
		ep, err := Parse(v, edited)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyEventSignatures(ctx, v, ep, all); err != nil {
			t.Errorf("v%s: edited content: signature should still verify: %v", v, err)
		}
		if err := ep.CheckContentHash(); !errors.Is(err, ErrContentHashMismatch) {
			t.Errorf("v%s: edited content: CheckContentHash = %v, want ErrContentHashMismatch", v, err)
		}
		if err := msg.CheckContentHash(); err != nil {
			t.Errorf("v%s: CheckContentHash: %v", v, err)
		}

		// A third-party invite need not be signed by the sender's server.
		tpi := build(v, bob, "m.room.member", ptr("@y:bob.example"),
			`{"membership":"invite","third_party_invite":{"display_name":"y","signed":{"mxid":"@y:bob.example","token":"t"}}}`)
		if err := VerifyEventSignatures(ctx, v, tpi, all); err != nil {
			t.Errorf("v%s: third-party invite: %v", v, err)
		}

		// Restricted joins need the authorising server's signature from v8.
		join := build(v, alice, "m.room.member", ptr("@x:alice.example"),
			`{"membership":"join","join_authorised_via_users_server":"@m:mod.example"}`)
		err = VerifyEventSignatures(ctx, v, join, all)
		if v.RestrictedJoins() && !errors.Is(err, ErrNoSignature) {
			t.Errorf("v%s: join without authorising signature: err = %v, want ErrNoSignature", v, err)
		}
		if !v.RestrictedJoins() && err != nil {
			t.Errorf("v%s: join_authorised_via_users_server has no meaning before v8: %v", v, err)
		}
		cosigned, err := Sign(v, join.Raw, mod.name, mod.keyID, mod.key)
		if err != nil {
			t.Fatal(err)
		}
		cp, err := Parse(v, cosigned)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyEventSignatures(ctx, v, cp, all); err != nil {
			t.Errorf("v%s: co-signed restricted join: %v", v, err)
		}
		if err := VerifyEventSignedBy(ctx, v, cp, mod.name, all); err != nil {
			t.Errorf("v%s: VerifyEventSignedBy: %v", v, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

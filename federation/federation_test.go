package federation_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/cert"
	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/federation/serverkey"
	"github.com/hearthmx/homeserver/federation/xmatrix"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// The servers of these tests, each on its own loopback address with its own certificate from the
// test's CA; their names are IP:port, so no DNS is involved (resolution has its own tests).
const (
	ip1 = "127.0.0.2"
	ip2 = "127.0.0.3"
	ip3 = "127.0.0.4"
)

// forEachBackend runs fn per storage backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, backend string)) {
	for _, b := range storagetest.Backends {
		t.Run(b, func(t *testing.T) {
			storagetest.RequireBackend(t, b)
			fn(t, b)
		})
	}
}

// fedDo sends a request to the federation listener of s, with the Authorization header auth
// ("" for none).
func fedDo(t *testing.T, ca *servertest.CA, s *servertest.Server, method, uri string, body []byte, auth string) servertest.Response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+s.FederationAddr()+uri, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = s.Config.ServerName
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.TLSConfig()}, Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, uri, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := servertest.Response{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	_ = json.Unmarshal(raw, &r.JSON)
	return r
}

func publicKey(t *testing.T, s *servertest.Server) ed25519.PublicKey {
	t.Helper()
	return s.Key.Public()
}

func TestServerKeysEndpoint(t *testing.T) {
	ca := servertest.NewCA(t)
	hs := servertest.Start(t, "sqlite", servertest.Federated(t, ca, ip1))
	name := hs.Config.ServerName
	before := time.Now()
	res := fedDo(t, ca, hs, "GET", "/_matrix/key/v2/server", nil, "")
	if res.Status != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /_matrix/key/v2/server: %d %s", res.Status, res.Raw)
	}
	keys, err := serverkey.ParseResponse(res.Raw, name) // verifies the self-signature
	if err != nil {
		t.Fatal(err)
	}
	if !keys.VerifyKeys[hs.Key.ID].Equal(publicKey(t, hs)) || len(keys.VerifyKeys) != 1 || len(keys.OldKeys) != 0 {
		t.Fatalf("verify keys = %v, want only %s", keys.VerifyKeys, hs.Key.ID)
	}
	// valid_until_ts is federation.key_validity (7 days) ahead.
	want := before.Add(7 * 24 * time.Hour).UnixMilli()
	if keys.ValidUntilTS < want-60_000 || keys.ValidUntilTS > want+60_000 {
		t.Fatalf("valid_until_ts = %d, want about %d", keys.ValidUntilTS, want)
	}
	// The removed /server/{keyId} form answers the same.
	if again := fedDo(t, ca, hs, "GET", "/_matrix/key/v2/server/"+url.PathEscape(hs.Key.ID), nil, ""); again.Status != 200 ||
		!bytes.Equal(again.Raw, res.Raw) {
		t.Fatalf("GET /server/{keyId}: %d %s", again.Status, again.Raw)
	}
	// The plain-HTTP client listener serves the federation API too (for a TLS proxy in front).
	if plain := hs.Do(t, "GET", "/_matrix/key/v2/server", "", nil); plain.Status != 200 {
		t.Fatalf("key server on the client listener: %d", plain.Status)
	}
	if v := fedDo(t, ca, hs, "GET", "/_matrix/federation/v1/version", nil, ""); v.Status != 200 {
		t.Fatalf("version over TLS: %d %s", v.Status, v.Raw)
	}
	// /.well-known/matrix/server points at the federation listener.
	wk := hs.Do(t, "GET", "/.well-known/matrix/server", "", nil)
	if wk.Str("m.server") != name {
		t.Fatalf("m.server = %q, want %q", wk.Str("m.server"), name)
	}
	// Unknown federation endpoints are M_UNRECOGNIZED.
	if u := fedDo(t, ca, hs, "GET", "/_matrix/federation/v1/nonsense", nil, ""); u.Status != 404 || u.Errcode() != "M_UNRECOGNIZED" {
		t.Fatalf("unknown endpoint: %d %s", u.Status, u.Raw)
	}
}

// TestKeyFetching: hs1 fetches hs2's keys directly; hs1b, which may not connect to hs2, gets them
// through hs3 as notary, with both signatures checked; the keys are cached in the database.
func TestKeyFetching(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		ca := servertest.NewCA(t)
		hs2 := servertest.Start(t, backend, servertest.Federated(t, ca, ip2))
		hs3 := servertest.Start(t, backend, servertest.Federated(t, ca, ip3))
		hs1 := servertest.Start(t, backend, servertest.Federated(t, ca, ip1))
		name2, name3 := hs2.Config.ServerName, hs3.Config.ServerName
		now := time.Now().UnixMilli()

		// Directly.
		got, err := hs1.Federation.Keys().Key(ctx, name2, hs2.Key.ID, now)
		if err != nil || !got.Equal(publicKey(t, hs2)) {
			t.Fatalf("hs1: key of hs2 = %v, %v", got, err)
		}
		rows, err := hs1.Store.Read().ServerKeys(ctx, name2)
		if err != nil || len(rows) != 1 || rows[0].FromServer != name2 || rows[0].KeyID != hs2.Key.ID {
			t.Fatalf("hs1 stored %+v, %v", rows, err)
		}
		// A key hs2 does not have is not found (and asking again at once does not fetch again).
		if _, err := hs1.Federation.Keys().Key(ctx, name2, "ed25519:nope", now); !errors.Is(err, event.ErrKeyNotFound) {
			t.Fatalf("unknown key: %v", err)
		}

		// Through hs3: hs1b may connect to hs3 only.
		notary := fmt.Sprintf("%s %s %s", name3, hs3.Key.ID, hs3.Key.PublicBase64())
		hs1b := servertest.Start(t, backend, servertest.Federated(t, ca, ip1), func(c *config.Config) {
			c.Federation.AllowedNetworks = []string{ip3 + "/32"}
			c.Federation.TrustedKeyServers = []string{notary}
		})
		got, err = hs1b.Federation.Keys().Key(ctx, name2, hs2.Key.ID, now)
		if err != nil || !got.Equal(publicKey(t, hs2)) {
			t.Fatalf("hs1b: key of hs2 through hs3 = %v, %v", got, err)
		}
		rows, err = hs1b.Store.Read().ServerKeys(ctx, name2)
		if err != nil || len(rows) != 1 || rows[0].FromServer != name3 {
			t.Fatalf("hs1b stored %+v, %v", rows, err)
		}
		// What is stored is hs2's own response, without hs3's signature.
		var stored struct {
			Signatures map[string]any `json:"signatures"`
		}
		_ = json.Unmarshal(rows[0].KeyJSON, &stored)
		if len(stored.Signatures) != 1 || stored.Signatures[name2] == nil {
			t.Fatalf("stored signatures %v, want only %s's", stored.Signatures, name2)
		}
		// The cache answers from then on, even for a server it can no longer reach (hs2 is not
		// reachable from hs1b, and hs3 is not asked again: its store is not needed).
		got, err = hs1b.Federation.Keys().Key(ctx, name2, hs2.Key.ID, now)
		if err != nil || !got.Equal(publicKey(t, hs2)) {
			t.Fatalf("hs1b: cached key = %v, %v", got, err)
		}

		// The notary endpoints of hs3 sign what they return; hs2's self-signature stays.
		for _, res := range []servertest.Response{
			fedDo(t, ca, hs3, "GET", "/_matrix/key/v2/query/"+url.PathEscape(name2)+"?minimum_valid_until_ts="+strconv.FormatInt(now, 10), nil, ""),
			fedDo(t, ca, hs3, "POST", "/_matrix/key/v2/query", mustJSON(t, map[string]any{"server_keys": map[string]any{
				name2: map[string]any{hs2.Key.ID: map[string]any{"minimum_valid_until_ts": now}},
				name3: map[string]any{},
			}}), ""),
		} {
			if res.Status != 200 {
				t.Fatalf("notary query: %d %s", res.Status, res.Raw)
			}
			var answer struct {
				ServerKeys []json.RawMessage `json:"server_keys"`
			}
			if err := json.Unmarshal(res.Raw, &answer); err != nil || len(answer.ServerKeys) == 0 {
				t.Fatalf("notary answer %s: %v", res.Raw, err)
			}
			found := map[string]bool{}
			for _, k := range answer.ServerKeys {
				var head struct {
					ServerName string `json:"server_name"`
				}
				_ = json.Unmarshal(k, &head)
				found[head.ServerName] = true
				if err := event.VerifyJSON(k, name3, hs3.Key.ID, publicKey(t, hs3)); err != nil {
					t.Fatalf("notary response for %s not signed by hs3: %v", head.ServerName, err)
				}
				if _, err := serverkey.ParseResponse(k, head.ServerName); err != nil {
					t.Fatalf("notary response for %s: %v", head.ServerName, err)
				}
			}
			if !found[name2] {
				t.Fatalf("notary answer has no keys of hs2: %s", res.Raw)
			}
		}
		// An unknown server that cannot be reached: an empty list, not an error.
		res := fedDo(t, ca, hs3, "GET", "/_matrix/key/v2/query/127.0.0.9:1", nil, "")
		if res.Status != 200 || string(res.Raw) != `{"server_keys":[]}` {
			t.Fatalf("query for an unreachable server: %d %s", res.Status, res.Raw)
		}
		if bad := fedDo(t, ca, hs3, "POST", "/_matrix/key/v2/query", []byte(`{"server_keys":`), ""); bad.Status != 400 || bad.Errcode() != "M_BAD_JSON" {
			t.Fatalf("bad query: %d %s", bad.Status, bad.Raw)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRequestAuthentication: hs1's signed request is accepted by hs2; forged ones are refused
// with 401 M_UNAUTHORIZED.
func TestRequestAuthentication(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		ca := servertest.NewCA(t)
		hs1 := servertest.Start(t, backend, servertest.Federated(t, ca, ip1))
		hs2 := servertest.Start(t, backend, servertest.Federated(t, ca, ip2))
		name1, name2 := hs1.Config.ServerName, hs2.Config.ServerName
		alice := hs2.Register(t, "alice", "password1234")
		if r := hs2.Do(t, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.UserID)+"/displayname", alice.AccessToken,
			map[string]any{"displayname": "Alice"}); r.Status != 200 {
			t.Fatalf("set displayname: %d %s", r.Status, r.Raw)
		}
		path := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(alice.UserID)

		// Through hs1's federation client: resolved, signed, TLS verified against the CA.
		var profile map[string]any
		if err := hs1.Federation.Client().DoJSON(ctx, name2, "GET", path, nil, &profile); err != nil {
			t.Fatal(err)
		}
		if profile["displayname"] != "Alice" {
			t.Fatalf("profile = %v", profile)
		}
		var field map[string]any
		if err := hs1.Federation.Client().DoJSON(ctx, name2, "GET", path+"&field=displayname", nil, &field); err != nil || field["displayname"] != "Alice" {
			t.Fatalf("profile field = %v, %v", field, err)
		}
		// A Matrix error comes back as a *fedclient.Error.
		_, err := hs1.Federation.Client().Do(ctx, name2, "GET", "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape("@nobody:"+name2), nil)
		var fe *fedclient.Error
		if !errors.As(err, &fe) || fe.Status != 404 || fe.Code != "M_NOT_FOUND" {
			t.Fatalf("profile of nobody: %v", err)
		}

		sign := func(method, uri, origin, dest string, body []byte, keyID string, key ed25519.PrivateKey) string {
			h, err := xmatrix.Sign(xmatrix.Request{Method: method, URI: uri, Origin: origin, Destination: dest, Content: body}, keyID, key)
			if err != nil {
				t.Fatal(err)
			}
			return h
		}
		// The same request by hand is accepted...
		good := sign("GET", path, name1, name2, nil, hs1.Key.ID, hs1.Key.Private)
		if r := fedDo(t, ca, hs2, "GET", path, nil, good); r.Status != 200 || r.Str("displayname") != "Alice" {
			t.Fatalf("signed request: %d %s", r.Status, r.Raw)
		}
		// ...and so is its header in the other forms the spec allows.
		h, _ := xmatrix.Parse(good)
		quirky := fmt.Sprintf("x-matrix   Sig=%s ,\tKEY=%q,destination=%s , origin=%s", h.Sig, h.Key, h.Destination, h.Origin)
		if r := fedDo(t, ca, hs2, "GET", path, nil, quirky); r.Status != 200 {
			t.Fatalf("header with quirks %q: %d %s", quirky, r.Status, r.Raw)
		}

		_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
		sigBytes, _ := base64.RawStdEncoding.DecodeString(h.Sig)
		sigBytes[0] ^= 1
		flipped := h
		flipped.Sig = base64.RawStdEncoding.EncodeToString(sigBytes)
		noDest := h
		noDest.Destination = ""
		for _, c := range []struct{ name, auth string }{
			{"no header", ""},
			{"bearer token", "Bearer abc"},
			{"malformed", "X-Matrix origin=" + name1},
			{"signed for another destination", sign("GET", path, name1, "127.0.0.4:1", nil, hs1.Key.ID, hs1.Key.Private)},
			{"signed for another path", sign("GET", path+"&field=avatar_url", name1, name2, nil, hs1.Key.ID, hs1.Key.Private)},
			{"signed for another method", sign("POST", path, name1, name2, nil, hs1.Key.ID, hs1.Key.Private)},
			{"signature altered", flipped.String()},
			{"signed by another key under hs1's key ID", sign("GET", path, name1, name2, nil, hs1.Key.ID, otherKey)},
			{"unknown key ID", sign("GET", path, name1, name2, nil, "ed25519:forged", otherKey)},
			{"origin that does not exist", sign("GET", path, "127.0.0.9:1", name2, nil, "ed25519:x", otherKey)},
			{"hs2 impersonated", sign("GET", path, name2, name2, nil, "ed25519:forged", otherKey)},
			{"no destination, signature altered", func() string { d := noDest; d.Sig = flipped.Sig; return d.String() }()},
		} {
			r := fedDo(t, ca, hs2, "GET", path, nil, c.auth)
			if r.Status != http.StatusUnauthorized || r.Errcode() != "M_UNAUTHORIZED" {
				t.Errorf("%s: %d %s, want 401 M_UNAUTHORIZED", c.name, r.Status, r.Raw)
			}
		}
		// A header without destination (older servers) is accepted when the signature covers us.
		if r := fedDo(t, ca, hs2, "GET", path, nil, noDest.String()); r.Status != 200 {
			t.Errorf("no destination: %d %s", r.Status, r.Raw)
		}
	})
}

// TestKeyRotation: after hs2 rotated its key, the old key is served in old_verify_keys; hs1
// still verifies an event signed with it before it expired, but not one signed after, and the old
// key no longer authenticates requests.
func TestKeyRotation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ctx := context.Background()
		ca := servertest.NewCA(t)
		oldPub, oldPriv, _ := ed25519.GenerateKey(rand.Reader)
		const oldID = "ed25519:old1"
		expired := time.Now().Add(-time.Minute).UnixMilli()
		hs2 := servertest.Start(t, backend, servertest.Federated(t, ca, ip2), func(c *config.Config) {
			c.Federation.OldVerifyKeys = []string{fmt.Sprintf("%s %s %d", oldID, base64.RawStdEncoding.EncodeToString(oldPub), expired)}
		})
		hs1 := servertest.Start(t, backend, servertest.Federated(t, ca, ip1))
		name2 := hs2.Config.ServerName

		res := fedDo(t, ca, hs2, "GET", "/_matrix/key/v2/server", nil, "")
		keys, err := serverkey.ParseResponse(res.Raw, name2)
		if err != nil {
			t.Fatal(err)
		}
		if old := keys.OldKeys[oldID]; !old.Public.Equal(oldPub) || old.ExpiredTS != expired || len(keys.VerifyKeys) != 1 {
			t.Fatalf("old_verify_keys = %+v, verify_keys = %v", keys.OldKeys, keys.VerifyKeys)
		}

		v, _ := event.LookupVersion("11")
		build := func(ts int64) *event.PDU {
			p, err := event.Build(v, event.Proto{RoomID: "!room:" + name2, Sender: "@bob:" + name2, Type: "m.room.message",
				Content: json.RawMessage(`{"body":"hi","msgtype":"m.text"}`), PrevEvents: []string{}, AuthEvents: []string{},
				Depth: 3, OriginServerTS: ts}, name2, oldID, oldPriv)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		keyFunc := hs1.Federation.Keys().Key
		if err := event.VerifyEventSignatures(ctx, v, build(expired-10_000), keyFunc); err != nil {
			t.Fatalf("event signed with the old key before it expired: %v", err)
		}
		if err := event.VerifyEventSignatures(ctx, v, build(expired+10_000), keyFunc); !errors.Is(err, event.ErrNoSignature) {
			t.Fatalf("event signed with the old key after it expired: %v", err)
		}
		// An event tampered with after signing fails even with the right key.
		p := build(expired - 10_000)
		tampered, _ := event.Parse(v, bytes.Replace(p.Raw, []byte(`"depth":3`), []byte(`"depth":4`), 1))
		if err := event.VerifyEventSignatures(ctx, v, tampered, keyFunc); !errors.Is(err, event.ErrBadSignature) {
			t.Fatalf("tampered event: %v", err)
		}
		// The new key verifies new events; hs1 asked hs2 once (the second key came from the cache).
		newEvent, err := event.Build(v, event.Proto{RoomID: "!room:" + name2, Sender: "@bob:" + name2, Type: "m.room.message",
			Content: json.RawMessage(`{}`), PrevEvents: []string{}, AuthEvents: []string{}, Depth: 4, OriginServerTS: time.Now().UnixMilli()},
			name2, hs2.Key.ID, hs2.Key.Private)
		if err != nil {
			t.Fatal(err)
		}
		if err := event.VerifyEventSignatures(ctx, v, newEvent, keyFunc); err != nil {
			t.Fatalf("event signed with the new key: %v", err)
		}
		// A request signed with the old key is refused: old keys sign events, not requests.
		path := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape("@bob:"+name2)
		auth, _ := xmatrix.Sign(xmatrix.Request{Method: "GET", URI: path, Origin: name2, Destination: hs1.Config.ServerName}, oldID, oldPriv)
		if r := fedDo(t, ca, hs1, "GET", path, nil, auth); r.Status != http.StatusUnauthorized {
			t.Fatalf("request signed with an old key: %d %s", r.Status, r.Raw)
		}
		// hs2 checks its own old key the same way, without fetching.
		if err := event.VerifyEventSignatures(ctx, v, build(expired-10_000), hs2.Federation.Keys().Key); err != nil {
			t.Fatalf("hs2 checking its own old event: %v", err)
		}
	})
}

// TestStaticCertificate: the federation listener serves a certificate from files; without any
// TLS material there is no federation listener.
func TestStaticCertificate(t *testing.T) {
	ca := servertest.NewCA(t)
	leaf, err := cert.Issue(ca.CertPEM, ca.KeyPEM, []string{ip2})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	keyDER, _ := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[1]})...)
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	hs := servertest.Start(t, "sqlite", servertest.Federated(t, ca, ip2), func(c *config.Config) {
		c.Federation.TLS.CACertFile, c.Federation.TLS.CAKeyFile = "", ""
		c.Federation.TLS.CertFile, c.Federation.TLS.KeyFile = certFile, keyFile
	})
	if r := fedDo(t, ca, hs, "GET", "/_matrix/key/v2/server", nil, ""); r.Status != 200 {
		t.Fatalf("key server over the static certificate: %d %s", r.Status, r.Raw)
	}
	plain := servertest.Start(t, "sqlite")
	if addr := plain.FederationAddr(); addr != "" {
		t.Fatalf("federation listener %s without TLS material", addr)
	}
}

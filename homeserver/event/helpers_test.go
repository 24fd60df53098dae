package event

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The key of the spec's cryptographic test vectors.
const (
	specSeed   = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
	specServer = "domain"
	specKeyID  = "ed25519:1"
)

func specKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	seed, err := base64.RawStdEncoding.DecodeString(specSeed)
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(seed)
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCanonical(t testing.TB, s []byte) []byte {
	t.Helper()
	c, err := Canonical(s)
	if err != nil {
		t.Fatalf("Canonical(%s): %v", s, err)
	}
	return c
}

// keys is a KeyFunc over fixed keys: "server/keyID" -> key.
type keys map[string]ed25519.PublicKey

func (k keys) get(_ context.Context, server, keyID string, _ int64) (ed25519.PublicKey, error) {
	if pub, ok := k[server+"/"+keyID]; ok {
		return pub, nil
	}
	return nil, fmt.Errorf("%s %s: %w", server, keyID, ErrKeyNotFound)
}

// testServer is a signing identity for tests, derived deterministically from its name.
type testServer struct {
	name  string
	keyID string
	key   ed25519.PrivateKey
}

func newTestServer(name string) testServer {
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, name)
	return testServer{name: name, keyID: "ed25519:" + strings.ReplaceAll(name, ".", "_"), key: ed25519.NewKeyFromSeed(seed)}
}

func (s testServer) public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

func (s testServer) addTo(k keys) keys {
	k[s.name+"/"+s.keyID] = s.public()
	return k
}

// typicalEvent is a realistic m.room.message PDU as another server would send it.
func typicalEvent() []byte {
	return []byte(`{
  "type": "m.room.message",
  "room_id": "!OGEhHVWSdvArJzumhm:matrix.org",
  "sender": "@alice:example.org",
  "origin_server_ts": 1712345678901,
  "depth": 4821,
  "content": {
    "msgtype": "m.text",
    "body": "Hello everyone! Is the meeting still at 3pm? \ud83d\ude00 Let me know — I'll bring the slides.",
    "format": "org.matrix.custom.html",
    "formatted_body": "<p>Hello everyone! Is the meeting still at <b>3pm</b>? 😀 Let me know &mdash; I'll bring the slides.</p>",
    "m.mentions": {"user_ids": ["@bob:example.com"]},
    "m.relates_to": {"m.in_reply_to": {"event_id": "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"}}
  },
  "prev_events": ["$Aq7VSYE3fLk5gqS2MqUiJFXj1D2GSM2N7yBxEXXX2hA", "$Bq7VSYE3fLk5gqS2MqUiJFXj1D2GSM2N7yBxEXXX2hB"],
  "auth_events": ["$c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0cw", "$cG93ZXJsZXZlbHNwb3dlcmxldmVsc3Bvd2VybGV2ZQ", "$bWVtYmVybWVtYmVybWVtYmVybWVtYmVybWVtYmVyMQ"],
  "hashes": {"sha256": "J5vXPh0fSyBVTXlRGbGX5wBBjy0kplSNZGrE2Ad95HU"},
  "signatures": {"example.org": {"ed25519:a_JaEG": "pBwXaqTuTX2OLC+8kDTQjrEPXmBMHYk8iyZ0jY3RXtY2sjG2vnZLr6m7wXaPFCb/4TPvtpWFMVnQPDdk5wqnDA"}},
  "unsigned": {"age_ts": 1712345678901}
}`)
}

type ed25519PublicKey = ed25519.PublicKey

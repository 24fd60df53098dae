package clientapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Key management over HTTP: /keys/upload, query, claim, changes, device_signing/upload and
// signatures/upload, on both backends.

const keysV3 = "/_matrix/client/v3"

// keyPair is an ed25519 key: a device's identity key or a cross-signing key.
type keyPair = servertest.Key

// keyDevice is a logged-in device with its identity key, and what it uploads.
type keyDevice struct{ servertest.Device }

func withKeys(u servertest.User) keyDevice { return keyDevice{servertest.NewDevice(u)} }

// otks returns n signed one-time keys with IDs <prefix>0 ... <prefix>n-1.
func (d keyDevice) otks(t testing.TB, prefix string, n int) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for i := range n {
		out[fmt.Sprintf("signed_curve25519:%s%d", prefix, i)] = d.Sign(t, map[string]any{"key": fmt.Sprintf("otk+%s%d", prefix, i)})
	}
	return out
}

func (d keyDevice) fallback(t testing.TB, id string) map[string]json.RawMessage {
	return map[string]json.RawMessage{"signed_curve25519:" + id: d.Sign(t, map[string]any{"key": "fb+" + id, "fallback": true})}
}

func (d keyDevice) upload(t testing.TB, s *servertest.Server, body map[string]any) servertest.Response {
	t.Helper()
	return s.Do(t, "POST", keysV3+"/keys/upload", d.AccessToken, body)
}

func (d keyDevice) mustUpload(t *testing.T, s *servertest.Server, body map[string]any) map[string]any {
	t.Helper()
	res := d.upload(t, s, body)
	expect(t, res, 200, "")
	counts, ok := res.JSON["one_time_key_counts"].(map[string]any)
	if !ok {
		t.Fatalf("upload: no one_time_key_counts: %s", res.Raw)
	}
	return counts
}

// keysQuery runs /keys/query as u for users (all devices).
func keysQuery(t *testing.T, s *servertest.Server, u servertest.User, users ...string) map[string]any {
	t.Helper()
	q := map[string]any{}
	for _, id := range users {
		q[id] = []string{}
	}
	res := s.Do(t, "POST", keysV3+"/keys/query", u.AccessToken, map[string]any{"device_keys": q})
	expect(t, res, 200, "")
	return res.JSON
}

// devicesIn reads device_keys[user] of a query answer as device ID → raw key object.
func devicesIn(t *testing.T, q map[string]any, user string) map[string]json.RawMessage {
	t.Helper()
	raw, _ := json.Marshal(q["device_keys"].(map[string]any)[user])
	var out map[string]json.RawMessage
	_ = json.Unmarshal(raw, &out)
	return out
}

// keysClaim claims one signed_curve25519 key of each (user, device) as u.
func keysClaim(t *testing.T, s *servertest.Server, u servertest.User, want map[string]map[string]string) map[string]any {
	t.Helper()
	res := s.Do(t, "POST", keysV3+"/keys/claim", u.AccessToken, map[string]any{"one_time_keys": want})
	expect(t, res, 200, "")
	return res.JSON
}

// claimedIDs lists the key IDs handed out for (user, device) in a claim answer.
func claimedIDs(res map[string]any, user, device string) []string {
	otks, _ := res["one_time_keys"].(map[string]any)
	u, _ := otks[user].(map[string]any)
	d, _ := u[device].(map[string]any)
	var ids []string
	for id := range d {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func keyCounts(t *testing.T, s *servertest.Server, d keyDevice) (map[string]int, []string) {
	t.Helper()
	counts, fallback, err := s.E2EE.KeyCounts(context.Background(), d.UserID, d.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	return counts, fallback
}

// TestKeysUploadQueryClaim: a device uploads identity, one-time and fallback keys; another user
// queries and claims them.
func TestKeysUploadQueryClaim(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := withKeys(s.Register(t, "alice", "alice password"))
		alice2 := withKeys(s.Login(t, "alice", "alice password"))
		bob := withKeys(s.Register(t, "bob", "bob password"))

		counts := alice.mustUpload(t, s, map[string]any{"device_keys": alice.DeviceKeys(t),
			"one_time_keys": alice.otks(t, "A", 3), "fallback_keys": alice.fallback(t, "F")})
		if counts["signed_curve25519"] != 3.0 {
			t.Fatalf("counts: %v", counts)
		}
		expect(t, s.Do(t, "PUT", keysV3+"/devices/"+alice.DeviceID, alice.AccessToken, map[string]any{"display_name": "Phone"}), 200, "")

		q := keysQuery(t, s, bob.User, alice.UserID)
		devs := devicesIn(t, q, alice.UserID)
		if len(devs) != 1 || devs[alice.DeviceID] == nil {
			t.Fatalf("bob sees alice's devices %v (alice2 has no keys)", devs)
		}
		var dev struct {
			Keys     map[string]string `json:"keys"`
			Unsigned struct {
				Name string `json:"device_display_name"`
			} `json:"unsigned"`
		}
		_ = json.Unmarshal(devs[alice.DeviceID], &dev)
		if dev.Keys[alice.KeyID()] != alice.Key.Base64 || dev.Unsigned.Name != "Phone" {
			t.Fatalf("queried device keys: %s", devs[alice.DeviceID])
		}
		pub, _ := base64.RawStdEncoding.DecodeString(alice.Key.Base64)
		if err := event.VerifyJSON(devs[alice.DeviceID], alice.UserID, alice.KeyID(), pub); err != nil {
			t.Fatalf("served device keys no longer verify: %v", err)
		}
		if f, _ := q["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("failures: %v", q["failures"])
		}
		// Only the devices asked for; unknown local users get an empty entry; other servers fail.
		res := s.Do(t, "POST", keysV3+"/keys/query", bob.AccessToken, map[string]any{"device_keys": map[string]any{
			alice.UserID: []string{alice2.DeviceID}, "@nobody:localhost": []string{}, "@x:other.example": []string{}}})
		expect(t, res, 200, "")
		if len(devicesIn(t, res.JSON, alice.UserID)) != 0 || devicesIn(t, res.JSON, "@nobody:localhost") == nil {
			t.Fatalf("query for alice2 / nobody: %s", res.Raw)
		}
		if _, ok := res.JSON["failures"].(map[string]any)["other.example"]; !ok {
			t.Fatalf("remote user not in failures: %s", res.Raw)
		}

		// Claims: one-time keys first, each once; then the fallback key.
		seen := map[string]bool{}
		for i := range 3 {
			ids := claimedIDs(keysClaim(t, s, bob.User, map[string]map[string]string{alice.UserID: {alice.DeviceID: "signed_curve25519"}}),
				alice.UserID, alice.DeviceID)
			if len(ids) != 1 || !strings.HasPrefix(ids[0], "signed_curve25519:A") || seen[ids[0]] {
				t.Fatalf("claim %d: %v (seen %v)", i, ids, seen)
			}
			seen[ids[0]] = true
		}
		got := keysClaim(t, s, bob.User, map[string]map[string]string{alice.UserID: {alice.DeviceID: "signed_curve25519",
			"NOPE": "signed_curve25519", alice2.DeviceID: "signed_curve25519"}})
		if ids := claimedIDs(got, alice.UserID, alice.DeviceID); !slices.Equal(ids, []string{"signed_curve25519:F"}) {
			t.Fatalf("claim after one-time keys ran out: %v", got)
		}
		if len(claimedIDs(got, alice.UserID, "NOPE"))+len(claimedIDs(got, alice.UserID, alice2.DeviceID)) != 0 {
			t.Fatalf("claim of an unknown device: %v", got)
		}
		// The claimed key is the uploaded object.
		var fb struct {
			Key      string `json:"key"`
			Fallback bool   `json:"fallback"`
		}
		raw, _ := json.Marshal(got["one_time_keys"].(map[string]any)[alice.UserID].(map[string]any)[alice.DeviceID].(map[string]any)["signed_curve25519:F"])
		if _ = json.Unmarshal(raw, &fb); fb.Key != "fb+F" || !fb.Fallback {
			t.Fatalf("claimed fallback key: %s", raw)
		}

		// Upload with nothing in it reports the counts; an identical re-upload of unclaimed keys is fine.
		keys := alice.otks(t, "B", 2)
		alice.mustUpload(t, s, map[string]any{"one_time_keys": keys})
		if counts := alice.mustUpload(t, s, map[string]any{"one_time_keys": keys}); counts["signed_curve25519"] != 2.0 {
			t.Fatalf("counts after identical re-upload: %v", counts)
		}
		if counts := alice.mustUpload(t, s, map[string]any{}); counts["signed_curve25519"] != 2.0 {
			t.Fatalf("counts of an empty upload: %v", counts)
		}
	})
}

// TestKeysClaimConcurrent: 50 concurrent /keys/claim for one device with 30 one-time keys hand
// out 30 distinct keys, then the fallback key 20 times.
func TestKeysClaimConcurrent(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := withKeys(s.Register(t, "alice", "alice password"))
		alice.mustUpload(t, s, map[string]any{"device_keys": alice.DeviceKeys(t), "one_time_keys": alice.otks(t, "K", 30),
			"fallback_keys": alice.fallback(t, "FB")})
		var claimers []servertest.User
		for i := range 5 {
			claimers = append(claimers, s.Register(t, fmt.Sprintf("claimer%d", i), "claimer password"))
		}
		body, _ := json.Marshal(map[string]any{"one_time_keys": map[string]any{alice.UserID: map[string]string{alice.DeviceID: "signed_curve25519"}}})
		// An own transport, closed at the end: connections dialled but never used would otherwise
		// hold the server's graceful shutdown for 5 s.
		tr := &http.Transport{MaxIdleConnsPerHost: 50}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for i := range 50 {
			wg.Go(func() {
				req, _ := http.NewRequest("POST", s.URL+keysV3+"/keys/claim", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+claimers[i%len(claimers)].AccessToken)
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				var res map[string]any
				if resp.StatusCode != 200 || json.Unmarshal(raw, &res) != nil {
					errs <- fmt.Errorf("claim: %d %s", resp.StatusCode, raw)
					return
				}
				ids := claimedIDs(res, alice.UserID, alice.DeviceID)
				mu.Lock()
				defer mu.Unlock()
				for _, id := range ids {
					got[id]++
				}
				if len(ids) != 1 {
					errs <- fmt.Errorf("claim returned %v", ids)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(got) != 31 || got["signed_curve25519:FB"] != 20 {
			t.Fatalf("%d distinct keys, fallback %d times: %v", len(got), got["signed_curve25519:FB"], got)
		}
		for id, n := range got {
			if id != "signed_curve25519:FB" && n != 1 {
				t.Fatalf("one-time key %s handed out %d times", id, n)
			}
		}
	})
}

// TestKeysFallback: a claimed fallback key is marked used (KeyCounts, what /sync reports) and
// stays claimable; uploading it again keeps it used, a new one is unused.
func TestKeysFallback(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := withKeys(s.Register(t, "alice", "alice password"))
		bob := s.Register(t, "bob", "bob password")
		alice.mustUpload(t, s, map[string]any{"device_keys": alice.DeviceKeys(t), "fallback_keys": alice.fallback(t, "F1")})
		if counts, fb := keyCounts(t, s, alice); len(counts) != 0 || !slices.Equal(fb, []string{"signed_curve25519"}) {
			t.Fatalf("before claims: %v %v", counts, fb)
		}
		want := map[string]map[string]string{alice.UserID: {alice.DeviceID: "signed_curve25519"}}
		for range 2 {
			if ids := claimedIDs(keysClaim(t, s, bob, want), alice.UserID, alice.DeviceID); !slices.Equal(ids, []string{"signed_curve25519:F1"}) {
				t.Fatalf("claimed %v", ids)
			}
			if _, fb := keyCounts(t, s, alice); len(fb) != 0 {
				t.Fatalf("fallback still unused after a claim: %v", fb)
			}
		}
		alice.mustUpload(t, s, map[string]any{"fallback_keys": alice.fallback(t, "F1")})
		if _, fb := keyCounts(t, s, alice); len(fb) != 0 {
			t.Fatalf("re-uploading the used fallback key marked it unused: %v", fb)
		}
		alice.mustUpload(t, s, map[string]any{"fallback_keys": alice.fallback(t, "F2")})
		if _, fb := keyCounts(t, s, alice); !slices.Equal(fb, []string{"signed_curve25519"}) {
			t.Fatalf("new fallback key not unused: %v", fb)
		}
		if ids := claimedIDs(keysClaim(t, s, bob, want), alice.UserID, alice.DeviceID); !slices.Equal(ids, []string{"signed_curve25519:F2"}) {
			t.Fatalf("claimed %v after replacement", ids)
		}
		// Two fallback keys of one algorithm in one upload are refused.
		two := alice.fallback(t, "F3")
		two["signed_curve25519:F4"] = alice.fallback(t, "F4")["signed_curve25519:F4"]
		expect(t, alice.upload(t, s, map[string]any{"fallback_keys": two}), 400, "M_INVALID_PARAM")
	})
}

// TestKeysUploadBadInput: every malformed upload is refused with the spec's error and stores
// nothing, not even its valid parts.
func TestKeysUploadBadInput(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := withKeys(s.Register(t, "alice", "alice password"))
		bob := withKeys(s.Register(t, "bob", "bob password"))
		other := servertest.NewKey()

		badSig := alice.DeviceKeysObject()
		foreignDevice := alice.DeviceKeysObject()
		foreignDevice["device_id"] = "OTHERDEVICE"
		foreignUser := alice.DeviceKeysObject()
		foreignUser["user_id"] = bob.UserID
		noEd := alice.DeviceKeysObject()
		noEd["keys"] = map[string]string{"curve25519:" + alice.DeviceID: "curve"}
		huge := alice.DeviceKeysObject()
		huge["padding"] = strings.Repeat("x", 20<<10)
		manyOTKs := alice.otks(t, "M", 201)
		oneBad := alice.otks(t, "G", 3)
		oneBad["signed_curve25519:G1"] = servertest.SignAs(t, map[string]any{"key": "otk+G1"}, alice.UserID, alice.KeyID(), servertest.NewKey())

		for _, tc := range []struct {
			name    string
			body    any
			status  int
			errcode string
		}{
			{"bad signature", map[string]any{"device_keys": servertest.SignAs(t, badSig, alice.UserID, alice.KeyID(), other)}, 400, "M_INVALID_PARAM"},
			{"unsigned", map[string]any{"device_keys": alice.DeviceKeysObject()}, 400, "M_INVALID_PARAM"},
			{"another device", map[string]any{"device_keys": servertest.SignAs(t, foreignDevice, alice.UserID, "ed25519:OTHERDEVICE", alice.Key)}, 400, "M_INVALID_PARAM"},
			{"another user", map[string]any{"device_keys": servertest.SignAs(t, foreignUser, bob.UserID, alice.KeyID(), alice.Key)}, 400, "M_INVALID_PARAM"},
			{"no ed25519 key", map[string]any{"device_keys": alice.Sign(t, noEd)}, 400, "M_INVALID_PARAM"},
			{"not an object", map[string]any{"device_keys": "keys"}, 400, "M_INVALID_PARAM"},
			{"oversize device keys", map[string]any{"device_keys": alice.Sign(t, huge)}, 413, "M_TOO_LARGE"},
			{"too many one-time keys", map[string]any{"device_keys": alice.DeviceKeys(t), "one_time_keys": manyOTKs}, 413, "M_TOO_LARGE"},
			{"key ID without algorithm", map[string]any{"device_keys": alice.DeviceKeys(t), "one_time_keys": map[string]any{"AAAA": "key"}}, 400, "M_INVALID_PARAM"},
			{"unsigned signed key", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:X": "key"}}, 400, "M_INVALID_PARAM"},
			{"one-time key signed by another key", map[string]any{"device_keys": alice.DeviceKeys(t), "one_time_keys": oneBad}, 400, "M_INVALID_PARAM"},
			{"one_time_keys not an object", map[string]any{"one_time_keys": []string{"x"}}, 400, "M_BAD_JSON"},
			{"not JSON", "{", 400, "M_NOT_JSON"},
		} {
			res := s.Do(t, "POST", keysV3+"/keys/upload", alice.AccessToken, tc.body)
			if res.Status != tc.status || res.Errcode() != tc.errcode {
				t.Fatalf("%s: got %d %s, want %d %s", tc.name, res.Status, res.Raw, tc.status, tc.errcode)
			}
		}
		if devs := devicesIn(t, keysQuery(t, s, bob.User, alice.UserID), alice.UserID); len(devs) != 0 {
			t.Fatalf("refused uploads stored device keys: %v", devs)
		}
		if counts, fb := keyCounts(t, s, alice); len(counts) != 0 || len(fb) != 0 {
			t.Fatalf("refused uploads stored keys: %v %v", counts, fb)
		}

		// With device keys stored: other identity keys, an ID reused with other content.
		alice.mustUpload(t, s, map[string]any{"device_keys": alice.DeviceKeys(t), "one_time_keys": alice.otks(t, "A", 2)})
		rekeyed := withKeys(alice.User)
		expect(t, rekeyed.upload(t, s, map[string]any{"device_keys": rekeyed.DeviceKeys(t)}), 400, "M_INVALID_PARAM")
		reused := map[string]any{"signed_curve25519:A0": alice.Sign(t, map[string]any{"key": "something else"})}
		expect(t, alice.upload(t, s, map[string]any{"one_time_keys": reused}), 400, "M_INVALID_PARAM")
		// A one-time key signed by another key, now that the device key is known.
		expect(t, alice.upload(t, s, map[string]any{"one_time_keys": map[string]any{
			"signed_curve25519:Z": servertest.SignAs(t, map[string]any{"key": "z"}, alice.UserID, alice.KeyID(), other)}}), 400, "M_INVALID_PARAM")
		devs := devicesIn(t, keysQuery(t, s, bob.User, alice.UserID), alice.UserID)
		if !strings.Contains(string(devs[alice.DeviceID]), alice.Key.Base64) {
			t.Fatalf("identity keys changed: %s", devs[alice.DeviceID])
		}
		if counts, _ := keyCounts(t, s, alice); counts["signed_curve25519"] != 2 {
			t.Fatalf("counts after refused uploads: %v", counts)
		}
		// Query and claim refuse malformed requests.
		expect(t, s.Do(t, "POST", keysV3+"/keys/query", bob.AccessToken, map[string]any{}), 400, "M_MISSING_PARAM")
		expect(t, s.Do(t, "POST", keysV3+"/keys/query", bob.AccessToken, map[string]any{"device_keys": map[string]any{"alice": []string{}}}), 400, "M_INVALID_PARAM")
		expect(t, s.Do(t, "POST", keysV3+"/keys/claim", bob.AccessToken, map[string]any{"one_time_keys": map[string]any{alice.UserID: []string{}}}), 400, "M_BAD_JSON")
		expect(t, s.Do(t, "GET", keysV3+"/keys/changes?from=nonsense", bob.AccessToken, nil), 400, "M_INVALID_PARAM")
		expect(t, s.Do(t, "GET", keysV3+"/keys/changes", bob.AccessToken, nil), 400, "M_MISSING_PARAM")
	})
}

// crossSigning is a user's three cross-signing keys.
type crossSigning struct {
	master, self, user keyPair
}

func newCrossSigning() crossSigning {
	return crossSigning{master: servertest.NewKey(), self: servertest.NewKey(), user: servertest.NewKey()}
}

func csObject(userID, usage string, k keyPair) map[string]any {
	return map[string]any{"user_id": userID, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + k.Base64: k.Base64}}
}

// body is a device_signing/upload body: master, and self/user-signing keys signed by signer.
func (cs crossSigning) body(t testing.TB, userID string, signer keyPair) map[string]any {
	return map[string]any{
		"master_key":       csObject(userID, "master", cs.master),
		"self_signing_key": servertest.SignAs(t, csObject(userID, "self_signing", cs.self), userID, "ed25519:"+signer.Base64, signer),
		"user_signing_key": servertest.SignAs(t, csObject(userID, "user_signing", cs.user), userID, "ed25519:"+signer.Base64, signer),
	}
}

func deviceListsPosition(t *testing.T, s *servertest.Server) int64 {
	t.Helper()
	p, err := s.E2EE.DeviceListsPosition(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCrossSigning: the first upload needs no UIA, replacing keys does; signatures of the wrong
// key are refused; /keys/signatures/upload verifies each signature and reports per-key failures;
// queries merge the signatures each user may see.
func TestCrossSigning(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := withKeys(s.Register(t, "alice", "alice password"))
		bob := withKeys(s.Register(t, "bob", "bob password"))
		carol := s.Register(t, "carol", "carol password")
		alice.mustUpload(t, s, map[string]any{"device_keys": alice.DeviceKeys(t)})
		bob.mustUpload(t, s, map[string]any{"device_keys": bob.DeviceKeys(t)})
		acs, bcs := newCrossSigning(), newCrossSigning()
		path := keysV3 + "/keys/device_signing/upload"

		// Self-signing key not signed by the master key; no master key at all.
		expect(t, s.Do(t, "POST", path, alice.AccessToken, acs.body(t, alice.UserID, servertest.NewKey())), 400, "M_INVALID_SIGNATURE")
		expect(t, s.Do(t, "POST", path, alice.AccessToken, map[string]any{
			"self_signing_key": servertest.SignAs(t, csObject(alice.UserID, "self_signing", acs.self), alice.UserID, "ed25519:"+acs.master.Base64, acs.master)}), 400, "M_MISSING_PARAM")
		bad := acs.body(t, alice.UserID, acs.master)
		bad["master_key"] = csObject(bob.UserID, "master", acs.master)
		expect(t, s.Do(t, "POST", path, alice.AccessToken, bad), 400, "M_INVALID_PARAM")
		// A key equal to a device ID (a device logged in with a public key as its ID).
		clash := servertest.NewKey()
		expect(t, s.Do(t, "POST", keysV3+"/login", "", map[string]any{"type": "m.login.password", "user": "alice",
			"password": "alice password", "device_id": clash.Base64}), 200, "")
		collide := acs.body(t, alice.UserID, acs.master)
		collide["user_signing_key"] = servertest.SignAs(t, csObject(alice.UserID, "user_signing", clash), alice.UserID, "ed25519:"+acs.master.Base64, acs.master)
		expect(t, s.Do(t, "POST", path, alice.AccessToken, collide), 403, "M_FORBIDDEN")
		if q := keysQuery(t, s, alice.User, alice.UserID); len(q["master_keys"].(map[string]any)) != 0 {
			t.Fatalf("refused uploads stored keys: %v", q["master_keys"])
		}

		// First upload: no UIA. The same again: no UIA either.
		p0 := deviceListsPosition(t, s)
		body := acs.body(t, alice.UserID, acs.master)
		expect(t, s.Do(t, "POST", path, alice.AccessToken, body), 200, "")
		p1 := deviceListsPosition(t, s)
		if users, _ := s.E2EE.ChangedUsers(context.Background(), p0, p1); !slices.Equal(users, []string{alice.UserID}) {
			t.Fatalf("cross-signing upload recorded changes %v", users)
		}
		expect(t, s.Do(t, "POST", path, alice.AccessToken, body), 200, "")
		expect(t, s.Do(t, "POST", path, bob.AccessToken, bcs.body(t, bob.UserID, bcs.master)), 200, "")

		q := keysQuery(t, s, alice.User, alice.UserID, bob.UserID)
		if !strings.Contains(fmt.Sprint(q["master_keys"]), acs.master.Base64) || !strings.Contains(fmt.Sprint(q["self_signing_keys"]), bcs.self.Base64) {
			t.Fatalf("query: %v", q)
		}
		usks := q["user_signing_keys"].(map[string]any)
		if len(usks) != 1 || usks[alice.UserID] == nil {
			t.Fatalf("alice must see her own user-signing key only: %v", usks)
		}

		// Signatures: alice's self-signing key on her device, her device on her master key, her
		// user-signing key on bob's master key.
		sigPath := keysV3 + "/keys/signatures/upload"
		devSigned := servertest.SignAs(t, alice.DeviceKeysObject(), alice.UserID, "ed25519:"+acs.self.Base64, acs.self)
		masterSigned := alice.Sign(t, csObject(alice.UserID, "master", acs.master))
		bobMasterSigned := servertest.SignAs(t, csObject(bob.UserID, "master", bcs.master), alice.UserID, "ed25519:"+acs.user.Base64, acs.user)
		res := s.Do(t, "POST", sigPath, alice.AccessToken, map[string]any{
			alice.UserID: map[string]any{alice.DeviceID: devSigned, acs.master.Base64: masterSigned},
			bob.UserID:   map[string]any{bcs.master.Base64: bobMasterSigned}})
		expect(t, res, 200, "")
		if f := res.JSON["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("failures: %s", res.Raw)
		}
		// Failures, per key: a bad signature, a key that does not match, an unknown device, a
		// signature on bob's device (only master keys of other users may be signed).
		wrongSig := servertest.SignAs(t, alice.DeviceKeysObject(), alice.UserID, "ed25519:"+acs.self.Base64, servertest.NewKey())
		changed := alice.DeviceKeysObject()
		changed["algorithms"] = []string{"other"}
		res = s.Do(t, "POST", sigPath, alice.AccessToken, map[string]any{
			alice.UserID: map[string]any{alice.DeviceID: wrongSig, "NODEVICE": devSigned},
			bob.UserID:   map[string]any{bob.DeviceID: servertest.SignAs(t, bob.DeviceKeysObject(), alice.UserID, "ed25519:"+acs.user.Base64, acs.user)}})
		expect(t, res, 200, "")
		failures := res.JSON["failures"].(map[string]any)
		errcodeOf := func(user, key string) string {
			u, _ := failures[user].(map[string]any)
			e, _ := u[key].(map[string]any)
			s, _ := e["errcode"].(string)
			return s
		}
		if errcodeOf(alice.UserID, alice.DeviceID) != "M_INVALID_SIGNATURE" || errcodeOf(alice.UserID, "NODEVICE") != "M_NOT_FOUND" ||
			errcodeOf(bob.UserID, bob.DeviceID) != "M_NOT_FOUND" {
			t.Fatalf("failures: %s", res.Raw)
		}
		res = s.Do(t, "POST", sigPath, alice.AccessToken, map[string]any{alice.UserID: map[string]any{
			alice.DeviceID: servertest.SignAs(t, changed, alice.UserID, "ed25519:"+acs.self.Base64, acs.self)}})
		expect(t, res, 200, "")
		if failures = res.JSON["failures"].(map[string]any); errcodeOf(alice.UserID, alice.DeviceID) != "M_INVALID_SIGNATURE" {
			t.Fatalf("mismatching object: %s", res.Raw)
		}

		// What each user sees: bob and carol see alice's device signed by her self-signing key and
		// her master key signed by her device; only alice sees her signature on bob's master key.
		for _, viewer := range []servertest.User{bob.User, carol} {
			q := keysQuery(t, s, viewer, alice.UserID, bob.UserID)
			dev := string(devicesIn(t, q, alice.UserID)[alice.DeviceID])
			master := fmt.Sprint(q["master_keys"].(map[string]any)[alice.UserID])
			bobMaster := fmt.Sprint(q["master_keys"].(map[string]any)[bob.UserID])
			if !strings.Contains(dev, "ed25519:"+acs.self.Base64) || !strings.Contains(master, alice.KeyID()) || strings.Contains(bobMaster, acs.user.Base64) {
				t.Fatalf("%s sees device %s, master %s, bob's master %s", viewer.UserID, dev, master, bobMaster)
			}
			if q["user_signing_keys"].(map[string]any)[alice.UserID] != nil {
				t.Fatalf("%s sees alice's user-signing key: %v", viewer.UserID, q["user_signing_keys"])
			}
		}
		q = keysQuery(t, s, alice.User, bob.UserID)
		if !strings.Contains(fmt.Sprint(q["master_keys"].(map[string]any)[bob.UserID]), "ed25519:"+acs.user.Base64) {
			t.Fatalf("alice does not see her signature on bob's master key: %v", q["master_keys"])
		}

		// Replacing the keys needs UIA (password), and drops the signatures by the old keys.
		ncs := newCrossSigning()
		newBody := ncs.body(t, alice.UserID, ncs.master)
		res = s.Do(t, "POST", path, alice.AccessToken, newBody)
		if res.Status != 401 || res.Str("session") == "" || !strings.Contains(string(res.Raw), "m.login.password") {
			t.Fatalf("replacement without auth: %d %s", res.Status, res.Raw)
		}
		if q := keysQuery(t, s, bob.User, alice.UserID); !strings.Contains(fmt.Sprint(q["master_keys"]), acs.master.Base64) {
			t.Fatalf("keys replaced without auth: %v", q["master_keys"])
		}
		newBody["auth"] = passwordAuth("alice", "wrong password", res.Str("session"))
		expect(t, s.Do(t, "POST", path, alice.AccessToken, newBody), 401, "M_FORBIDDEN")
		newBody["auth"] = passwordAuth("alice", "alice password", res.Str("session"))
		expect(t, s.Do(t, "POST", path, alice.AccessToken, newBody), 200, "")
		q = keysQuery(t, s, bob.User, alice.UserID)
		if !strings.Contains(fmt.Sprint(q["master_keys"]), ncs.master.Base64) || strings.Contains(string(devicesIn(t, q, alice.UserID)[alice.DeviceID]), acs.self.Base64) {
			t.Fatalf("after replacement: master %v, device %s", q["master_keys"], devicesIn(t, q, alice.UserID)[alice.DeviceID])
		}
		// Uploading only a new self-signing key still needs UIA.
		expect(t, s.Do(t, "POST", path, alice.AccessToken, map[string]any{
			"self_signing_key": servertest.SignAs(t, csObject(alice.UserID, "self_signing", servertest.NewKey()), alice.UserID, "ed25519:"+ncs.master.Base64, ncs.master)}), 401, "")
	})
}

// TestKeysDeviceDeletion: deleting a device removes its keys and records a device-list change;
// deactivation removes them all.
func TestKeysDeviceDeletion(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := withKeys(s.Register(t, "alice", "alice password"))
		alice2 := withKeys(s.Login(t, "alice", "alice password"))
		bob := s.Register(t, "bob", "bob password")
		for _, d := range []keyDevice{alice, alice2} {
			d.mustUpload(t, s, map[string]any{"device_keys": d.DeviceKeys(t), "one_time_keys": d.otks(t, "K", 2), "fallback_keys": d.fallback(t, "F")})
		}
		before := deviceListsPosition(t, s)
		expect(t, s.Do(t, "POST", keysV3+"/delete_devices", alice.AccessToken, map[string]any{
			"devices": []string{alice2.DeviceID}, "auth": passwordAuth("alice", "alice password", "")}), 200, "")
		after := deviceListsPosition(t, s)
		if users, _ := s.E2EE.ChangedUsers(context.Background(), before, after); !slices.Contains(users, alice.UserID) {
			t.Fatalf("deletion recorded no device-list change (%d -> %d): %v", before, after, users)
		}
		devs := devicesIn(t, keysQuery(t, s, bob, alice.UserID), alice.UserID)
		if len(devs) != 1 || devs[alice.DeviceID] == nil {
			t.Fatalf("after deleting alice2: %v", devs)
		}
		if ids := claimedIDs(keysClaim(t, s, bob, map[string]map[string]string{alice.UserID: {alice2.DeviceID: "signed_curve25519"}}), alice.UserID, alice2.DeviceID); len(ids) != 0 {
			t.Fatalf("claimed %v of a deleted device", ids)
		}
		if counts, fb := keyCounts(t, s, alice2); len(counts) != 0 || len(fb) != 0 {
			t.Fatalf("keys of the deleted device left: %v %v", counts, fb)
		}
		expect(t, s.Do(t, "POST", keysV3+"/account/deactivate", alice.AccessToken, map[string]any{"auth": passwordAuth("alice", "alice password", "")}), 200, "")
		if devs := devicesIn(t, keysQuery(t, s, bob, alice.UserID), alice.UserID); len(devs) != 0 {
			t.Fatalf("keys after deactivation: %v", devs)
		}
	})
}

// syncTokenNow is a sync token at the current events and device_lists positions (the device_lists
// part is the seventh).
func syncTokenNow(t *testing.T, s *servertest.Server) string {
	t.Helper()
	pos, err := s.Store.Read().Positions(context.Background(), storage.StreamEvents, storage.StreamDeviceLists)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("s%d_0_0_0_0_0_%d", pos[storage.StreamEvents], pos[storage.StreamDeviceLists])
}

func keyChanges(t *testing.T, s *servertest.Server, u servertest.User, from, to string) (changed, left []string) {
	t.Helper()
	q := url.Values{"from": {from}}
	if to != "" {
		q.Set("to", to)
	}
	res := s.Do(t, "GET", keysV3+"/keys/changes?"+q.Encode(), u.AccessToken, nil)
	expect(t, res, 200, "")
	var body struct{ Changed, Left []string }
	_ = json.Unmarshal(res.Raw, &body)
	slices.Sort(body.Changed)
	slices.Sort(body.Left)
	return body.Changed, body.Left
}

// TestKeysChanges: /keys/changes lists room-mates who re-keyed, users who started sharing a room,
// and in left those who stopped.
func TestKeysChanges(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := withKeys(s.Register(t, "alice", "alice password"))
		bob := withKeys(s.Register(t, "bob", "bob password"))
		carol := withKeys(s.Register(t, "carol", "carol password"))
		dave := s.Register(t, "dave", "dave password")
		res := s.Do(t, "POST", keysV3+"/createRoom", alice.AccessToken, map[string]any{"preset": "public_chat"})
		expect(t, res, 200, "")
		room := res.Str("room_id")
		expect(t, s.Do(t, "POST", keysV3+"/rooms/"+url.PathEscape(room)+"/join", bob.AccessToken, map[string]any{}), 200, "")
		for _, d := range []keyDevice{alice, bob, carol} {
			d.mustUpload(t, s, map[string]any{"device_keys": d.DeviceKeys(t)})
		}

		// Bob re-keys: a new device with new keys. Carol, who shares no room, too.
		tok0 := syncTokenNow(t, s)
		bob2 := withKeys(s.Login(t, "bob", "bob password"))
		bob2.mustUpload(t, s, map[string]any{"device_keys": bob2.DeviceKeys(t)})
		carol2 := withKeys(s.Login(t, "carol", "carol password"))
		carol2.mustUpload(t, s, map[string]any{"device_keys": carol2.DeviceKeys(t)})
		tok1 := syncTokenNow(t, s)
		if changed, left := keyChanges(t, s, alice.User, tok0, tok1); !slices.Equal(changed, []string{bob.UserID}) || len(left) != 0 {
			t.Fatalf("changes (tok0, tok1]: changed %v left %v", changed, left)
		}
		if changed, _ := keyChanges(t, s, alice.User, tok0, ""); !slices.Equal(changed, []string{bob.UserID}) {
			t.Fatalf("changes from tok0 without to: %v", changed)
		}
		if changed, _ := keyChanges(t, s, alice.User, tok1, tok1); len(changed) != 0 {
			t.Fatalf("empty range: %v", changed)
		}

		// Dave joins (no keys yet): he now shares a room. Bob leaves: left.
		expect(t, s.Do(t, "POST", keysV3+"/rooms/"+url.PathEscape(room)+"/join", dave.AccessToken, map[string]any{}), 200, "")
		tok2 := syncTokenNow(t, s)
		if changed, left := keyChanges(t, s, alice.User, tok1, tok2); !slices.Equal(changed, []string{dave.UserID}) || len(left) != 0 {
			t.Fatalf("after dave joined: changed %v left %v", changed, left)
		}
		expect(t, s.Do(t, "POST", keysV3+"/rooms/"+url.PathEscape(room)+"/leave", bob.AccessToken, map[string]any{}), 200, "")
		tok3 := syncTokenNow(t, s)
		if changed, left := keyChanges(t, s, alice.User, tok2, tok3); len(changed) != 0 || !slices.Equal(left, []string{bob.UserID}) {
			t.Fatalf("after bob left: changed %v left %v", changed, left)
		}
		// Bob's view: he left the room, so alice and dave are in his left.
		if _, left := keyChanges(t, s, bob.User, tok2, tok3); !slices.Equal(left, []string{alice.UserID, dave.UserID}) {
			t.Fatalf("bob's left: %v", left)
		}
	})
}

// TestKeysDeactivation: deactivating an account deletes its cross-signing keys and key backups,
// and announces the change to room-mates through device_lists.
func TestKeysDeactivation(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := withKeys(s.Register(t, "alice", "alice password"))
		bob := s.Register(t, "bob", "bob password")
		alice.mustUpload(t, s, map[string]any{"device_keys": alice.DeviceKeys(t)})
		acs := newCrossSigning()
		expect(t, s.Do(t, "POST", keysV3+"/keys/device_signing/upload", alice.AccessToken, acs.body(t, alice.UserID, acs.master)), 200, "")
		expect(t, s.Do(t, "POST", keysV3+"/room_keys/version", alice.AccessToken, map[string]any{
			"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "abc"}}), 200, "")
		if q := keysQuery(t, s, bob, alice.UserID); len(q["master_keys"].(map[string]any)) != 1 {
			t.Fatalf("master key not served before deactivation: %v", q["master_keys"])
		}
		p0 := deviceListsPosition(t, s)
		expect(t, s.Do(t, "POST", keysV3+"/account/deactivate", alice.AccessToken, map[string]any{
			"auth": passwordAuth("alice", "alice password", "")}), 200, "")
		if q := keysQuery(t, s, bob, alice.UserID); len(q["master_keys"].(map[string]any)) != 0 || len(q["self_signing_keys"].(map[string]any)) != 0 {
			t.Fatalf("cross-signing keys of a deactivated user served: %v %v", q["master_keys"], q["self_signing_keys"])
		}
		if users, _ := s.E2EE.ChangedUsers(context.Background(), p0, deviceListsPosition(t, s)); !slices.Contains(users, alice.UserID) {
			t.Fatalf("deactivation recorded device-list changes %v", users)
		}
		versions, err := s.Store.Read().LatestBackupVersion(context.Background(), "alice")
		if err == nil {
			t.Fatalf("key backup of a deactivated user kept: %+v", versions)
		}
	})
}

// TestKeysDeviceRename: renaming a device is a device-list change (the name is in /keys/query).
func TestKeysDeviceRename(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		p0 := deviceListsPosition(t, s)
		expect(t, s.Do(t, "PUT", keysV3+"/devices/"+alice.DeviceID, alice.AccessToken, map[string]any{"display_name": "phone"}), 200, "")
		if users, _ := s.E2EE.ChangedUsers(context.Background(), p0, deviceListsPosition(t, s)); !slices.Equal(users, []string{alice.UserID}) {
			t.Fatalf("rename recorded device-list changes %v", users)
		}
	})
}

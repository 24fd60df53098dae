package clientapi_test

import (
	"fmt"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// backupKey is a KeyBackupData with a marker in session_data to tell keys apart.
func backupKey(verified bool, index, forwarded int, marker string) map[string]any {
	return map[string]any{"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
		"session_data": map[string]any{"ciphertext": marker, "ephemeral": "e", "mac": "m"}}
}

func TestRoomKeysBackup(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		bob := s.Register(t, "bob", "battery staple")
		tok := alice.AccessToken
		const v3 = "/_matrix/client/v3"
		const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
		keys := func(path, version string) string { return v3 + "/room_keys/keys" + path + "?version=" + version }
		expect := func(name string, res servertest.Response, status int, errcode string) servertest.Response {
			t.Helper()
			if res.Status != status || res.Errcode() != errcode {
				t.Fatalf("%s: got %d %s, want %d %s", name, res.Status, res.Raw, status, errcode)
			}
			return res
		}
		update := func(name string, res servertest.Response, count int) string {
			t.Helper()
			expect(name, res, 200, "")
			if res.JSON["count"] != float64(count) || res.Str("etag") == "" {
				t.Fatalf("%s: %s, want count %d and an etag", name, res.Raw, count)
			}
			return res.Str("etag")
		}

		// No backup yet.
		expect("no current version", s.Do(t, "GET", v3+"/room_keys/version", tok, nil), 404, "M_NOT_FOUND")
		expect("keys without backup", s.Do(t, "PUT", keys("/!r:x/s1", "1"), tok, backupKey(false, 0, 0, "a")), 404, "M_NOT_FOUND")
		expect("read without backup", s.Do(t, "GET", keys("", "1"), tok, nil), 404, "M_NOT_FOUND")

		// Versions.
		requireJSON(t, s.Do(t, "POST", v3+"/room_keys/version", tok, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "pk1"}}),
			`{"version":"1"}`)
		v := expect("get current", s.Do(t, "GET", v3+"/room_keys/version", tok, nil), 200, "")
		etag0 := v.Str("etag")
		if v.Str("version") != "1" || v.Str("algorithm") != alg || v.JSON["count"] != 0.0 || etag0 == "" ||
			v.JSON["auth_data"].(map[string]any)["public_key"] != "pk1" {
			t.Fatalf("version: %s", v.Raw)
		}
		requireJSON(t, s.Do(t, "GET", v3+"/room_keys/version/1", tok, nil), string(v.Raw))
		expect("bob has none", s.Do(t, "GET", v3+"/room_keys/version", bob.AccessToken, nil), 404, "M_NOT_FOUND")
		expect("bob cannot read alice's", s.Do(t, "GET", v3+"/room_keys/version/1", bob.AccessToken, nil), 404, "M_NOT_FOUND")

		// Keys at the three levels.
		etag1 := update("put session", s.Do(t, "PUT", keys("/!r:x/s1", "1"), tok, backupKey(false, 5, 1, "s1-a")), 1)
		if etag1 == etag0 {
			t.Fatal("etag did not change when a key was added")
		}
		update("put room", s.Do(t, "PUT", keys("/!r:x", "1"), tok, map[string]any{"sessions": map[string]any{"s2": backupKey(true, 0, 0, "s2")}}), 2)
		etag3 := update("put all", s.Do(t, "PUT", keys("", "1"), tok, map[string]any{"rooms": map[string]any{
			"!r2:x": map[string]any{"sessions": map[string]any{"s3": backupKey(false, 1, 0, "s3")}}}}), 3)
		requireJSON(t, s.Do(t, "GET", keys("/!r:x/s1", "1"), tok, nil),
			`{"first_message_index":5,"forwarded_count":1,"is_verified":false,"session_data":{"ciphertext":"s1-a","ephemeral":"e","mac":"m"}}`)
		requireJSON(t, s.Do(t, "GET", keys("/%21r%3Ax", "1"), tok, nil), `{"sessions":{
			"s1":{"first_message_index":5,"forwarded_count":1,"is_verified":false,"session_data":{"ciphertext":"s1-a","ephemeral":"e","mac":"m"}},
			"s2":{"first_message_index":0,"forwarded_count":0,"is_verified":true,"session_data":{"ciphertext":"s2","ephemeral":"e","mac":"m"}}}}`)
		requireJSON(t, s.Do(t, "GET", keys("", "1"), tok, nil), `{"rooms":{
			"!r:x":{"sessions":{
				"s1":{"first_message_index":5,"forwarded_count":1,"is_verified":false,"session_data":{"ciphertext":"s1-a","ephemeral":"e","mac":"m"}},
				"s2":{"first_message_index":0,"forwarded_count":0,"is_verified":true,"session_data":{"ciphertext":"s2","ephemeral":"e","mac":"m"}}}},
			"!r2:x":{"sessions":{
				"s3":{"first_message_index":1,"forwarded_count":0,"is_verified":false,"session_data":{"ciphertext":"s3","ephemeral":"e","mac":"m"}}}}}}`)
		requireJSON(t, s.Do(t, "GET", keys("/!empty:x", "1"), tok, nil), `{"sessions":{}}`)
		expect("missing session", s.Do(t, "GET", keys("/!r:x/nope", "1"), tok, nil), 404, "M_NOT_FOUND")
		v = expect("version after puts", s.Do(t, "GET", v3+"/room_keys/version", tok, nil), 200, "")
		if v.JSON["count"] != 3.0 || v.Str("etag") != etag3 {
			t.Fatalf("version after puts: %s, want count 3 etag %s", v.Raw, etag3)
		}

		// Which key wins for a session that is already stored (s1: unverified, index 5, forwarded 1).
		etag := etag3
		for i, st := range []struct {
			verified         bool
			index, forwarded int
			wins             bool
		}{
			{false, 6, 0, false}, // higher first_message_index loses, whatever forwarded_count
			{false, 5, 2, false}, // same index, higher forwarded_count loses
			{false, 5, 1, false}, // a tie keeps the stored key
			{false, 5, 0, true},  // same index, lower forwarded_count wins
			{false, 3, 9, true},  // lower first_message_index wins, whatever forwarded_count
			{true, 10, 9, true},  // verified wins over unverified, whatever the index
			{false, 0, 0, false}, // unverified loses to verified, whatever the index
			{true, 0, 0, true},   // both verified: lower index wins
		} {
			marker := fmt.Sprint("try-", i)
			e := update(marker, s.Do(t, "PUT", keys("/!r:x/s1", "1"), tok, backupKey(st.verified, st.index, st.forwarded, marker)), 3)
			got := expect(marker, s.Do(t, "GET", keys("/!r:x/s1", "1"), tok, nil), 200, "")
			won := got.JSON["session_data"].(map[string]any)["ciphertext"] == marker
			if won != st.wins || (e != etag) != st.wins {
				t.Fatalf("%+v: won %v, etag %s → %s; stored %s", st, won, etag, e, got.Raw)
			}
			etag = e
		}

		// Updating a version changes auth_data only.
		requireJSON(t, s.Do(t, "PUT", v3+"/room_keys/version/1", tok, map[string]any{"algorithm": alg, "version": "1",
			"auth_data": map[string]any{"public_key": "pk2"}}), `{}`)
		v = expect("after update", s.Do(t, "GET", v3+"/room_keys/version/1", tok, nil), 200, "")
		if v.JSON["auth_data"].(map[string]any)["public_key"] != "pk2" || v.JSON["count"] != 3.0 || v.Str("etag") != etag {
			t.Fatalf("after update: %s", v.Raw)
		}
		expect("other algorithm", s.Do(t, "PUT", v3+"/room_keys/version/1", tok, map[string]any{"algorithm": "other", "auth_data": map[string]any{}}),
			400, "M_INVALID_PARAM")
		expect("version mismatch", s.Do(t, "PUT", v3+"/room_keys/version/1", tok, map[string]any{"algorithm": alg, "version": "2",
			"auth_data": map[string]any{}}), 400, "M_INVALID_PARAM")
		expect("update unknown", s.Do(t, "PUT", v3+"/room_keys/version/9", tok, map[string]any{"algorithm": alg, "auth_data": map[string]any{}}),
			404, "M_NOT_FOUND")

		// A new version becomes the current one: writes to the old one are refused, reads go on.
		requireJSON(t, s.Do(t, "POST", v3+"/room_keys/version", tok, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "pk3"}}),
			`{"version":"2"}`)
		for _, version := range []string{"1", "abc", "99"} {
			res := expect("write to "+version, s.Do(t, "PUT", keys("/!r:x/s9", version), tok, backupKey(true, 0, 0, "x")), 403, "M_WRONG_ROOM_KEYS_VERSION")
			if res.Str("current_version") != "2" {
				t.Fatalf("current_version in %s", res.Raw)
			}
		}
		if v := expect("current", s.Do(t, "GET", v3+"/room_keys/version", tok, nil), 200, ""); v.Str("version") != "2" || v.JSON["count"] != 0.0 {
			t.Fatalf("current version: %s", v.Raw)
		}
		expect("read the old one", s.Do(t, "GET", keys("/!r:x/s2", "1"), tok, nil), 200, "")
		expect("no version", s.Do(t, "GET", v3+"/room_keys/keys", tok, nil), 400, "M_MISSING_PARAM")
		expect("read unknown", s.Do(t, "GET", keys("", "7"), tok, nil), 404, "M_NOT_FOUND")

		// Deleting keys at the three levels.
		e := update("delete session", s.Do(t, "DELETE", keys("/!r:x/s1", "1"), tok, nil), 2)
		if e == etag {
			t.Fatal("etag did not change when a key was deleted")
		}
		expect("deleted session", s.Do(t, "GET", keys("/!r:x/s1", "1"), tok, nil), 404, "M_NOT_FOUND")
		if e2 := update("delete missing session", s.Do(t, "DELETE", keys("/!r:x/s1", "1"), tok, nil), 2); e2 != e {
			t.Fatal("etag changed though nothing was deleted")
		}
		update("delete room", s.Do(t, "DELETE", keys("/!r:x", "1"), tok, nil), 1)
		update("delete all", s.Do(t, "DELETE", keys("", "1"), tok, nil), 0)
		requireJSON(t, s.Do(t, "GET", keys("", "1"), tok, nil), `{"rooms":{}}`)
		expect("delete keys of unknown version", s.Do(t, "DELETE", keys("", "7"), tok, nil), 404, "M_NOT_FOUND")

		// Deleting a version deletes its keys; its number is not handed out again.
		update("fill v2", s.Do(t, "PUT", keys("/!r:x/s1", "2"), tok, backupKey(true, 0, 0, "v2")), 1)
		requireJSON(t, s.Do(t, "DELETE", v3+"/room_keys/version/2", tok, nil), `{}`)
		requireJSON(t, s.Do(t, "DELETE", v3+"/room_keys/version/2", tok, nil), `{}`) // again: fine
		expect("delete unknown version", s.Do(t, "DELETE", v3+"/room_keys/version/7", tok, nil), 404, "M_NOT_FOUND")
		expect("get deleted version", s.Do(t, "GET", v3+"/room_keys/version/2", tok, nil), 404, "M_NOT_FOUND")
		expect("keys of deleted version", s.Do(t, "GET", keys("", "2"), tok, nil), 404, "M_NOT_FOUND")
		if v := expect("current after delete", s.Do(t, "GET", v3+"/room_keys/version", tok, nil), 200, ""); v.Str("version") != "1" {
			t.Fatalf("current after deleting 2: %s", v.Raw)
		}
		requireJSON(t, s.Do(t, "POST", v3+"/room_keys/version", tok, map[string]any{"algorithm": alg, "auth_data": map[string]any{}}),
			`{"version":"3"}`)
		if v := expect("fresh version", s.Do(t, "GET", v3+"/room_keys/version/3", tok, nil), 200, ""); v.JSON["count"] != 0.0 {
			t.Fatalf("version 3: %s", v.Raw)
		}

		// Bad input.
		for _, c := range []struct {
			name, method, path string
			body               any
			status             int
			errcode            string
		}{
			{"no algorithm", "POST", v3 + "/room_keys/version", `{"auth_data":{}}`, 400, "M_MISSING_PARAM"},
			{"no auth_data", "POST", v3 + "/room_keys/version", `{"algorithm":"a"}`, 400, "M_MISSING_PARAM"},
			{"auth_data not an object", "POST", v3 + "/room_keys/version", `{"algorithm":"a","auth_data":"x"}`, 400, "M_BAD_JSON"},
			{"key without is_verified", "PUT", keys("/!r:x/s1", "3"), `{"first_message_index":0,"forwarded_count":0,"session_data":{}}`, 400, "M_MISSING_PARAM"},
			{"key without session_data", "PUT", keys("/!r:x/s1", "3"), `{"first_message_index":0,"forwarded_count":0,"is_verified":true}`, 400, "M_MISSING_PARAM"},
			{"session_data not an object", "PUT", keys("/!r:x/s1", "3"), `{"first_message_index":0,"forwarded_count":0,"is_verified":true,"session_data":"x"}`, 400, "M_BAD_JSON"},
			{"index is a string", "PUT", keys("/!r:x/s1", "3"), `{"first_message_index":"0","forwarded_count":0,"is_verified":true,"session_data":{}}`, 400, "M_BAD_JSON"},
			{"negative index", "PUT", keys("/!r:x/s1", "3"), backupKey(true, -1, 0, "x"), 400, "M_INVALID_PARAM"},
			{"room without sessions", "PUT", keys("/!r:x", "3"), `{}`, 400, "M_MISSING_PARAM"},
			{"no rooms", "PUT", keys("", "3"), `{}`, 400, "M_MISSING_PARAM"},
			{"bad room ID", "PUT", keys("", "3"), map[string]any{"rooms": map[string]any{"room": map[string]any{"sessions": map[string]any{}}}}, 400, "M_INVALID_PARAM"},
			{"no token", "GET", v3 + "/room_keys/version", nil, 401, "M_MISSING_TOKEN"},
		} {
			token := tok
			if c.name == "no token" {
				token = ""
			}
			res := s.Do(t, c.method, c.path, token, c.body)
			if res.Status != c.status || res.Errcode() != c.errcode {
				t.Errorf("%s: got %d %s, want %d %s", c.name, res.Status, res.Raw, c.status, c.errcode)
			}
		}
	})
}

package clientapi_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

const (
	adminRegister = "/_synapse/admin/v1/register"
	adminTokens   = "/_synapse/admin/v1/registration_tokens"
)

// testMAC computes the shared-secret registration MAC as register_new_matrix_user does, independently
// of the server's code.
func testMAC(nonce, user, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(servertest.SharedSecret))
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00"))
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte("\x00" + userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

func getNonce(t *testing.T, s *servertest.Server) string {
	t.Helper()
	res := s.Do(t, "GET", adminRegister, "", nil)
	if res.Status != http.StatusOK || res.Str("nonce") == "" {
		t.Fatalf("GET %s: %d %s", adminRegister, res.Status, res.Raw)
	}
	return res.Str("nonce")
}

// sharedSecretBody is a correctly signed registration body; extra fields are added as given.
func sharedSecretBody(nonce, user, password string, admin bool, extra map[string]any) map[string]any {
	body := map[string]any{"nonce": nonce, "username": user, "password": password, "admin": admin,
		"mac": testMAC(nonce, user, password, admin, "")}
	for k, v := range extra {
		body[k] = v
	}
	return body
}

// registerShared creates a user through shared-secret registration and returns it logged in.
func registerShared(t *testing.T, s *servertest.Server, user, password string, admin bool) servertest.User {
	t.Helper()
	res := s.Do(t, "POST", adminRegister, "", sharedSecretBody(getNonce(t, s), user, password, admin, nil))
	if res.Status != http.StatusOK {
		t.Fatalf("shared-secret register %s: %d %s", user, res.Status, res.Raw)
	}
	return servertest.User{UserID: res.Str("user_id"), Localpart: strings.ToLower(user), Password: password,
		AccessToken: res.Str("access_token"), DeviceID: res.Str("device_id")}
}

func wantError(t *testing.T, what string, res servertest.Response, status int, errcode string) {
	t.Helper()
	if res.Status != status || res.Errcode() != errcode {
		t.Fatalf("%s: got %d %s, want %d %s", what, res.Status, res.Raw, status, errcode)
	}
}

func userID(s *servertest.Server, localpart string) string {
	return "@" + localpart + ":" + s.Config.ServerName
}

func registrationOff(c *config.Config) {
	off := false
	c.Registration.Enabled = &off
}

func TestSharedSecretRegistration(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		ctx := context.Background()

		// An admin with a display name, while open registration is off.
		nonce := getNonce(t, s)
		if len(nonce) < 32 {
			t.Fatalf("nonce %q is too short to be unguessable", nonce)
		}
		res := s.Do(t, "POST", adminRegister, "", sharedSecretBody(nonce, "Alice", "correct horse", true,
			map[string]any{"displayname": "Alice Admin"}))
		if res.Status != http.StatusOK {
			t.Fatalf("register admin: %d %s", res.Status, res.Raw)
		}
		if res.Str("user_id") != userID(s, "alice") || res.Str("home_server") != s.Config.ServerName ||
			res.Str("access_token") == "" || res.Str("device_id") == "" {
			t.Fatalf("register admin: unexpected body %s", res.Raw)
		}
		alice := res.Str("access_token")
		who := s.Do(t, "GET", "/_matrix/client/v3/account/whoami", alice, nil)
		if who.Status != http.StatusOK || who.Str("user_id") != userID(s, "alice") || who.Str("device_id") != res.Str("device_id") {
			t.Fatalf("whoami with the new token: %d %s", who.Status, who.Raw)
		}
		name, err := s.Store.Read().ProfileField(ctx, "alice", "displayname")
		if err != nil || string(name) != `"Alice Admin"` {
			t.Fatalf("display name = %s, %v; want \"Alice Admin\"", name, err)
		}
		if got := s.Do(t, "GET", adminTokens, alice, nil); got.Status != http.StatusOK {
			t.Fatalf("admin created by shared secret cannot use the admin API: %d %s", got.Status, got.Raw)
		}
		// The password works for /login.
		s.Login(t, "alice", "correct horse")

		// The nonce was used once and is gone, even for a correctly signed request.
		reuse := s.Do(t, "POST", adminRegister, "", sharedSecretBody(nonce, "alice2", "correct horse", true, nil))
		wantError(t, "reused nonce", reuse, http.StatusBadRequest, "M_UNKNOWN")
		if reuse.Str("error") != "unrecognised nonce" {
			t.Errorf("reused nonce: error %q, want Synapse's \"unrecognised nonce\"", reuse.Str("error"))
		}

		// A non-admin: logged in, but no admin API.
		bob := registerShared(t, s, "bob", "battery staple", false)
		if who := s.Do(t, "GET", "/_matrix/client/v3/account/whoami", bob.AccessToken, nil); who.Str("user_id") != userID(s, "bob") {
			t.Fatalf("whoami bob: %d %s", who.Status, who.Raw)
		}
		wantError(t, "non-admin on admin API", s.Do(t, "GET", adminTokens, bob.AccessToken, nil), http.StatusForbidden, "M_FORBIDDEN")
		if acct, err := s.Store.Read().Account(ctx, "bob"); err != nil || acct.Admin {
			t.Fatalf("bob: admin=%v err=%v, want a non-admin account", acct.Admin, err)
		}
		if name, _ := s.Store.Read().ProfileField(ctx, "bob", "displayname"); string(name) != `"bob"` {
			t.Errorf("default display name = %s, want \"bob\"", name)
		}

		// Wrong MAC: refused, and the nonce is burned.
		nonce = getNonce(t, s)
		bad := sharedSecretBody(nonce, "carol", "pw", false, map[string]any{"mac": testMAC(nonce, "carol", "other", false, "")})
		res = s.Do(t, "POST", adminRegister, "", bad)
		wantError(t, "wrong MAC", res, http.StatusForbidden, "M_FORBIDDEN")
		if res.Str("error") != "HMAC incorrect" {
			t.Errorf("wrong MAC: error %q, want \"HMAC incorrect\"", res.Str("error"))
		}
		wantError(t, "nonce after a wrong MAC", s.Do(t, "POST", adminRegister, "", sharedSecretBody(nonce, "carol", "pw", false, nil)),
			http.StatusBadRequest, "M_UNKNOWN")

		// A MAC signed for a normal user does not make an admin.
		nonce = getNonce(t, s)
		escalate := sharedSecretBody(nonce, "mallory", "pw", false, map[string]any{"admin": true})
		wantError(t, "admin flag not covered by the MAC", s.Do(t, "POST", adminRegister, "", escalate), http.StatusForbidden, "M_FORBIDDEN")

		// user_type is covered by the MAC; unknown types are refused.
		nonce = getNonce(t, s)
		res = s.Do(t, "POST", adminRegister, "", sharedSecretBody(nonce, "botty", "pw", false,
			map[string]any{"user_type": "bot", "mac": testMAC(nonce, "botty", "pw", false, "bot")}))
		if res.Status != http.StatusOK {
			t.Fatalf("register with user_type bot: %d %s", res.Status, res.Raw)
		}
		nonce = getNonce(t, s)
		wantError(t, "user_type not in the MAC", s.Do(t, "POST", adminRegister, "", sharedSecretBody(nonce, "botty2", "pw", false,
			map[string]any{"user_type": "bot"})), http.StatusForbidden, "M_FORBIDDEN")
		nonce = getNonce(t, s)
		wantError(t, "unknown user_type", s.Do(t, "POST", adminRegister, "", sharedSecretBody(nonce, "x", "pw", false,
			map[string]any{"user_type": "wizard", "mac": testMAC(nonce, "x", "pw", false, "wizard")})), http.StatusBadRequest, "M_UNKNOWN")

		// An expired nonce (older than 60 s) is refused.
		if err := s.Store.Write(ctx, func(c storage.Conn) error {
			return c.InsertRegistrationNonce(ctx, "stale-nonce", time.Now().Add(-time.Second).UnixMilli())
		}); err != nil {
			t.Fatal(err)
		}
		wantError(t, "expired nonce", s.Do(t, "POST", adminRegister, "", sharedSecretBody("stale-nonce", "dave", "pw", false, nil)),
			http.StatusBadRequest, "M_UNKNOWN")

		// Username problems come after the MAC check, with the spec's errcodes.
		wantError(t, "taken username", s.Do(t, "POST", adminRegister, "", sharedSecretBody(getNonce(t, s), "bob", "pw", false, nil)),
			http.StatusBadRequest, "M_USER_IN_USE")
		wantError(t, "invalid username", s.Do(t, "POST", adminRegister, "", sharedSecretBody(getNonce(t, s), "bad name!", "pw", false, nil)),
			http.StatusBadRequest, "M_INVALID_USERNAME")

		// A display name over the profile limit is refused before the account is made.
		wantError(t, "display name too long", s.Do(t, "POST", adminRegister, "", sharedSecretBody(getNonce(t, s), "longname", "pw", false,
			map[string]any{"displayname": strings.Repeat("é", 257)})), http.StatusBadRequest, "M_INVALID_PARAM")
		if ok, _ := s.Store.Read().AccountExists(ctx, "longname"); ok {
			t.Fatal("account created although its display name was refused")
		}

		// Missing fields.
		for _, field := range []string{"nonce", "username", "password", "mac"} {
			body := sharedSecretBody(getNonce(t, s), "erin", "pw", false, nil)
			delete(body, field)
			wantError(t, "missing "+field, s.Do(t, "POST", adminRegister, "", body), http.StatusBadRequest, "M_BAD_JSON")
		}
		wantError(t, "not JSON", s.Do(t, "POST", adminRegister, "", "{"), http.StatusBadRequest, "M_NOT_JSON")
	}, registrationOff)
}

func TestSharedSecretRegistrationDisabled(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		res := s.Do(t, "GET", adminRegister, "", nil)
		wantError(t, "nonce without a shared secret", res, http.StatusBadRequest, "M_UNKNOWN")
		nonce := "0123456789abcdef"
		res = s.Do(t, "POST", adminRegister, "", sharedSecretBody(nonce, "alice", "pw", true, nil))
		wantError(t, "register without a shared secret", res, http.StatusBadRequest, "M_UNKNOWN")
		if res.Str("error") != "Shared secret registration is not enabled" {
			t.Errorf("error %q, want Synapse's \"Shared secret registration is not enabled\"", res.Str("error"))
		}
		if ok, _ := s.Store.Read().AccountExists(context.Background(), "alice"); ok {
			t.Fatal("an account was created with shared-secret registration disabled")
		}
	}, func(c *config.Config) { c.Registration.SharedSecret = "" })
}

// tokenJSON is a registration token object as the admin API returns it.
type tokenJSON struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

func decodeToken(t *testing.T, what string, res servertest.Response) tokenJSON {
	t.Helper()
	if res.Status != http.StatusOK {
		t.Fatalf("%s: %d %s", what, res.Status, res.Raw)
	}
	for _, k := range []string{"token", "uses_allowed", "pending", "completed", "expiry_time"} {
		if _, ok := res.JSON[k]; !ok {
			t.Fatalf("%s: field %s missing (Synapse sends it, null if unset): %s", what, k, res.Raw)
		}
	}
	var tok tokenJSON
	if err := json.Unmarshal(res.Raw, &tok); err != nil {
		t.Fatalf("%s: %v in %s", what, err, res.Raw)
	}
	return tok
}

func listTokens(t *testing.T, s *servertest.Server, admin, query string) map[string]tokenJSON {
	t.Helper()
	res := s.Do(t, "GET", adminTokens+query, admin, nil)
	if res.Status != http.StatusOK {
		t.Fatalf("list tokens%s: %d %s", query, res.Status, res.Raw)
	}
	var body struct {
		Tokens []tokenJSON `json:"registration_tokens"`
	}
	if err := json.Unmarshal(res.Raw, &body); err != nil || body.Tokens == nil {
		t.Fatalf("list tokens%s: %s (%v)", query, res.Raw, err)
	}
	out := map[string]tokenJSON{}
	for _, tok := range body.Tokens {
		out[tok.Token] = tok
	}
	return out
}

func ptr(v int64) *int64 { return &v }

func eqPtr(a, b *int64) bool { return (a == nil && b == nil) || (a != nil && b != nil && *a == *b) }

func TestRegistrationTokensAdminAPI(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		admin := registerShared(t, s, "admin", "admin password", true).AccessToken
		user := s.Register(t, "someone", "some password").AccessToken

		// Only server admins.
		for _, c := range []struct{ method, path string }{
			{"GET", adminTokens}, {"POST", adminTokens + "/new"}, {"GET", adminTokens + "/abcd"},
			{"PUT", adminTokens + "/abcd"}, {"DELETE", adminTokens + "/abcd"},
		} {
			wantError(t, c.method+" "+c.path+" without token", s.Do(t, c.method, c.path, "", "{}"), http.StatusUnauthorized, "M_MISSING_TOKEN")
			wantError(t, c.method+" "+c.path+" as non-admin", s.Do(t, c.method, c.path, user, "{}"), http.StatusForbidden, "M_FORBIDDEN")
			wantError(t, c.method+" "+c.path+" with a bad token", s.Do(t, c.method, c.path, "nope", "{}"), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		}

		// Generated tokens.
		gen := decodeToken(t, "new {}", s.Do(t, "POST", adminTokens+"/new", admin, map[string]any{}))
		if !regexp.MustCompile(`^[A-Za-z0-9._~-]{16}$`).MatchString(gen.Token) || gen.UsesAllowed != nil || gen.ExpiryTime != nil ||
			gen.Pending != 0 || gen.Completed != 0 {
			t.Fatalf("generated token: %+v", gen)
		}
		long := decodeToken(t, "new length 64", s.Do(t, "POST", adminTokens+"/new", admin, map[string]any{"length": 64}))
		if !regexp.MustCompile(`^[A-Za-z0-9._~-]{64}$`).MatchString(long.Token) {
			t.Fatalf("length 64 gave %q", long.Token)
		}
		if empty := decodeToken(t, "new, empty body", s.Do(t, "POST", adminTokens+"/new", admin, nil)); len(empty.Token) != 16 {
			t.Fatalf("empty body gave %q", empty.Token)
		}

		// A chosen token with limits.
		future := time.Now().Add(time.Hour).UnixMilli()
		abcd := decodeToken(t, "new abcd", s.Do(t, "POST", adminTokens+"/new", admin,
			map[string]any{"token": "abcd", "uses_allowed": 3, "expiry_time": future}))
		if abcd.Token != "abcd" || !eqPtr(abcd.UsesAllowed, ptr(3)) || !eqPtr(abcd.ExpiryTime, ptr(future)) {
			t.Fatalf("new abcd: %+v", abcd)
		}
		wantError(t, "duplicate token", s.Do(t, "POST", adminTokens+"/new", admin, map[string]any{"token": "abcd"}),
			http.StatusBadRequest, "M_INVALID_PARAM")

		past := time.Now().Add(-time.Hour).UnixMilli()
		for _, c := range []struct {
			name string
			body string
		}{
			{"empty token", `{"token":""}`},
			{"token with a space", `{"token":"a b"}`},
			{"token with a slash", `{"token":"a/b"}`},
			{"token too long", `{"token":"` + strings.Repeat("a", 65) + `"}`},
			{"token not a string", `{"token":5}`},
			{"token null", `{"token":null}`},
			{"length zero", `{"length":0}`},
			{"length 65", `{"length":65}`},
			{"length string", `{"length":"16"}`},
			{"length fraction", `{"length":1.5}`},
			{"length null", `{"length":null}`},
			{"uses_allowed negative", `{"uses_allowed":-1}`},
			{"uses_allowed string", `{"uses_allowed":"3"}`},
			{"uses_allowed boolean", `{"uses_allowed":true}`},
			{"uses_allowed fraction", `{"uses_allowed":2.5}`},
			{"expiry_time string", `{"expiry_time":"soon"}`},
			{"expiry_time in the past", `{"expiry_time":` + jsonNum(past) + `}`},
		} {
			wantError(t, "new: "+c.name, s.Do(t, "POST", adminTokens+"/new", admin, c.body), http.StatusBadRequest, "M_INVALID_PARAM")
		}
		wantError(t, "new: not an object", s.Do(t, "POST", adminTokens+"/new", admin, "[]"), http.StatusBadRequest, "M_BAD_JSON")

		// Read.
		got := decodeToken(t, "get abcd", s.Do(t, "GET", adminTokens+"/abcd", admin, nil))
		if got.Token != abcd.Token || !eqPtr(got.UsesAllowed, abcd.UsesAllowed) || !eqPtr(got.ExpiryTime, abcd.ExpiryTime) {
			t.Fatalf("get abcd: %+v, want %+v", got, abcd)
		}
		wantError(t, "get unknown", s.Do(t, "GET", adminTokens+"/nope", admin, nil), http.StatusNotFound, "M_NOT_FOUND")

		// Update: only the fields given change; null clears.
		got = decodeToken(t, "put uses_allowed", s.Do(t, "PUT", adminTokens+"/abcd", admin, map[string]any{"uses_allowed": 5}))
		if !eqPtr(got.UsesAllowed, ptr(5)) || !eqPtr(got.ExpiryTime, ptr(future)) {
			t.Fatalf("put uses_allowed 5: %+v", got)
		}
		got = decodeToken(t, "put expiry null", s.Do(t, "PUT", adminTokens+"/abcd", admin, `{"expiry_time":null}`))
		if !eqPtr(got.UsesAllowed, ptr(5)) || got.ExpiryTime != nil {
			t.Fatalf("put expiry_time null: %+v", got)
		}
		got = decodeToken(t, "put nothing", s.Do(t, "PUT", adminTokens+"/abcd", admin, map[string]any{}))
		if !eqPtr(got.UsesAllowed, ptr(5)) || got.ExpiryTime != nil {
			t.Fatalf("put {}: %+v", got)
		}
		got = decodeToken(t, "put both", s.Do(t, "PUT", adminTokens+"/abcd", admin, `{"uses_allowed":null,"expiry_time":`+jsonNum(future)+`}`))
		if got.UsesAllowed != nil || !eqPtr(got.ExpiryTime, ptr(future)) {
			t.Fatalf("put both: %+v", got)
		}
		if again := decodeToken(t, "get after put", s.Do(t, "GET", adminTokens+"/abcd", admin, nil)); again.UsesAllowed != nil ||
			!eqPtr(again.ExpiryTime, ptr(future)) {
			t.Fatalf("put did not persist: %+v", again)
		}
		wantError(t, "put unknown", s.Do(t, "PUT", adminTokens+"/nope", admin, map[string]any{"uses_allowed": 1}), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "put unknown, no change", s.Do(t, "PUT", adminTokens+"/nope", admin, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "put negative uses", s.Do(t, "PUT", adminTokens+"/abcd", admin, map[string]any{"uses_allowed": -2}), http.StatusBadRequest, "M_INVALID_PARAM")
		wantError(t, "put expiry string", s.Do(t, "PUT", adminTokens+"/abcd", admin, map[string]any{"expiry_time": "x"}), http.StatusBadRequest, "M_INVALID_PARAM")
		wantError(t, "put expiry in the past", s.Do(t, "PUT", adminTokens+"/abcd", admin, map[string]any{"expiry_time": past}), http.StatusBadRequest, "M_INVALID_PARAM")

		// List, and filter by validity: a token with no uses left is invalid.
		decodeToken(t, "new used-up", s.Do(t, "POST", adminTokens+"/new", admin, map[string]any{"token": "used-up", "uses_allowed": 0}))
		all := listTokens(t, s, admin, "")
		for _, tok := range []string{gen.Token, long.Token, "abcd", "used-up"} {
			if _, ok := all[tok]; !ok {
				t.Fatalf("list misses %q: %v", tok, all)
			}
		}
		if len(all) != 5 {
			t.Fatalf("list has %d tokens, want 5: %v", len(all), all)
		}
		valid := listTokens(t, s, admin, "?valid=true")
		invalid := listTokens(t, s, admin, "?valid=false")
		if _, ok := valid["used-up"]; ok || len(valid) != 4 {
			t.Fatalf("?valid=true: %v", valid)
		}
		if _, ok := invalid["used-up"]; !ok || len(invalid) != 1 {
			t.Fatalf("?valid=false: %v", invalid)
		}
		wantError(t, "?valid=maybe", s.Do(t, "GET", adminTokens+"?valid=maybe", admin, nil), http.StatusBadRequest, "M_INVALID_PARAM")

		// Delete.
		if res := s.Do(t, "DELETE", adminTokens+"/abcd", admin, nil); res.Status != http.StatusOK || string(res.Raw) != "{}" {
			t.Fatalf("delete: %d %s", res.Status, res.Raw)
		}
		wantError(t, "get deleted", s.Do(t, "GET", adminTokens+"/abcd", admin, nil), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "delete again", s.Do(t, "DELETE", adminTokens+"/abcd", admin, nil), http.StatusNotFound, "M_NOT_FOUND")
		if _, ok := listTokens(t, s, admin, "")["abcd"]; ok {
			t.Fatal("deleted token still listed")
		}
	})
}

func jsonNum(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

const validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token="

// registerWithToken runs /register with the m.login.registration_token flow and returns the final
// response.
func registerWithToken(t *testing.T, s *servertest.Server, user, password, token string) servertest.Response {
	t.Helper()
	body := map[string]any{"username": user, "password": password}
	first := s.Do(t, "POST", "/_matrix/client/v3/register", "", body)
	if first.Status != http.StatusUnauthorized || first.Str("session") == "" {
		t.Fatalf("register %s: want a 401 challenge, got %d %s", user, first.Status, first.Raw)
	}
	var ch struct {
		Flows []struct {
			Stages []string `json:"stages"`
		} `json:"flows"`
	}
	_ = json.Unmarshal(first.Raw, &ch)
	if len(ch.Flows) != 1 || len(ch.Flows[0].Stages) != 1 || ch.Flows[0].Stages[0] != "m.login.registration_token" {
		t.Fatalf("register %s: flows %s, want only [m.login.registration_token]", user, first.Raw)
	}
	body["auth"] = map[string]any{"type": "m.login.registration_token", "token": token, "session": first.Str("session")}
	return s.Do(t, "POST", "/_matrix/client/v3/register", "", body)
}

func TestRegistrationTokenFlow(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		ctx := context.Background()
		admin := registerShared(t, s, "admin", "admin password", true).AccessToken
		decodeToken(t, "new once", s.Do(t, "POST", adminTokens+"/new", admin, map[string]any{"token": "once", "uses_allowed": 1}))
		decodeToken(t, "new many", s.Do(t, "POST", adminTokens+"/new", admin, map[string]any{"token": "many"}))

		for tok, want := range map[string]bool{"once": true, "many": true, "nope": false} {
			res := s.Do(t, "GET", validity+tok, "", nil)
			if res.Status != http.StatusOK || res.JSON["valid"] != want {
				t.Fatalf("validity of %q: %d %s, want valid=%v", tok, res.Status, res.Raw, want)
			}
		}

		// Without a token, or with a dummy stage, no account.
		res := registerWithToken(t, s, "dave", "dave password", "nope")
		wantError(t, "unknown registration token", res, http.StatusUnauthorized, "M_UNAUTHORIZED")
		first := s.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "dave", "password": "dave password"})
		dummy := s.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "dave", "password": "dave password",
			"auth": map[string]any{"type": "m.login.dummy", "session": first.Str("session")}})
		if dummy.Status != http.StatusUnauthorized || dummy.Str("access_token") != "" {
			t.Fatalf("dummy stage when a token is required: %d %s", dummy.Status, dummy.Raw)
		}

		// A valid token registers the user.
		res = registerWithToken(t, s, "dave", "dave password", "once")
		if res.Status != http.StatusOK || res.Str("user_id") != userID(s, "dave") {
			t.Fatalf("register with a valid token: %d %s", res.Status, res.Raw)
		}
		if who := s.Do(t, "GET", "/_matrix/client/v3/account/whoami", res.Str("access_token"), nil); who.Str("user_id") != userID(s, "dave") {
			t.Fatalf("whoami dave: %d %s", who.Status, who.Raw)
		}
		once := decodeToken(t, "get once", s.Do(t, "GET", adminTokens+"/once", admin, nil))
		if once.Pending != 0 || once.Completed != 1 {
			t.Fatalf("after one registration: pending=%d completed=%d, want 0 and 1", once.Pending, once.Completed)
		}
		if res := s.Do(t, "GET", validity+"once", "", nil); res.JSON["valid"] != false {
			t.Fatalf("used-up token still valid: %s", res.Raw)
		}

		// uses_allowed=1: no second user.
		res = registerWithToken(t, s, "erin", "erin password", "once")
		wantError(t, "used-up token", res, http.StatusUnauthorized, "M_UNAUTHORIZED")
		if ok, _ := s.Store.Read().AccountExists(ctx, "erin"); ok {
			t.Fatal("a second user registered with a single-use token")
		}
		once = decodeToken(t, "get once again", s.Do(t, "GET", adminTokens+"/once", admin, nil))
		if once.Pending != 0 || once.Completed != 1 {
			t.Fatalf("after a refused use: pending=%d completed=%d, want 0 and 1", once.Pending, once.Completed)
		}

		// An unlimited token counts its uses.
		for _, u := range []string{"erin", "frank"} {
			if res := registerWithToken(t, s, u, u+" password", "many"); res.Status != http.StatusOK {
				t.Fatalf("register %s with an unlimited token: %d %s", u, res.Status, res.Raw)
			}
		}
		if many := decodeToken(t, "get many", s.Do(t, "GET", adminTokens+"/many", admin, nil)); many.Pending != 0 || many.Completed != 2 {
			t.Fatalf("unlimited token: pending=%d completed=%d, want 0 and 2", many.Pending, many.Completed)
		}

		// An expired token is refused. The admin API does not accept an expiry in the past, so the
		// token is stored as it is once its expiry_time has passed.
		expired := time.Now().Add(-time.Minute).UnixMilli()
		if err := s.Store.Write(ctx, func(c storage.Conn) error {
			return c.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "expired", ExpiryTS: &expired, CreatedTS: expired})
		}); err != nil {
			t.Fatal(err)
		}
		if res := s.Do(t, "GET", validity+"expired", "", nil); res.JSON["valid"] != false {
			t.Fatalf("expired token valid: %s", res.Raw)
		}
		wantError(t, "expired token", registerWithToken(t, s, "gina", "gina password", "expired"), http.StatusUnauthorized, "M_UNAUTHORIZED")
		if _, ok := listTokens(t, s, admin, "?valid=false")["expired"]; !ok {
			t.Fatal("expired token not listed as invalid")
		}

		// /register/available.
		wantError(t, "available: taken", s.Do(t, "GET", "/_matrix/client/v3/register/available?username=dave", "", nil),
			http.StatusBadRequest, "M_USER_IN_USE")
		wantError(t, "available: invalid", s.Do(t, "GET", "/_matrix/client/v3/register/available?username=bad%20name!", "", nil),
			http.StatusBadRequest, "M_INVALID_USERNAME")
		if res := s.Do(t, "GET", "/_matrix/client/v3/register/available?username=gina", "", nil); res.Status != http.StatusOK ||
			res.JSON["available"] != true {
			t.Fatalf("available: free: %d %s", res.Status, res.Raw)
		}
	}, registrationOff, func(c *config.Config) { c.Registration.RequireToken = true })
}

func TestRegistrationClosed(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		res := s.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "alice", "password": "alice password"})
		wantError(t, "register while closed", res, http.StatusForbidden, "M_FORBIDDEN")
		res = s.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "alice", "password": "alice password",
			"auth": map[string]any{"type": "m.login.dummy"}})
		wantError(t, "register while closed, with auth", res, http.StatusForbidden, "M_FORBIDDEN")
		wantError(t, "token validity while closed", s.Do(t, "GET", validity+"x", "", nil), http.StatusForbidden, "M_FORBIDDEN")
		// Admin tools still create users.
		u := registerShared(t, s, "alice", "alice password", false)
		if u.UserID != userID(s, "alice") {
			t.Fatalf("shared-secret registration while closed: %+v", u)
		}
	}, registrationOff)
}

// TestWhois: a user's devices with their last connection, for the user and for admins only.
func TestWhois(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password alice")
		second := s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password alice"})
		if second.Status != 200 {
			t.Fatalf("second login: %d %s", second.Status, second.Raw)
		}
		bob := s.Register(t, "bob", "password bob")
		admin := registerShared(t, s, "admin", "password admin", true)
		path := "/_matrix/client/v3/admin/whois/" + alice.UserID
		for _, token := range []string{alice.AccessToken, admin.AccessToken} {
			res := s.Do(t, "GET", path, token, nil)
			var out struct {
				UserID  string `json:"user_id"`
				Devices map[string]struct {
					Sessions []struct {
						Connections []struct {
							IP       string `json:"ip"`
							LastSeen int64  `json:"last_seen"`
						} `json:"connections"`
					} `json:"sessions"`
				} `json:"devices"`
			}
			if res.Status != 200 || json.Unmarshal(res.Raw, &out) != nil || out.UserID != alice.UserID || len(out.Devices) != 2 {
				t.Fatalf("whois: %d %s", res.Status, res.Raw)
			}
			for _, id := range []string{alice.DeviceID, second.Str("device_id")} {
				d, ok := out.Devices[id]
				if !ok || len(d.Sessions) != 1 || len(d.Sessions[0].Connections) != 1 {
					t.Fatalf("device %s: %s", id, res.Raw)
				}
			}
		}
		wantError(t, "other user", s.Do(t, "GET", path, bob.AccessToken, nil), 403, "M_FORBIDDEN")
		wantError(t, "unknown user", s.Do(t, "GET", "/_matrix/client/v3/admin/whois/@ghost:localhost", admin.AccessToken, nil), 404, "M_NOT_FOUND")
		wantError(t, "remote user", s.Do(t, "GET", "/_matrix/client/v3/admin/whois/@x:elsewhere.example", admin.AccessToken, nil), 404, "M_NOT_FOUND")
		wantError(t, "no token", s.Do(t, "GET", path, "", nil), 401, "M_MISSING_TOKEN")
	})
}

package clientapi_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

func passwordAuth(user, password, session string) map[string]any {
	a := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password}
	if session != "" {
		a["session"] = session
	}
	return a
}

func expect(t *testing.T, res servertest.Response, status int, errcode string) {
	t.Helper()
	if res.Status != status || res.Errcode() != errcode {
		t.Fatalf("got %d %s, want %d %q", res.Status, res.Raw, status, errcode)
	}
}

// TestDevicesAndLogout covers two users on two devices each: listing, renaming, deleting a device
// with user-interactive auth, logout and logout/all, and that revoked tokens are refused.
func TestDevicesAndLogout(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice1 := s.Register(t, "alice", "alice password")
		bob1 := s.Register(t, "bob", "bob password")
		alice2 := s.Login(t, "alice", "alice password")
		bob2 := s.Login(t, "@bob:localhost", "bob password")
		if alice1.DeviceID == alice2.DeviceID {
			t.Fatal("two logins got the same device")
		}

		res := s.Do(t, "GET", "/_matrix/client/v3/account/whoami", alice2.AccessToken, nil)
		if res.Status != 200 || res.Str("user_id") != "@alice:localhost" || res.Str("device_id") != alice2.DeviceID || res.JSON["is_guest"] != false {
			t.Fatalf("whoami: %d %s", res.Status, res.Raw)
		}

		res = s.Do(t, "GET", "/_matrix/client/v3/devices", alice1.AccessToken, nil)
		devs, _ := res.JSON["devices"].([]any)
		if res.Status != 200 || len(devs) != 2 {
			t.Fatalf("devices: %d %s", res.Status, res.Raw)
		}
		// Each user sees only their own devices.
		for _, d := range devs {
			id := d.(map[string]any)["device_id"]
			if id != alice1.DeviceID && id != alice2.DeviceID {
				t.Fatalf("alice sees foreign device %v", id)
			}
		}
		expect(t, s.Do(t, "GET", "/_matrix/client/v3/devices/"+bob1.DeviceID, alice1.AccessToken, nil), 404, "M_NOT_FOUND")

		// Rename.
		expect(t, s.Do(t, "PUT", "/_matrix/client/v3/devices/"+alice2.DeviceID, alice1.AccessToken, map[string]any{"display_name": "Phone"}), 200, "")
		res = s.Do(t, "GET", "/_matrix/client/v3/devices/"+alice2.DeviceID, alice1.AccessToken, nil)
		if res.Str("display_name") != "Phone" {
			t.Fatalf("rename not stored: %s", res.Raw)
		}

		// Delete with UIA: first a 401 challenge, then a wrong password, then the right one.
		path := "/_matrix/client/v3/devices/" + alice2.DeviceID
		res = s.Do(t, "DELETE", path, alice1.AccessToken, nil)
		if res.Status != 401 || res.Str("session") == "" || !strings.Contains(string(res.Raw), "m.login.password") {
			t.Fatalf("delete without auth: %d %s", res.Status, res.Raw)
		}
		session := res.Str("session")
		res = s.Do(t, "DELETE", path, alice1.AccessToken, map[string]any{"auth": passwordAuth("alice", "wrong", session)})
		expect(t, res, 401, "M_FORBIDDEN")
		if res.Str("session") != session {
			t.Fatalf("failed stage must keep the session: %s", res.Raw)
		}
		// Bob's password does not authorise deleting alice's device.
		expect(t, s.Do(t, "DELETE", path, alice1.AccessToken, map[string]any{"auth": passwordAuth("bob", "bob password", session)}), 401, "M_FORBIDDEN")
		expect(t, s.Do(t, "DELETE", path, alice1.AccessToken, map[string]any{"auth": passwordAuth("alice", "alice password", session)}), 200, "")
		expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", alice2.AccessToken, nil), 401, "M_UNKNOWN_TOKEN")
		expect(t, s.Do(t, "GET", path, alice1.AccessToken, nil), 404, "M_NOT_FOUND")

		// A UIA session cannot be replayed once it authorised its operation, nor used for another.
		alice3 := s.Login(t, "alice", "alice password")
		expect(t, s.Do(t, "DELETE", "/_matrix/client/v3/devices/"+alice3.DeviceID, alice1.AccessToken,
			map[string]any{"auth": map[string]any{"session": session}}), 400, "M_NOT_FOUND")
		res = s.Do(t, "DELETE", "/_matrix/client/v3/devices/"+alice3.DeviceID, alice1.AccessToken, nil)
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/delete_devices", alice1.AccessToken,
			map[string]any{"devices": []string{alice3.DeviceID}, "auth": map[string]any{"session": res.Str("session")}}), 403, "M_FORBIDDEN")

		// delete_devices with UIA given straight away (no session yet).
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/delete_devices", bob1.AccessToken, map[string]any{
			"devices": []string{bob2.DeviceID, "UNKNOWN"}, "auth": passwordAuth("bob", "bob password", "")}), 200, "")
		expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", bob2.AccessToken, nil), 401, "M_UNKNOWN_TOKEN")

		// Logout: the token dies with its device, soft_logout false.
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/logout", alice3.AccessToken, nil), 200, "")
		res = s.Do(t, "GET", "/_matrix/client/v3/account/whoami", alice3.AccessToken, nil)
		expect(t, res, 401, "M_UNKNOWN_TOKEN")
		if res.JSON["soft_logout"] != false {
			t.Fatalf("logout must be a hard logout: %s", res.Raw)
		}
		res = s.Do(t, "GET", "/_matrix/client/v3/devices", alice1.AccessToken, nil)
		if devs, _ := res.JSON["devices"].([]any); len(devs) != 1 {
			t.Fatalf("after logout alice has %d devices: %s", len(devs), res.Raw)
		}

		// logout/all kills every device of the user and no one else's.
		alice4 := s.Login(t, "alice", "alice password")
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/logout/all", alice4.AccessToken, nil), 200, "")
		for _, tok := range []string{alice1.AccessToken, alice4.AccessToken} {
			expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", tok, nil), 401, "M_UNKNOWN_TOKEN")
		}
		expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", bob1.AccessToken, nil), 200, "")
	})
}

// TestPasswordChangeAndDeactivate covers POST /account/password and /account/deactivate.
func TestPasswordChangeAndDeactivate(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		a1 := s.Register(t, "alice", "old password")
		a2 := s.Login(t, "alice", "old password")
		body := map[string]any{"new_password": "new password"}
		res := s.Do(t, "POST", "/_matrix/client/v3/account/password", a1.AccessToken, body)
		expect(t, res, 401, "")
		body["auth"] = passwordAuth("alice", "old password", res.Str("session"))
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/account/password", a1.AccessToken, body), 200, "")
		// Other devices are logged out by default; this one stays.
		expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", a2.AccessToken, nil), 401, "M_UNKNOWN_TOKEN")
		expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", a1.AccessToken, nil), 200, "")
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "old password"}), 403, "M_FORBIDDEN")
		a3 := s.Login(t, "alice", "new password")

		// logout_devices false keeps the others.
		body = map[string]any{"new_password": "third password", "logout_devices": false, "auth": passwordAuth("alice", "new password", "")}
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/account/password", a1.AccessToken, body), 200, "")
		expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", a3.AccessToken, nil), 200, "")

		// Deactivation: tokens die, login is refused, the name stays taken.
		res = s.Do(t, "POST", "/_matrix/client/v3/account/deactivate", a1.AccessToken, map[string]any{"auth": passwordAuth("alice", "third password", "")})
		if res.Status != 200 || res.Str("id_server_unbind_result") != "no-support" {
			t.Fatalf("deactivate: %d %s", res.Status, res.Raw)
		}
		for _, tok := range []string{a1.AccessToken, a3.AccessToken} {
			expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", tok, nil), 401, "M_UNKNOWN_TOKEN")
		}
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "third password"}), 403, "M_USER_DEACTIVATED")
		expect(t, s.Do(t, "GET", "/_matrix/client/v3/register/available?username=alice", "", nil), 400, "M_USER_IN_USE")
	})
}

// TestRefreshTokens follows the spec's refresh semantics over HTTP: an expiring access token with a
// refresh token; the old refresh token stays usable until the new access token is used.
func TestRefreshTokens(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		s.Register(t, "alice", "alice password")
		res := s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice",
			"password": "alice password", "refresh_token": true})
		if res.Status != 200 || res.Str("refresh_token") == "" || res.JSON["expires_in_ms"] != float64(5*60*1000) {
			t.Fatalf("login with refresh: %d %s", res.Status, res.Raw)
		}
		access1, refresh1, device := res.Str("access_token"), res.Str("refresh_token"), res.Str("device_id")
		expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", access1, nil), 200, "")

		res = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": refresh1})
		if res.Status != 200 || res.Str("access_token") == "" || res.Str("refresh_token") == "" {
			t.Fatalf("refresh: %d %s", res.Status, res.Raw)
		}
		access2, refresh2 := res.Str("access_token"), res.Str("refresh_token")
		// The client may have lost that response: refresh1 still works until access2 is used.
		res = s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": refresh1})
		expect(t, res, 200, "")
		access2, refresh2 = res.Str("access_token"), res.Str("refresh_token")
		res = s.Do(t, "GET", "/_matrix/client/v3/account/whoami", access2, nil)
		if res.Status != 200 || res.Str("device_id") != device {
			t.Fatalf("refreshed token is bound to the device: %d %s", res.Status, res.Raw)
		}
		// Now the old pair is revoked.
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": refresh1}), 401, "M_UNKNOWN_TOKEN")
		expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", access1, nil), 401, "M_UNKNOWN_TOKEN")
		expect(t, s.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": refresh2}), 200, "")
	})
}

// TestExpiredTokenSoftLogout checks that an expired access token gets soft_logout true.
func TestExpiredTokenSoftLogout(t *testing.T) {
	s := servertest.Start(t, "sqlite", func(c *config.Config) { c.Auth.RefreshableAccessTokenLifetime = config.Duration(1e9) })
	s.Register(t, "alice", "alice password")
	res := s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice",
		"password": "alice password", "refresh_token": true})
	token := res.Str("access_token")
	now := s.Accounts.Now
	s.Accounts.Now = func() time.Time { return now().Add(2e9) }
	defer func() { s.Accounts.Now = now }()
	res = s.Do(t, "GET", "/_matrix/client/v3/account/whoami", token, nil)
	expect(t, res, 401, "M_UNKNOWN_TOKEN")
	if res.JSON["soft_logout"] != true {
		t.Fatalf("expired token must be a soft logout: %s", res.Raw)
	}
}

// TestLoginWithDeviceID checks that logging in again with a device_id reuses the device and
// invalidates its previous tokens.
func TestLoginWithDeviceID(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	a := s.Register(t, "alice", "alice password")
	res := s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice",
		"password": "alice password", "device_id": a.DeviceID, "initial_device_display_name": "Laptop"})
	if res.Status != 200 || res.Str("device_id") != a.DeviceID {
		t.Fatalf("login with device_id: %d %s", res.Status, res.Raw)
	}
	expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", a.AccessToken, nil), 401, "M_UNKNOWN_TOKEN")
	res = s.Do(t, "GET", "/_matrix/client/v3/devices", res.Str("access_token"), nil)
	if devs, _ := res.JSON["devices"].([]any); len(devs) != 1 || devs[0].(map[string]any)["display_name"] != "Laptop" {
		t.Fatalf("devices: %s", res.Raw)
	}
}

// TestDiscovery covers /versions, .well-known, /login flows and /capabilities.
// TestWellKnownSupport: the configured contacts (user IDs as matrix_id, addresses as
// email_address) with their roles, and the page; no token needed.
func TestWellKnownSupport(t *testing.T) {
	s := servertest.Start(t, "sqlite", func(c *config.Config) {
		c.WellKnown.SupportAdmins = []string{"@admin:example.org", "admin@example.org"}
		c.WellKnown.SupportSecurity = []string{"security@example.org"}
		c.WellKnown.SupportPage = "https://example.org/help"
	})
	requireJSON(t, s.Do(t, "GET", "/.well-known/matrix/support", "", nil), `{"contacts":[
		{"matrix_id":"@admin:example.org","role":"m.role.admin"},
		{"email_address":"admin@example.org","role":"m.role.admin"},
		{"email_address":"security@example.org","role":"m.role.security"}],
		"support_page":"https://example.org/help"}`)
	page := servertest.Start(t, "sqlite", func(c *config.Config) { c.WellKnown.SupportPage = "https://example.org/help" })
	requireJSON(t, page.Do(t, "GET", "/.well-known/matrix/support", "", nil), `{"support_page":"https://example.org/help"}`)
}

func TestDiscovery(t *testing.T) {
	s := servertest.Start(t, "sqlite", func(c *config.Config) { c.PublicBaseURL = "https://matrix.example.org/" })
	res := s.Do(t, "GET", "/_matrix/client/versions", "", nil)
	if vs, _ := res.JSON["versions"].([]any); res.Status != 200 || len(vs) == 0 {
		t.Fatalf("versions: %s", res.Raw)
	}
	res = s.Do(t, "GET", "/.well-known/matrix/client", "", nil)
	if hs, _ := res.JSON["m.homeserver"].(map[string]any); hs["base_url"] != "https://matrix.example.org" {
		t.Fatalf("well-known client: %s", res.Raw)
	}
	res = s.Do(t, "GET", "/.well-known/matrix/server", "", nil)
	if res.Str("m.server") != "matrix.example.org:443" {
		t.Fatalf("well-known server: %s", res.Raw)
	}
	// No support contacts configured: 404.
	expect(t, s.Do(t, "GET", "/.well-known/matrix/support", "", nil), 404, "M_NOT_FOUND")
	res = s.Do(t, "GET", "/_matrix/client/v3/login", "", nil)
	if !strings.Contains(string(res.Raw), `"m.login.password"`) {
		t.Fatalf("login flows: %s", res.Raw)
	}
	a := s.Register(t, "alice", "alice password")
	res = s.Do(t, "GET", "/_matrix/client/v3/capabilities", a.AccessToken, nil)
	caps, _ := res.JSON["capabilities"].(map[string]any)
	rv, _ := caps["m.room_versions"].(map[string]any)
	if cp, _ := caps["m.change_password"].(map[string]any); cp["enabled"] != true || rv["default"] != "11" {
		t.Fatalf("capabilities: %s", res.Raw)
	}
	expect(t, s.Do(t, "GET", "/_matrix/client/v3/capabilities", "", nil), 401, "M_MISSING_TOKEN")
	// r0 paths serve older clients.
	expect(t, s.Do(t, "GET", "/_matrix/client/r0/account/whoami", a.AccessToken, nil), 200, "")
	if res.Header.Get("X-Request-Id") == "" {
		t.Fatal("no X-Request-Id header")
	}
}

// TestMetrics checks /metrics on the client listener, and on its own listener when configured.
func TestMetrics(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	s.Do(t, "GET", "/_matrix/client/versions", "", nil)
	res := s.Do(t, "GET", "/metrics", "", nil)
	if res.Status != 200 || !strings.Contains(string(res.Raw), `homeserver_http_requests_total{method="GET",route="/_matrix/client/versions",status="200"}`) {
		t.Fatalf("metrics: %d %.500s", res.Status, res.Raw)
	}
	s2 := servertest.Start(t, "sqlite", func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" })
	expect(t, s2.Do(t, "GET", "/metrics", "", nil), 404, "M_UNRECOGNIZED")
	resp, err := http.Get("http://" + s2.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "go_goroutines") {
		t.Fatalf("separate metrics listener: %d", resp.StatusCode)
	}
}

// TestUIASessionSingleUse checks that a UIA session that authorised an operation cannot authorise
// it again.
func TestUIASessionSingleUse(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	a := s.Register(t, "alice", "alice password")
	d1 := s.Login(t, "alice", "alice password")
	d2 := s.Login(t, "alice", "alice password")
	res := s.Do(t, "POST", "/_matrix/client/v3/delete_devices", a.AccessToken, map[string]any{"devices": []string{d1.DeviceID}})
	session := res.Str("session")
	expect(t, s.Do(t, "POST", "/_matrix/client/v3/delete_devices", a.AccessToken, map[string]any{
		"devices": []string{d1.DeviceID}, "auth": passwordAuth("alice", "alice password", session)}), 200, "")
	res = s.Do(t, "POST", "/_matrix/client/v3/delete_devices", a.AccessToken, map[string]any{
		"devices": []string{d2.DeviceID}, "auth": map[string]any{"session": session}})
	if res.Status == 200 {
		t.Fatal("a finished UIA session deleted another device")
	}
	expect(t, s.Do(t, "GET", "/_matrix/client/v3/account/whoami", d2.AccessToken, nil), 200, "")
}

package clientapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// pendingToDevice reads (without acknowledging) what waits for a device.
func pendingToDevice(t *testing.T, s *servertest.Server, userID, deviceID string) []map[string]any {
	t.Helper()
	ctx := context.Background()
	pos, err := s.ToDevice.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := s.ToDevice.Pending(ctx, userID, deviceID, 0, pos, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]map[string]any, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestSendToDevice(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		bob := s.Register(t, "bob", "battery staple")
		bob2 := s.Login(t, "bob", "battery staple")
		const v3 = "/_matrix/client/v3"
		msgs := func(device string, content any) map[string]any {
			return map[string]any{"messages": map[string]any{bob.UserID: map[string]any{device: content}}}
		}

		// A request and two retries with the same txn ID deliver once, to every device ("*").
		for range 3 {
			requireJSON(t, s.Do(t, "PUT", v3+"/sendToDevice/m.test/txn1", alice.AccessToken, msgs("*", map[string]any{"n": 1})), `{}`)
		}
		for _, dev := range []string{bob.DeviceID, bob2.DeviceID} {
			got := pendingToDevice(t, s, bob.UserID, dev)
			if len(got) != 1 || got[0]["sender"] != alice.UserID || got[0]["type"] != "m.test" || got[0]["content"].(map[string]any)["n"] != 1.0 {
				t.Fatalf("%s got %v", dev, got)
			}
		}

		// Over the WebSocket: the same txn ID is the same transaction; a new one delivers.
		w := mustDialWS(t, s, alice.AccessToken, "")
		for _, txn := range []string{"txn1", "txn2"} {
			w.send(t, map[string]any{"type": "to_device", "id": txn, "event_type": "m.test", "txn_id": txn,
				"messages": msgs(bob2.DeviceID, map[string]any{"n": 2})["messages"]})
			if r := w.reply(t, txn); r.Type != "ack" || string(r.Body) != `{}` {
				t.Fatalf("ws %s: %+v", txn, r)
			}
		}
		if n := len(pendingToDevice(t, s, bob.UserID, bob2.DeviceID)); n != 2 {
			t.Fatalf("bob2 holds %d messages, want 2", n)
		}
		if n := len(pendingToDevice(t, s, bob.UserID, bob.DeviceID)); n != 1 {
			t.Fatalf("bob holds %d messages, want 1", n)
		}
		w.send(t, map[string]any{"type": "to_device", "id": "bad", "event_type": "m.test", "txn_id": "t",
			"messages": map[string]any{"nobody": map[string]any{"X": map[string]any{}}}})
		if r := w.reply(t, "bad"); r.Type != "error" || r.Errcode != "M_INVALID_PARAM" {
			t.Fatalf("ws bad user: %+v", r)
		}

		for _, c := range []struct {
			name, path, token string
			body              any
			status            int
			errcode           string
		}{
			{"no messages", "/sendToDevice/m.test/e1", alice.AccessToken, `{}`, 400, "M_MISSING_PARAM"},
			{"not JSON", "/sendToDevice/m.test/e2", alice.AccessToken, `{"messages":`, 400, "M_NOT_JSON"},
			{"messages not an object", "/sendToDevice/m.test/e3", alice.AccessToken, `{"messages":[]}`, 400, "M_BAD_JSON"},
			{"content not an object", "/sendToDevice/m.test/e4", alice.AccessToken, msgs("*", []int{1}), 400, "M_BAD_JSON"},
			{"bad user ID", "/sendToDevice/m.test/e5", alice.AccessToken, `{"messages":{"bob":{"*":{}}}}`, 400, "M_INVALID_PARAM"},
			{"no token", "/sendToDevice/m.test/e6", "", msgs("*", map[string]any{}), 401, "M_MISSING_TOKEN"},
		} {
			res := s.Do(t, "PUT", v3+c.path, c.token, c.body)
			if res.Status != c.status || res.Errcode() != c.errcode {
				t.Errorf("%s: got %d %s, want %d %s", c.name, res.Status, res.Raw, c.status, c.errcode)
			}
		}
		requireJSON(t, s.Do(t, "PUT", "/_matrix/client/r0/sendToDevice/m.test/r0", alice.AccessToken, msgs(bob.DeviceID, map[string]any{})), `{}`)
		if n := len(pendingToDevice(t, s, bob.UserID, bob.DeviceID)); n != 2 {
			t.Fatalf("bob holds %d messages after r0 send, want 2", n)
		}

		// Logging out deletes the device, and its inbox with it.
		if res := s.Do(t, "POST", v3+"/logout", bob2.AccessToken, `{}`); res.Status != http.StatusOK {
			t.Fatalf("logout: %d %s", res.Status, res.Raw)
		}
		if n, err := s.Store.Read().CountToDevice(context.Background(), "bob", bob2.DeviceID); err != nil || n != 0 {
			t.Fatalf("logged-out device holds %d messages (%v)", n, err)
		}
	})
}

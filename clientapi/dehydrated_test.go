package clientapi_test

import (
	"context"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

func TestDehydratedDevice(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "correct horse")
		bob := s.Register(t, "bob", "battery staple")
		tok := alice.AccessToken
		const prefix = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
		const v3 = "/_matrix/client/v3"
		expect := func(name string, res servertest.Response, status int, errcode string) servertest.Response {
			t.Helper()
			if res.Status != status || res.Errcode() != errcode {
				t.Fatalf("%s: got %d %s, want %d %s", name, res.Status, res.Raw, status, errcode)
			}
			return res
		}
		devices := func() []string {
			t.Helper()
			res := expect("devices", s.Do(t, "GET", v3+"/devices", tok, nil), 200, "")
			var ids []string
			for _, d := range res.JSON["devices"].([]any) {
				ids = append(ids, d.(map[string]any)["device_id"].(string))
			}
			slices.Sort(ids)
			return ids
		}
		sendTo := func(device, txn string) {
			t.Helper()
			requireJSON(t, s.Do(t, "PUT", v3+"/sendToDevice/m.room.encrypted/"+txn, bob.AccessToken,
				map[string]any{"messages": map[string]any{alice.UserID: map[string]any{device: map[string]any{"txn": txn}}}}), `{}`)
		}
		put := func(id string) servertest.Response {
			return s.Do(t, "PUT", prefix, tok, map[string]any{"device_id": id, "initial_device_display_name": "Dehydrated",
				"device_data": map[string]any{"algorithm": "org.matrix.msc3814.v2", "device_pickle": "pickle-" + id, "nonce": "n"}})
		}

		expect("none yet", s.Do(t, "GET", prefix, tok, nil), 404, "M_NOT_FOUND")
		expect("delete none", s.Do(t, "DELETE", prefix, tok, nil), 404, "M_NOT_FOUND")
		requireJSON(t, put("DEHYD1"), `{"device_id":"DEHYD1"}`)
		requireJSON(t, s.Do(t, "GET", prefix, tok, nil),
			`{"device_id":"DEHYD1","device_data":{"algorithm":"org.matrix.msc3814.v2","device_pickle":"pickle-DEHYD1","nonce":"n"}}`)
		if got := devices(); !slices.Equal(got, []string{"DEHYD1", alice.DeviceID}) && !slices.Equal(got, []string{alice.DeviceID, "DEHYD1"}) {
			t.Fatalf("devices %v", got)
		}
		expect("bob has none", s.Do(t, "GET", prefix, bob.AccessToken, nil), 404, "M_NOT_FOUND")

		// To-device messages reach it like any device ("*" too), and come out of /events in
		// batches; a batch is deleted once the client asks with its next_batch.
		sendTo("DEHYD1", "t1")
		sendTo("DEHYD1", "t2")
		sendTo("*", "t3")
		events := prefix + "/DEHYD1/events"
		first := expect("events", s.Do(t, "POST", events, tok, `{}`), 200, "")
		txns := func(res servertest.Response) []string {
			var out []string
			for _, e := range res.JSON["events"].([]any) {
				ev := e.(map[string]any)
				if ev["sender"] != bob.UserID || ev["type"] != "m.room.encrypted" {
					t.Fatalf("event %v", ev)
				}
				out = append(out, ev["content"].(map[string]any)["txn"].(string))
			}
			return out
		}
		if got := txns(first); !slices.Equal(got, []string{"t1", "t2", "t3"}) || first.Str("next_batch") == "" {
			t.Fatalf("first batch %s", first.Raw)
		}
		// Asking again from the start (the client lost the answer) gives the same.
		if again := expect("again", s.Do(t, "POST", events, tok, nil), 200, ""); !slices.Equal(txns(again), []string{"t1", "t2", "t3"}) {
			t.Fatalf("again: %s", again.Raw)
		}
		sendTo("DEHYD1", "t4")
		second := expect("next", s.Do(t, "POST", events, tok, map[string]any{"next_batch": first.Str("next_batch")}), 200, "")
		if !slices.Equal(txns(second), []string{"t4"}) || second.Str("next_batch") == "" {
			t.Fatalf("second batch %s", second.Raw)
		}
		// The GET form of the MSC's text, with ?from=.
		last := expect("last", s.Do(t, "GET", events+"?from="+second.Str("next_batch"), tok, nil), 200, "")
		if _, ok := last.JSON["next_batch"]; ok || len(last.JSON["events"].([]any)) != 0 {
			t.Fatalf("last batch %s, want no events and no next_batch", last.Raw)
		}
		if n, _ := s.Store.Read().CountToDevice(context.Background(), "alice", "DEHYD1"); n != 0 {
			t.Fatalf("%d messages left after the last batch", n)
		}
		expect("someone else's device", s.Do(t, "POST", prefix+"/"+alice.DeviceID+"/events", tok, `{}`), 403, "M_FORBIDDEN")
		expect("bob reads alice's", s.Do(t, "POST", events, bob.AccessToken, `{}`), 403, "M_FORBIDDEN")
		expect("bad next_batch", s.Do(t, "POST", events, tok, `{"next_batch":"x"}`), 400, "M_INVALID_PARAM")

		// A new dehydrated device replaces the old one, device, inbox and all.
		sendTo("DEHYD1", "t5")
		requireJSON(t, put("DEHYD2"), `{"device_id":"DEHYD2"}`)
		if s.Do(t, "GET", prefix, tok, nil).Str("device_id") != "DEHYD2" {
			t.Fatal("not replaced")
		}
		if got := devices(); slices.Contains(got, "DEHYD1") || !slices.Contains(got, "DEHYD2") {
			t.Fatalf("devices after replacement %v", got)
		}
		if n, _ := s.Store.Read().CountToDevice(context.Background(), "alice", "DEHYD1"); n != 0 {
			t.Fatalf("the replaced device still holds %d messages", n)
		}
		expect("events of the replaced one", s.Do(t, "POST", events, tok, `{}`), 403, "M_FORBIDDEN")
		expect("a logged-in device's ID", put(alice.DeviceID), 400, "M_INVALID_PARAM")
		expect("no device_data", s.Do(t, "PUT", prefix, tok, `{"device_id":"X"}`), 400, "M_MISSING_PARAM")
		expect("no device_id", s.Do(t, "PUT", prefix, tok, `{"device_data":{"algorithm":"a"}}`), 400, "M_MISSING_PARAM")
		expect("device_data not an object", s.Do(t, "PUT", prefix, tok, `{"device_id":"X","device_data":[]}`), 400, "M_BAD_JSON")
		expect("no token", s.Do(t, "GET", prefix, "", nil), 401, "M_MISSING_TOKEN")

		requireJSON(t, s.Do(t, "DELETE", prefix, tok, nil), `{"device_id":"DEHYD2"}`)
		expect("deleted", s.Do(t, "GET", prefix, tok, nil), 404, "M_NOT_FOUND")
		if got := devices(); !slices.Equal(got, []string{alice.DeviceID}) {
			t.Fatalf("devices after delete %v", got)
		}

		// Keys that /keys/upload would refuse: no dehydrated device is left behind.
		res := s.Do(t, "PUT", prefix, tok, map[string]any{"device_id": "DEHYDBAD", "device_data": map[string]any{"algorithm": "a"},
			"device_keys": map[string]any{"user_id": bob.UserID, "device_id": "DEHYDBAD"}})
		if res.Status != 400 {
			t.Fatalf("bad device_keys: %d %s", res.Status, res.Raw)
		}
		expect("after refused keys", s.Do(t, "GET", prefix, tok, nil), 404, "M_NOT_FOUND")
		if got := devices(); slices.Contains(got, "DEHYDBAD") {
			t.Fatalf("devices after refused keys %v", got)
		}

		// Deleting it as a device (here: logging out everywhere) forgets it as dehydrated device too.
		requireJSON(t, put("DEHYD3"), `{"device_id":"DEHYD3"}`)
		requireJSON(t, s.Do(t, "POST", v3+"/logout/all", tok, `{}`), `{}`)
		again := s.Login(t, "alice", "correct horse")
		expect("after logout/all", s.Do(t, "GET", prefix, again.AccessToken, nil), 404, "M_NOT_FOUND")

		res = expect("versions", s.Do(t, "GET", "/_matrix/client/versions", "", nil), 200, "")
		if res.JSON["unstable_features"].(map[string]any)["org.matrix.msc3814"] != true {
			t.Fatalf("org.matrix.msc3814 not advertised: %s", res.Raw)
		}
	})
}

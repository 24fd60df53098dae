package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// syncResult is the part of a /sync response the E2EE tests read.
type syncResult struct {
	NextBatch string `json:"next_batch"`
	ToDevice  *struct {
		Events []struct {
			Sender  string         `json:"sender"`
			Type    string         `json:"type"`
			Content map[string]any `json:"content"`
		} `json:"events"`
	} `json:"to_device"`
	DeviceLists *struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OTKCount map[string]int `json:"device_one_time_keys_count"`
	Fallback []string       `json:"device_unused_fallback_key_types"`
}

func syncAs(t *testing.T, s *servertest.Server, u servertest.User, since string, timeoutMS int) syncResult {
	t.Helper()
	q := fmt.Sprintf("?timeout=%d", timeoutMS)
	if since != "" {
		q += "&since=" + since
	}
	res := s.Do(t, "GET", csAPI+"/sync"+q, u.AccessToken, nil)
	want(t, "sync", res, http.StatusOK, "")
	var r syncResult
	if err := json.Unmarshal([]byte(res.Raw), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func toDeviceBodies(r syncResult) []string {
	var out []string
	if r.ToDevice != nil {
		for _, e := range r.ToDevice.Events {
			out = append(out, fmt.Sprint(e.Content["body"]))
		}
	}
	return out
}

// TestSyncToDevice: to-device messages reach the device's sync in order, come again while the
// device has not synced past them (a lost response loses nothing), and are gone once it has; a
// long poll wakes for one.
func TestSyncToDevice(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password-alice")
		bob := s.Register(t, "bob", "password-bob")
		send := func(txn, body string) {
			t.Helper()
			res := s.Do(t, "PUT", csAPI+"/sendToDevice/m.test/"+txn, alice.AccessToken, map[string]any{
				"messages": map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"body": body}}}})
			want(t, "sendToDevice", res, http.StatusOK, "")
		}
		first := syncAs(t, s, bob, "", 0)
		if first.ToDevice != nil && len(first.ToDevice.Events) > 0 {
			t.Fatalf("to-device messages before any was sent: %+v", first.ToDevice)
		}
		send("t1", "one")
		send("t2", "two")
		got := syncAs(t, s, bob, first.NextBatch, 0)
		if b := toDeviceBodies(got); !slices.Equal(b, []string{"one", "two"}) {
			t.Fatalf("to_device = %v, want [one two]", b)
		}
		if e := got.ToDevice.Events[0]; e.Sender != alice.UserID || e.Type != "m.test" {
			t.Fatalf("to-device event = %+v", e)
		}
		// The response was "lost": the same token gets the same messages.
		again := syncAs(t, s, bob, first.NextBatch, 0)
		if b := toDeviceBodies(again); !slices.Equal(b, []string{"one", "two"}) {
			t.Fatalf("repeat with the old token: to_device = %v", b)
		}
		// Syncing past them acknowledges them.
		next := syncAs(t, s, bob, again.NextBatch, 0)
		if b := toDeviceBodies(next); len(b) != 0 {
			t.Fatalf("acknowledged messages delivered again: %v", b)
		}
		stale := syncAs(t, s, bob, first.NextBatch, 0)
		if b := toDeviceBodies(stale); len(b) != 0 {
			t.Fatalf("acknowledged messages still stored: %v", b)
		}

		// A long poll wakes for a to-device message.
		done := make(chan syncResult, 1)
		go func() { done <- syncAs(t, s, bob, next.NextBatch, 20000) }()
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		send("t3", "three")
		select {
		case r := <-done:
			if b := toDeviceBodies(r); !slices.Equal(b, []string{"three"}) {
				t.Fatalf("woken sync: to_device = %v", b)
			}
			if waited := time.Since(start); waited > 10*time.Second {
				t.Fatalf("long poll returned after %v", waited)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("long poll not woken by a to-device message")
		}
	})
}

// TestSyncKeyCountsAndDeviceLists: sync reports the device's one-time key counts and unused
// fallback key types, and to a room-mate the users whose devices changed or who joined or left.
func TestSyncKeyCountsAndDeviceLists(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := withKeys(s.Register(t, "alice", "password-alice"))
		bob := s.Register(t, "bob", "password-bob")
		carol := s.Register(t, "carol", "password-carol")

		r := syncAs(t, s, alice.User, "", 0)
		if r.OTKCount["signed_curve25519"] != 0 || r.Fallback == nil || len(r.Fallback) != 0 {
			t.Fatalf("before upload: counts %v, fallback %v (want signed_curve25519: 0 and [])", r.OTKCount, r.Fallback)
		}
		alice.mustUpload(t, s, map[string]any{"device_keys": alice.DeviceKeys(t), "one_time_keys": alice.otks(t, "a", 5),
			"fallback_keys": alice.fallback(t, "f")})
		r = syncAs(t, s, alice.User, r.NextBatch, 0)
		if r.OTKCount["signed_curve25519"] != 5 || !slices.Equal(r.Fallback, []string{"signed_curve25519"}) {
			t.Fatalf("after upload: counts %v, fallback %v", r.OTKCount, r.Fallback)
		}
		keysClaim(t, s, bob, map[string]map[string]string{alice.UserID: {alice.DeviceID: "signed_curve25519"}})
		r = syncAs(t, s, alice.User, r.NextBatch, 0)
		if r.OTKCount["signed_curve25519"] != 4 {
			t.Fatalf("after a claim: counts %v", r.OTKCount)
		}

		roomID := createRoom(t, s, alice.User, map[string]any{"preset": "public_chat"})
		want(t, "bob joins", s.Do(t, "POST", csAPI+"/join/"+roomID, bob.AccessToken, map[string]any{}), http.StatusOK, "")
		b := syncAs(t, s, bob, "", 0)

		// alice logs in a new device and uploads its keys: bob's long poll wakes with alice changed.
		done := make(chan syncResult, 1)
		go func() { done <- syncAs(t, s, bob, b.NextBatch, 20000) }()
		time.Sleep(200 * time.Millisecond)
		alice2 := withKeys(s.Login(t, "alice", "password-alice"))
		alice2.mustUpload(t, s, map[string]any{"device_keys": alice2.DeviceKeys(t)})
		var woke syncResult
		select {
		case woke = <-done:
		case <-time.After(15 * time.Second):
			t.Fatal("bob's long poll not woken by alice's new device")
		}
		b = woke
		for b.DeviceLists == nil || !slices.Contains(b.DeviceLists.Changed, alice.UserID) {
			// The wake-up may have come from the login, before the key upload: sync once more.
			next := syncAs(t, s, bob, b.NextBatch, 5000)
			if next.NextBatch == b.NextBatch {
				t.Fatalf("device_lists never showed alice changed: %+v", b.DeviceLists)
			}
			b = next
		}

		// carol joins and leaves: changed, then left.
		want(t, "carol joins", s.Do(t, "POST", csAPI+"/join/"+roomID, carol.AccessToken, map[string]any{}), http.StatusOK, "")
		b = syncAs(t, s, bob, b.NextBatch, 0)
		if b.DeviceLists == nil || !slices.Contains(b.DeviceLists.Changed, carol.UserID) {
			t.Fatalf("after carol joined: device_lists %+v", b.DeviceLists)
		}
		want(t, "carol leaves", s.Do(t, "POST", csAPI+"/rooms/"+roomID+"/leave", carol.AccessToken, map[string]any{}), http.StatusOK, "")
		b = syncAs(t, s, bob, b.NextBatch, 0)
		if b.DeviceLists == nil || !slices.Contains(b.DeviceLists.Left, carol.UserID) {
			t.Fatalf("after carol left: device_lists %+v", b.DeviceLists)
		}
		// Nothing changed since: no device_lists section.
		b = syncAs(t, s, bob, b.NextBatch, 0)
		if b.DeviceLists != nil {
			t.Fatalf("device_lists with nothing changed: %+v", b.DeviceLists)
		}
	})
}

// TestSyncToDeviceOverSSE: a stream delivers to-device messages but does not delete them on its
// own: only a token the client presents (a resume, a long poll) acknowledges them.
func TestSyncToDeviceOverSSE(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "password-alice")
		bob := s.Register(t, "bob", "password-bob")
		start := syncAs(t, s, bob, "", 0)
		st := openSSE(t, s, bob.AccessToken, "since="+start.NextBatch, nil)
		for i, body := range []string{"one", "two"} {
			res := s.Do(t, "PUT", csAPI+fmt.Sprintf("/sendToDevice/m.test/sse%d", i), alice.AccessToken, map[string]any{
				"messages": map[string]any{bob.UserID: map[string]any{bob.DeviceID: map[string]any{"body": body}}}})
			want(t, "sendToDevice", res, http.StatusOK, "")
		}
		var got []string
		var last string
		for len(got) < 2 {
			it := st.nextEvent(t)
			var r syncResult
			if err := json.Unmarshal([]byte(it.Data), &r); err != nil {
				t.Fatal(err)
			}
			got = append(got, toDeviceBodies(r)...)
			last = it.ID
		}
		if !slices.Equal(got, []string{"one", "two"}) {
			t.Fatalf("SSE to_device = %v", got)
		}
		// The stream moved on, the client did not confirm: the messages are still there.
		st.close()
		if b := toDeviceBodies(syncAs(t, s, bob, start.NextBatch, 0)); !slices.Equal(b, []string{"one", "two"}) {
			t.Fatalf("after the stream: to_device from the old token = %v", b)
		}
		// Resuming from the last event received confirms them.
		openSSE(t, s, bob.AccessToken, "", map[string]string{"Last-Event-ID": last})
		checkFor(t, 10*time.Second, func() bool { return len(toDeviceBodies(syncAs(t, s, bob, start.NextBatch, 0))) == 0 })
	})
}

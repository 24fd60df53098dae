package e2ee_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// Service-level tests of key management on both backends; the HTTP side is in
// clientapi/keys_test.go.

const ktServer = "example.org"

// ktWaker records whom the service woke.
type ktWaker struct {
	mu             sync.Mutex
	woken, sharing []string
}

func (w *ktWaker) Wake(users ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.woken = append(w.woken, users...)
}

func (w *ktWaker) WakeSharing(users ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sharing = append(w.sharing, users...)
}

func (w *ktWaker) takeSharing() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.sharing
	w.sharing = nil
	return out
}

// ktDevice is a device with its ed25519 signing key.
type ktDevice struct {
	userID, localpart, deviceID string
	priv                        ed25519.PrivateKey
	pub                         string
}

func ktNewDevice(t testing.TB, s *storage.Store, localpart, deviceID string) ktDevice {
	t.Helper()
	ctx := context.Background()
	err := s.Write(ctx, func(c storage.Conn) error {
		if err := c.CreateAccount(ctx, storage.Account{Localpart: localpart, CreatedTS: 1}); err != nil && !errors.Is(err, storage.ErrConflict) {
			return err
		}
		return c.UpsertDevice(ctx, storage.Device{Localpart: localpart, DeviceID: deviceID, CreatedTS: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return ktDevice{userID: spec.NewUserID(localpart, ktServer).String(), localpart: localpart, deviceID: deviceID,
		priv: priv, pub: base64.RawStdEncoding.EncodeToString(pub)}
}

func (d ktDevice) sign(t testing.TB, v any) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := event.SignJSON(raw, d.userID, "ed25519:"+d.deviceID, d.priv)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func (d ktDevice) deviceKeys(t testing.TB) json.RawMessage {
	return d.sign(t, map[string]any{"user_id": d.userID, "device_id": d.deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + d.deviceID: d.pub, "curve25519:" + d.deviceID: "curve" + d.deviceID}})
}

// otks returns n signed one-time keys with IDs prefix0..prefix(n-1).
func (d ktDevice) otks(t testing.TB, prefix string, n int) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for i := range n {
		out[fmt.Sprintf("signed_curve25519:%s%d", prefix, i)] = d.sign(t, map[string]any{"key": fmt.Sprintf("otk-%s%d", prefix, i)})
	}
	return out
}

func ktService(s *storage.Store, w e2ee.Waker, opts e2ee.Options) *e2ee.Service {
	opts.ServerName = ktServer
	return e2ee.New(s, w, opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	var se *spec.Error
	if !errors.As(err, &se) || se.Code != code {
		t.Fatalf("got %v, want %s", err, code)
	}
}

// TestOneTimeKeyCap: an upload that would take a device over its cap of stored one-time keys is
// refused whole with M_TOO_LARGE; claims make room again.
func TestOneTimeKeyCap(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc := ktService(s, nil, e2ee.Options{MaxOneTimeKeysPerDevice: 5})
		d := ktNewDevice(t, s, "alice", "DEV")
		if _, err := svc.UploadKeys(ctx, d.userID, d.deviceID, e2ee.UploadRequest{DeviceKeys: d.deviceKeys(t), OneTimeKeys: d.otks(t, "a", 4)}); err != nil {
			t.Fatal(err)
		}
		_, err := svc.UploadKeys(ctx, d.userID, d.deviceID, e2ee.UploadRequest{OneTimeKeys: d.otks(t, "b", 2)})
		wantCode(t, err, "M_TOO_LARGE")
		counts, _, err := svc.KeyCounts(ctx, d.userID, d.deviceID)
		if err != nil || counts["signed_curve25519"] != 4 {
			t.Fatalf("counts after refused upload: %v %v", counts, err)
		}
		if _, err := svc.ClaimKeys(ctx, map[string]map[string]string{d.userID: {d.deviceID: "signed_curve25519"}}, 0); err != nil {
			t.Fatal(err)
		}
		counts, err = svc.UploadKeys(ctx, d.userID, d.deviceID, e2ee.UploadRequest{OneTimeKeys: d.otks(t, "b", 2)})
		if err != nil || counts["signed_curve25519"] != 5 {
			t.Fatalf("upload after claim: %v %v", counts, err)
		}
	})
}

// TestClaimConcurrentService: 300 claims in parallel against 250 one-time keys get each key once,
// then the fallback key, on both backends. On PostgreSQL claims really overlap here (measured: a
// few hundred retries of the pick-and-delete statement per run), which the HTTP test with 50
// claims does not always achieve.
func TestClaimConcurrentService(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		w := &ktWaker{}
		svc := ktService(s, w, e2ee.Options{})
		d := ktNewDevice(t, s, "alice", "DEV")
		fb := map[string]json.RawMessage{"signed_curve25519:FB": d.sign(t, map[string]any{"key": "fallback", "fallback": true})}
		if _, err := svc.UploadKeys(ctx, d.userID, d.deviceID, e2ee.UploadRequest{DeviceKeys: d.deviceKeys(t),
			OneTimeKeys: d.otks(t, "k", 150), FallbackKeys: fb}); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.UploadKeys(ctx, d.userID, d.deviceID, e2ee.UploadRequest{OneTimeKeys: d.otks(t, "m", 100)}); err != nil {
			t.Fatal(err)
		}
		if got := w.takeSharing(); !slices.Equal(got, []string{d.userID}) {
			t.Fatalf("device keys upload woke %v", got)
		}
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		errs := make(chan error, 300)
		for range 300 {
			wg.Go(func() {
				res, err := svc.ClaimKeys(ctx, map[string]map[string]string{d.userID: {d.deviceID: "signed_curve25519"}}, 0)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for id := range res.OneTimeKeys[d.userID][d.deviceID] {
					got[id]++
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(got) != 251 || got["signed_curve25519:FB"] != 50 {
			t.Fatalf("claims: %d distinct keys, fallback %d times: %v", len(got), got["signed_curve25519:FB"], got)
		}
		for id, n := range got {
			if id != "signed_curve25519:FB" && n != 1 {
				t.Fatalf("one-time key %s handed out %d times", id, n)
			}
		}
		counts, fallback, err := svc.KeyCounts(ctx, d.userID, d.deviceID)
		if err != nil || len(counts) != 0 || len(fallback) != 0 {
			t.Fatalf("after claims: counts %v, unused fallback %v, %v", counts, fallback, err)
		}
	})
}

// TestDeviceListStream: key uploads, cross-signing uploads and device deletion move the
// device_lists stream; ChangedUsers reads ranges of it.
func TestDeviceListStream(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc := ktService(s, nil, e2ee.Options{})
		alice := ktNewDevice(t, s, "alice", "A1")
		bob := ktNewDevice(t, s, "bob", "B1")
		p0, err := svc.DeviceListsPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []ktDevice{alice, bob} {
			if _, err := svc.UploadKeys(ctx, d.userID, d.deviceID, e2ee.UploadRequest{DeviceKeys: d.deviceKeys(t)}); err != nil {
				t.Fatal(err)
			}
		}
		p1, _ := svc.DeviceListsPosition(ctx)
		if users, err := svc.ChangedUsers(ctx, p0, p1); err != nil || !slices.Equal(users, []string{alice.userID, bob.userID}) {
			t.Fatalf("changed (%d, %d]: %v %v", p0, p1, users, err)
		}
		// Identical re-upload: no change.
		if _, err := svc.UploadKeys(ctx, alice.userID, alice.deviceID, e2ee.UploadRequest{DeviceKeys: alice.deviceKeys(t)}); err != nil {
			t.Fatal(err)
		}
		if p, _ := svc.DeviceListsPosition(ctx); p != p1 {
			t.Fatalf("identical re-upload moved the stream %d -> %d", p1, p)
		}
		// Deleting the device (the storage call every device deletion makes) records a change.
		if err := s.Write(ctx, func(c storage.Conn) error { return c.DeleteDevice(ctx, "bob", "B1") }); err != nil {
			t.Fatal(err)
		}
		p2, _ := svc.DeviceListsPosition(ctx)
		if users, _ := svc.ChangedUsers(ctx, p1, p2); !slices.Equal(users, []string{bob.userID}) {
			t.Fatalf("changed after deletion: %v", users)
		}
		res, err := svc.QueryKeys(ctx, alice.userID, map[string][]string{bob.userID: nil}, 0)
		if err != nil || len(res.DeviceKeys[bob.userID]) != 0 {
			t.Fatalf("bob's keys after deletion: %v %v", res, err)
		}
	})
}

// TestFirstUploadRace: of concurrent first uploads of different identity keys for one device, or
// of different cross-signing keys without user-interactive auth, exactly one goes through.
func TestFirstUploadRace(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc := ktService(s, nil, e2ee.Options{})
		base := ktNewDevice(t, s, "alice", "DEV")
		const n = 10
		var wg sync.WaitGroup
		devErrs, csErrs := make([]error, n), make([]error, n)
		for i := range n {
			d := base
			pub, priv, _ := ed25519.GenerateKey(rand.Reader)
			d.priv, d.pub = priv, base64.RawStdEncoding.EncodeToString(pub)
			master := base64.RawStdEncoding.EncodeToString(pub)
			body := e2ee.SigningKeys{Master: mustJSON(t, map[string]any{"user_id": d.userID, "usage": []string{"master"},
				"keys": map[string]string{"ed25519:" + master: master}})}
			wg.Go(func() {
				_, devErrs[i] = svc.UploadKeys(ctx, d.userID, d.deviceID, e2ee.UploadRequest{DeviceKeys: d.deviceKeys(t)})
			})
			wg.Go(func() { csErrs[i] = svc.UploadDeviceSigningKeys(ctx, d.userID, body, false) })
		}
		wg.Wait()
		devOK, csOK := 0, 0
		for i := range n {
			if devErrs[i] == nil {
				devOK++
			} else {
				wantCode(t, devErrs[i], "M_INVALID_PARAM")
			}
			if csErrs[i] == nil {
				csOK++
			} else if !errors.Is(csErrs[i], e2ee.ErrAuthRequired) {
				t.Fatalf("cross-signing upload: %v", csErrs[i])
			}
		}
		if devOK != 1 || csOK != 1 {
			t.Fatalf("%d device-key uploads and %d cross-signing uploads went through, want 1 each", devOK, csOK)
		}
	})
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

package e2ee_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// tdUploader records key uploads, or fails them.
type tdUploader struct {
	got  []string
	fail error
}

func (u *tdUploader) UploadDehydratedKeys(_ context.Context, userID, deviceID string, keys e2ee.DehydratedKeys) error {
	if u.fail != nil {
		return u.fail
	}
	u.got = append(u.got, userID+" "+deviceID+" "+string(keys.DeviceKeys))
	return nil
}

func TestDehydratedDeviceEventsInBatches(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		tdDevices(t, s, map[string][]string{"alice": {"A1"}})
		accounts := account.New(s, nil, account.Options{ServerName: tdServer}, tdLog())
		td := e2ee.NewToDevice(s, nil, e2ee.ToDeviceOptions{ServerName: tdServer}, tdLog())
		up := &tdUploader{}
		dh := e2ee.NewDehydrated(s, accounts, td, up, tdLog())
		if err := dh.Put(ctx, "bob", "DH", json.RawMessage(`{"algorithm":"a"}`), nil, e2ee.DehydratedKeys{DeviceKeys: json.RawMessage(`{"k":1}`)}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(up.got, []string{tdUser("bob") + ` DH {"k":1}`}) {
			t.Fatalf("uploads %v", up.got)
		}
		for i := 1; i <= 5; i++ {
			if err := td.Send(ctx, tdUser("alice"), "A1", "m.test", fmt.Sprint("t", i), tdMsgs("bob", "DH", fmt.Sprintf(`{"n":%d}`, i))); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		next := ""
		for round := 0; ; round++ {
			evs, n, err := dh.Events(ctx, "bob", "DH", next, 2)
			if err != nil {
				t.Fatal(err)
			}
			if round > 5 {
				t.Fatal("no end")
			}
			for _, e := range evs {
				var ev tdEvent
				_ = json.Unmarshal(e, &ev)
				got = append(got, string(ev.Content))
			}
			if n == "" {
				if len(evs) != 0 {
					t.Fatalf("last batch has events %v but no next_batch", evs)
				}
				break
			}
			if len(evs) == 0 || len(evs) > 2 {
				t.Fatalf("batch of %d", len(evs))
			}
			next = n
		}
		if !slices.Equal(got, []string{`{"n":1}`, `{"n":2}`, `{"n":3}`, `{"n":4}`, `{"n":5}`}) {
			t.Fatalf("got %v", got)
		}
		if n, _ := s.Read().CountToDevice(ctx, "bob", "DH"); n != 0 {
			t.Fatalf("%d left", n)
		}
		var se *spec.Error
		if _, _, err := dh.Events(ctx, "bob", "A1", "", 0); !errors.As(err, &se) || se.Code != "M_FORBIDDEN" {
			t.Fatalf("events of another device: %v", err)
		}

		// A device whose keys cannot be stored is taken back.
		up.fail = spec.ErrInvalidParam.With("bad keys")
		if err := dh.Put(ctx, "bob", "DH2", json.RawMessage(`{"algorithm":"a"}`), nil, e2ee.DehydratedKeys{}); !errors.As(err, &se) || se.Code != "M_INVALID_PARAM" {
			t.Fatalf("put with failing upload: %v", err)
		}
		if _, err := dh.Get(ctx, "bob"); !errors.As(err, &se) || se.Code != "M_NOT_FOUND" {
			t.Fatalf("after failed upload: %v", err)
		}
		if _, err := s.Read().Device(ctx, "bob", "DH2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("device DH2 left behind: %v", err)
		}
	})
}

package storage_test

import (
	"context"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// Received to-device EDUs are recognised once per (origin, message_id) until purged; what was
// announced of a user's device list is read back as written, devices replaced and deleted.
func TestRemoteE2EEStorage(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		insert := func(origin, id string, ts int64) bool {
			t.Helper()
			var fresh bool
			mustWrite(t, s, func(c storage.Conn) error {
				var err error
				fresh, err = c.InsertReceivedToDevice(ctx, origin, id, ts)
				return err
			})
			return fresh
		}
		if !insert("a.org", "m1", 10) || insert("a.org", "m1", 20) || !insert("b.org", "m1", 20) {
			t.Fatal("InsertReceivedToDevice: want new, repeat, new for another origin")
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.PurgeReceivedToDevice(ctx, 15) })
		if !insert("a.org", "m1", 30) || insert("b.org", "m1", 30) {
			t.Fatal("after a purge at 15: a.org's m1 (10) should be forgotten, b.org's (20) kept")
		}

		lists, err := s.Read().AnnouncedDeviceLists(ctx, []string{"@u:a", "@v:a"})
		if err != nil || lists["@u:a"].StreamID != 0 || len(lists["@u:a"].Devices) != 0 {
			t.Fatalf("AnnouncedDeviceLists before any = %+v, %v", lists["@u:a"], err)
		}
		mustWrite(t, s, func(c storage.Conn) error {
			return c.PutAnnouncedDeviceList(ctx, "@u:a", 2, "sig1", map[string]string{"D1": "x", "D2": "y"}, nil)
		})
		mustWrite(t, s, func(c storage.Conn) error {
			return c.PutAnnouncedDeviceList(ctx, "@u:a", 4, "sig2", map[string]string{"D1": "z"}, []string{"D2"})
		})
		lists, err = s.Read().AnnouncedDeviceLists(ctx, []string{"@u:a", "@v:a"})
		u := lists["@u:a"]
		if err != nil || u.StreamID != 4 || u.SigningDigest != "sig2" || len(u.Devices) != 1 || u.Devices["D1"] != "z" ||
			len(lists["@v:a"].Devices) != 0 {
			t.Fatalf("AnnouncedDeviceLists = %+v, %v", u, err)
		}
		if id, err := s.Read().AnnouncedStreamID(ctx, "@u:a"); err != nil || id != 4 {
			t.Fatalf("AnnouncedStreamID = %d, %v", id, err)
		}
		if id, err := s.Read().AnnouncedStreamID(ctx, "@v:a"); err != nil || id != 0 {
			t.Fatalf("AnnouncedStreamID of a user never announced = %d, %v", id, err)
		}
	})
}

package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

func TestMedia(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		a := storage.Media{ServerName: "hs", MediaID: "a", SHA256: "h1", Size: 10, ContentType: "image/png", FileName: "a.png",
			Uploader: "@alice:hs", CreatedTS: 100, Restricted: true}
		mustWrite(t, s, func(c storage.Conn) error { return c.InsertMedia(ctx, a) })
		got, err := s.Read().Media(ctx, "hs", "a")
		if err != nil || got != a {
			t.Fatalf("Media = %+v, %v; want %+v", got, err, a)
		}
		if err := s.Write(ctx, func(c storage.Conn) error { return c.InsertMedia(ctx, a) }); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("second InsertMedia: %v, want ErrConflict", err)
		}
		if _, err := s.Read().Media(ctx, "hs", "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Media(nope): %v", err)
		}

		// A second item with the same content, and a pending one.
		b := a
		b.MediaID, b.Restricted = "b", false
		pending := storage.Media{ServerName: "hs", MediaID: "p", Uploader: "@alice:hs", CreatedTS: 100, ExpiresTS: 1000, Restricted: true}
		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.InsertMedia(ctx, b); err != nil {
				return err
			}
			return c.InsertMedia(ctx, pending)
		})
		if got, _ := s.Read().Media(ctx, "hs", "p"); !got.Pending() || got.ExpiresTS != 1000 {
			t.Fatalf("pending item = %+v", got)
		}
		if n, err := s.Read().PendingMediaCount(ctx, "@alice:hs", 500); err != nil || n != 1 {
			t.Fatalf("PendingMediaCount = %d, %v", n, err)
		}
		if n, _ := s.Read().PendingMediaCount(ctx, "@alice:hs", 1000); n != 0 {
			t.Fatalf("PendingMediaCount after expiry = %d", n)
		}
		if n, err := s.Read().MediaBytesOf(ctx, "@alice:hs"); err != nil || n != 20 {
			t.Fatalf("MediaBytesOf = %d, %v", n, err)
		}
		if n, _ := s.Read().MediaBytesOf(ctx, "@bob:hs"); n != 0 {
			t.Fatalf("MediaBytesOf(bob) = %d", n)
		}

		// Filling: only by its uploader, only before expiry, only once.
		fill := storage.Media{ServerName: "hs", MediaID: "p", SHA256: "h2", Size: 5, ContentType: "audio/ogg", Uploader: "@bob:hs"}
		if err := s.Write(ctx, func(c storage.Conn) error { return c.FillPendingMedia(ctx, fill, 500) }); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("fill by another user: %v", err)
		}
		fill.Uploader = "@alice:hs"
		if err := s.Write(ctx, func(c storage.Conn) error { return c.FillPendingMedia(ctx, fill, 1000) }); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("fill after expiry: %v", err)
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.FillPendingMedia(ctx, fill, 500) })
		if err := s.Write(ctx, func(c storage.Conn) error { return c.FillPendingMedia(ctx, fill, 500) }); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second fill: %v", err)
		}
		if got, _ := s.Read().Media(ctx, "hs", "p"); got.SHA256 != "h2" || got.ContentType != "audio/ogg" || got.ExpiresTS != 0 || got.CreatedTS != 500 {
			t.Fatalf("filled item = %+v", got)
		}

		// Thumbnails.
		th := storage.MediaThumbnail{ServerName: "hs", MediaID: "a", Width: 32, Height: 32, Method: "crop", SHA256: "t1", Size: 3,
			ContentType: "image/png", CreatedTS: 200}
		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.InsertMediaThumbnail(ctx, th); err != nil {
				return err
			}
			return c.InsertMediaThumbnail(ctx, th) // a concurrent twin: ignored
		})
		if got, err := s.Read().MediaThumbnail(ctx, "hs", "a", 32, 32, "crop"); err != nil || got != th {
			t.Fatalf("MediaThumbnail = %+v, %v", got, err)
		}
		if _, err := s.Read().MediaThumbnail(ctx, "hs", "a", 32, 32, "scale"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("MediaThumbnail(scale): %v", err)
		}
		if n, _ := s.Read().MediaThumbnailCount(ctx, "hs", "a"); n != 1 {
			t.Fatalf("MediaThumbnailCount = %d", n)
		}

		// Deleting a: its blob h1 is still named by b; its thumbnail's t1 by nothing.
		var hashes []string
		mustWrite(t, s, func(c storage.Conn) (err error) {
			hashes, err = c.DeleteMedia(ctx, "hs", "a")
			return err
		})
		slices.Sort(hashes)
		if !slices.Equal(hashes, []string{"h1", "t1"}) {
			t.Fatalf("DeleteMedia hashes = %v", hashes)
		}
		if ok, err := s.Read().BlobReferenced(ctx, "h1"); err != nil || !ok {
			t.Fatalf("h1 referenced = %v, %v", ok, err)
		}
		if ok, _ := s.Read().BlobReferenced(ctx, "t1"); ok {
			t.Fatal("t1 still referenced")
		}
		if err := s.Write(ctx, func(c storage.Conn) error { _, err := c.DeleteMedia(ctx, "hs", "a"); return err }); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second DeleteMedia: %v", err)
		}
		// A thumbnail of a deleted item (one that was being made meanwhile) is refused.
		if err := s.Write(ctx, func(c storage.Conn) error { return c.InsertMediaThumbnail(ctx, th) }); err == nil {
			t.Fatal("thumbnail of a deleted media item was stored")
		}

		// Remote media and purging by last access; expired pending IDs.
		r := storage.Media{ServerName: "remote.example", MediaID: "r", SHA256: "h3", Size: 1, Remote: true, CreatedTS: 50,
			LastAccessTS: 50, Restricted: true}
		lapsed := storage.Media{ServerName: "hs", MediaID: "l", Uploader: "@alice:hs", CreatedTS: 1, ExpiresTS: 2, Restricted: true}
		mustWrite(t, s, func(c storage.Conn) error {
			if err := c.InsertMedia(ctx, r); err != nil {
				return err
			}
			return c.InsertMedia(ctx, lapsed)
		})
		old, err := s.Read().RemoteMediaBefore(ctx, 60, 10)
		if err != nil || len(old) != 1 || old[0].MediaID != "r" {
			t.Fatalf("RemoteMediaBefore = %+v, %v", old, err)
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.TouchMedia(ctx, "remote.example", "r", 70) })
		if old, _ := s.Read().RemoteMediaBefore(ctx, 60, 10); len(old) != 0 {
			t.Fatalf("RemoteMediaBefore after touch = %+v", old)
		}
		exp, err := s.Read().ExpiredPendingMedia(ctx, 10, 10)
		if err != nil || len(exp) != 1 || exp[0].MediaID != "l" {
			t.Fatalf("ExpiredPendingMedia = %+v, %v", exp, err)
		}

		// URL previews.
		mustWrite(t, s, func(c storage.Conn) error { return c.PutURLPreview(ctx, "https://x", `{"a":1}`, 5) })
		mustWrite(t, s, func(c storage.Conn) error { return c.PutURLPreview(ctx, "https://x", `{"a":2}`, 6) })
		if body, ts, err := s.Read().URLPreview(ctx, "https://x"); err != nil || body != `{"a":2}` || ts != 6 {
			t.Fatalf("URLPreview = %s, %d, %v", body, ts, err)
		}
		mustWrite(t, s, func(c storage.Conn) error { return c.DeleteURLPreviewsBefore(ctx, 7) })
		if _, _, err := s.Read().URLPreview(ctx, "https://x"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("URLPreview after purge: %v", err)
		}
	})
}

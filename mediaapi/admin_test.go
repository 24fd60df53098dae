package mediaapi_test

import (
	"context"
	"fmt"
	"github.com/hearthmx/homeserver/mediaapi"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/servertest"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

func TestAdminDeleteMedia(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		ctx := context.Background()
		s.Register(t, "admin", "admin password")
		if err := s.Store.Write(ctx, func(c storage.Conn) error { return c.SetAdmin(ctx, "admin", true) }); err != nil {
			t.Fatal(err)
		}
		admin := s.Login(t, "admin", "admin password")
		alice := s.Register(t, "alice", "alice password")

		img := encodePNG(t, splitImage(400, 200))
		shared := upload(t, s, alice.AccessToken, "image/png", img, "")
		other := upload(t, s, alice.AccessToken, "image/png", img, "") // same content
		unique := upload(t, s, alice.AccessToken, "text/plain", []byte("only here"), "")
		content := filepath.Join(s.Config.MediaDir(), "content")
		servertest.Eventually(t, 20*time.Second, func() error { // the background thumbnails of both are made
			for _, mxc := range []string{shared, other} {
				id := strings.Split(mediaPath(t, mxc), "/")[1]
				if n, err := s.Store.Read().MediaThumbnailCount(ctx, "localhost", id); err != nil || n != 5 {
					return fmt.Errorf("%s has %d thumbnails (%v)", mxc, n, err)
				}
			}
			return nil
		})
		files := mediaapi.CountFiles(t, content)

		path := "/_synapse/admin/v1/media/" + mediaPath(t, unique)
		wantError(t, "delete as a user", request(t, s, "DELETE", path, alice.AccessToken, nil), http.StatusForbidden, "M_FORBIDDEN")
		wantError(t, "delete without token", request(t, s, "DELETE", path, "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
		r := request(t, s, "DELETE", path, admin.AccessToken, nil)
		if r.Status != http.StatusOK || r.JSON["total"] != float64(1) {
			t.Fatalf("delete: %d %s", r.Status, r.Body)
		}
		wantError(t, "download after delete", download(t, s, alice.AccessToken, unique), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "delete again", request(t, s, "DELETE", path, admin.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		if n := mediaapi.CountFiles(t, content); n != files-1 {
			t.Fatalf("%d files after deleting unique content, want %d", n, files-1)
		}

		// Content (and thumbnails) shared with another item stay until the last one goes.
		if r := request(t, s, "DELETE", "/_synapse/admin/v1/media/"+mediaPath(t, shared), admin.AccessToken, nil); r.Status != http.StatusOK {
			t.Fatalf("delete shared: %d %s", r.Status, r.Body)
		}
		if n := mediaapi.CountFiles(t, content); n != files-1 {
			t.Fatalf("%d files after deleting one of two items with the same content, want %d", n, files-1)
		}
		if r := thumb(t, s, alice.AccessToken, other, 32, 32, "crop"); r.Status != http.StatusOK {
			t.Fatalf("thumbnail of the other item: %d %s", r.Status, r.Body)
		}
		if r := request(t, s, "DELETE", "/_synapse/admin/v1/media/"+mediaPath(t, other), admin.AccessToken, nil); r.Status != http.StatusOK {
			t.Fatalf("delete other: %d %s", r.Status, r.Body)
		}
		if n := mediaapi.CountFiles(t, content); n != 0 {
			t.Fatalf("%d files left after deleting everything", n)
		}

		// Purging the remote cache (empty here; see TestRemoteMedia) answers how many went.
		wantError(t, "purge without before_ts", request(t, s, "POST", "/_synapse/admin/v1/purge_media_cache", admin.AccessToken, nil),
			http.StatusBadRequest, "M_MISSING_PARAM")
		r = request(t, s, "POST", "/_synapse/admin/v1/purge_media_cache?before_ts=9999999999999", admin.AccessToken, nil)
		if r.Status != http.StatusOK || r.JSON["deleted"] != float64(0) {
			t.Fatalf("purge: %d %s", r.Status, r.Body)
		}
		wantError(t, "purge as a user", request(t, s, "POST", "/_synapse/admin/v1/purge_media_cache?before_ts=1", alice.AccessToken, nil),
			http.StatusForbidden, "M_FORBIDDEN")
		// The other admin endpoints still answer (the media routes sit beside them).
		if r := request(t, s, "GET", "/_synapse/admin/v1/registration_tokens", admin.AccessToken, nil); r.Status != http.StatusOK {
			t.Fatalf("registration tokens: %d %s", r.Status, r.Body)
		}
	})
}

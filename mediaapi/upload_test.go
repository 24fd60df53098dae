package mediaapi_test

import (
	"bytes"
	"context"
	"fmt"
	"github.com/hearthmx/homeserver/mediaapi"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

func TestUploadDownload(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		voice := append([]byte("OggS\x00\x02"), bytes.Repeat([]byte{0x4f, 0x70, 0x75, 0x73}, 3000)...)
		mxc := upload(t, s, alice.AccessToken, "audio/ogg; codecs=opus", voice, "voice note.ogg")
		if !strings.HasPrefix(mxc, "mxc://localhost/") {
			t.Fatalf("content_uri = %s", mxc)
		}

		// Another user downloads it byte-exact, with the type given at upload.
		r := download(t, s, bob.AccessToken, mxc)
		if r.Status != http.StatusOK || !bytes.Equal(r.Body, voice) {
			t.Fatalf("download: %d, %d bytes", r.Status, len(r.Body))
		}
		for k, want := range map[string]string{
			"Content-Type":                 "audio/ogg; codecs=opus",
			"Content-Disposition":          `inline; filename="voice note.ogg"`,
			"X-Content-Type-Options":       "nosniff",
			"Cross-Origin-Resource-Policy": "cross-origin",
			"Cache-Control":                "private, max-age=31536000, immutable",
			"Content-Length":               fmt.Sprint(len(voice)),
			"Accept-Ranges":                "bytes",
		} {
			if got := r.Header.Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		if csp := r.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox; default-src 'none'") {
			t.Errorf("Content-Security-Policy = %q", csp)
		}
		// With a file name of the caller's choosing, also non-ASCII.
		r = request(t, s, "GET", "/_matrix/client/v1/media/download/"+mediaPath(t, mxc)+"/r%C3%A9ponse.ogg", bob.AccessToken, nil)
		if r.Status != http.StatusOK || r.Header.Get("Content-Disposition") != `inline; filename*=utf-8''r%C3%A9ponse.ogg` {
			t.Fatalf("download with file name: %d %q", r.Status, r.Header.Get("Content-Disposition"))
		}
		// A second request with the ETag: 304.
		r = download(t, s, bob.AccessToken, mxc, "If-None-Match", r.Header.Get("ETag"))
		if r.Status != http.StatusNotModified {
			t.Fatalf("If-None-Match: %d", r.Status)
		}

		// The authenticated endpoints need a token.
		wantError(t, "download without token", download(t, s, "", mxc), http.StatusUnauthorized, "M_MISSING_TOKEN")
		wantError(t, "thumbnail without token", request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/"+mediaPath(t, mxc)+"?width=32&height=32", "", nil),
			http.StatusUnauthorized, "M_MISSING_TOKEN")
		wantError(t, "config without token", request(t, s, "GET", "/_matrix/client/v1/media/config", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
		wantError(t, "upload without token", request(t, s, "POST", "/_matrix/media/v3/upload", "", []byte("x")), http.StatusUnauthorized, "M_MISSING_TOKEN")
		wantError(t, "download with a bad token", download(t, s, "nope", mxc), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

		// Unknown media, bad IDs: 404 / 400; media of a server that cannot be reached (loopback,
		// which federation.allowed_networks does not allow here): 502.
		wantError(t, "unknown media", download(t, s, bob.AccessToken, "mxc://localhost/nothingHere"), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "remote media", download(t, s, bob.AccessToken, "mxc://127.0.0.1:1/abc"), http.StatusBadGateway, "M_UNKNOWN")
		wantError(t, "bad media ID", request(t, s, "GET", "/_matrix/client/v1/media/download/localhost/..%2Fetc", bob.AccessToken, nil),
			http.StatusBadRequest, "M_INVALID_PARAM")

		// Config, on both paths.
		for _, p := range []string{"/_matrix/client/v1/media/config", "/_matrix/media/v3/config"} {
			r := request(t, s, "GET", p, bob.AccessToken, nil)
			if r.Status != http.StatusOK || r.JSON["m.upload.size"] != float64(s.Config.Media.MaxUploadBytes) {
				t.Fatalf("%s: %d %s", p, r.Status, r.Body)
			}
		}

		// No Content-Type: application/octet-stream, served as an attachment without a name.
		r = request(t, s, "POST", "/_matrix/media/v3/upload", alice.AccessToken, []byte("raw bytes"))
		if r.Status != http.StatusOK {
			t.Fatalf("upload without type: %d %s", r.Status, r.Body)
		}
		r = download(t, s, bob.AccessToken, r.str("content_uri"))
		if r.Header.Get("Content-Type") != "application/octet-stream" || r.Header.Get("Content-Disposition") != "attachment" {
			t.Fatalf("untyped download: %q %q", r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"))
		}
		wantError(t, "bad Content-Type", request(t, s, "POST", "/_matrix/media/v3/upload", alice.AccessToken, []byte("x"), "Content-Type", "not a type"),
			http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestSameContentStoredOnce(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		data := bytes.Repeat([]byte("the same file "), 1000)
		first := upload(t, s, alice.AccessToken, "application/pdf", data, "a.pdf")
		second := upload(t, s, bob.AccessToken, "text/plain", data, "b.txt")
		if first == second {
			t.Fatal("two uploads got the same media ID")
		}
		if n := mediaapi.CountFiles(t, filepath.Join(s.Config.MediaDir(), "content")); n != 1 {
			t.Fatalf("%d files in the store, want 1", n)
		}
		// Each keeps its own type and name.
		r := download(t, s, alice.AccessToken, second)
		if !bytes.Equal(r.Body, data) || r.Header.Get("Content-Type") != "text/plain" || r.Header.Get("Content-Disposition") != `inline; filename="b.txt"` {
			t.Fatalf("second: %q %q", r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"))
		}
		r = download(t, s, alice.AccessToken, first)
		if !bytes.Equal(r.Body, data) || r.Header.Get("Content-Disposition") != `attachment; filename="a.pdf"` {
			t.Fatalf("first: %q", r.Header.Get("Content-Disposition"))
		}
	})
}

func TestUploadLimits(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		nothingLeft := func(what string) {
			t.Helper()
			if n := mediaapi.CountFiles(t, filepath.Join(s.Config.MediaDir(), "tmp")); n != 0 {
				t.Fatalf("%s: %d spool files left", what, n)
			}
		}
		// Over the limit, with a Content-Length: refused before reading.
		wantError(t, "oversize upload", request(t, s, "POST", "/_matrix/media/v3/upload", alice.AccessToken, make([]byte, 2001), "Content-Type", "image/png"),
			http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		// Over the limit without a Content-Length (chunked): refused while reading.
		req, _ := http.NewRequest("POST", s.URL+"/_matrix/media/v3/upload", io.MultiReader(bytes.NewReader(make([]byte, 1500)), bytes.NewReader(make([]byte, 1500))))
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		req.ContentLength = -1
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked oversize upload: %d", res.StatusCode)
		}
		nothingLeft("oversize")
		if n := mediaapi.CountFiles(t, filepath.Join(s.Config.MediaDir(), "content")); n != 0 {
			t.Fatalf("%d blobs stored after refused uploads", n)
		}
		if used, _ := s.Store.Read().MediaBytesOf(context.Background(), alice.UserID); used != 0 {
			t.Fatalf("refused uploads recorded: %d bytes", used)
		}

		// Quota 3000: 1500 + 1500 fit, the next byte does not; bob has his own.
		upload(t, s, alice.AccessToken, "application/octet-stream", bytes.Repeat([]byte{1}, 1500), "")
		upload(t, s, alice.AccessToken, "application/octet-stream", bytes.Repeat([]byte{2}, 1500), "")
		wantError(t, "over quota", request(t, s, "POST", "/_matrix/media/v3/upload", alice.AccessToken, []byte{3}),
			http.StatusForbidden, "M_FORBIDDEN")
		nothingLeft("over quota")
		if n := mediaapi.CountFiles(t, filepath.Join(s.Config.MediaDir(), "content")); n != 2 {
			t.Fatalf("%d blobs stored, want 2 (the refused one removed)", n)
		}
		upload(t, s, bob.AccessToken, "application/octet-stream", []byte{3}, "")
	}, func(c *config.Config) {
		c.Media.MaxUploadBytes = 2000
		c.Media.UserQuotaBytes = 3000
	})
}

func TestUploadRateLimit(t *testing.T) {
	s := servertest.Start(t, "sqlite", func(c *config.Config) {
		c.RateLimits.Enabled = true
		c.RateLimits.PerUser = config.Rate{PerSecond: 0.001, Burst: 2}
	})
	alice := s.Register(t, "alice", "alice password")
	upload(t, s, alice.AccessToken, "text/plain", []byte("1"), "")
	upload(t, s, alice.AccessToken, "text/plain", []byte("2"), "")
	r := request(t, s, "POST", "/_matrix/media/v3/upload", alice.AccessToken, []byte("3"), "Content-Type", "text/plain")
	wantError(t, "third upload", r, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("no Retry-After")
	}
	wantError(t, "create", request(t, s, "POST", "/_matrix/media/v1/create", alice.AccessToken, nil), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
}

func TestAsyncUpload(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		create := func(token string) string {
			t.Helper()
			r := request(t, s, "POST", "/_matrix/media/v1/create", token, nil)
			if r.Status != http.StatusOK {
				t.Fatalf("create: %d %s", r.Status, r.Body)
			}
			exp, _ := r.JSON["unused_expires_at"].(float64)
			if d := time.Until(time.UnixMilli(int64(exp))); d < 23*time.Hour || d > 25*time.Hour {
				t.Fatalf("unused_expires_at is %v away", d)
			}
			return r.str("content_uri")
		}
		mxc := create(alice.AccessToken)
		put := func(token, mxc string, data []byte) resp {
			return request(t, s, "PUT", "/_matrix/media/v3/upload/"+mediaPath(t, mxc)+"?filename=late.txt", token, data, "Content-Type", "text/plain")
		}

		// Not there yet: 504 M_NOT_YET_UPLOADED after timeout_ms.
		start := time.Now()
		r := request(t, s, "GET", "/_matrix/client/v1/media/download/"+mediaPath(t, mxc)+"?timeout_ms=200", bob.AccessToken, nil)
		wantError(t, "download before upload", r, http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
		if time.Since(start) < 150*time.Millisecond {
			t.Fatalf("answered after %v, before timeout_ms", time.Since(start))
		}

		// A download waiting while the upload arrives gets the content.
		got := make(chan resp, 1)
		go func() {
			got <- request(t, s, "GET", "/_matrix/client/v1/media/download/"+mediaPath(t, mxc)+"?timeout_ms=20000", bob.AccessToken, nil)
		}()
		time.Sleep(100 * time.Millisecond) // let it start waiting (it would also succeed if it had not)
		wantError(t, "upload by another user", put(bob.AccessToken, mxc, []byte("no")), http.StatusForbidden, "M_FORBIDDEN")
		if r := put(alice.AccessToken, mxc, []byte("arrived late")); r.Status != http.StatusOK || string(r.Body) != "{}" {
			t.Fatalf("PUT upload: %d %s", r.Status, r.Body)
		}
		select {
		case r := <-got:
			if r.Status != http.StatusOK || string(r.Body) != "arrived late" || r.Header.Get("Content-Disposition") != `inline; filename="late.txt"` {
				t.Fatalf("waiting download: %d %q %q", r.Status, r.Body, r.Header.Get("Content-Disposition"))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the waiting download did not end")
		}
		wantError(t, "second PUT", put(alice.AccessToken, mxc, []byte("again")), http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")
		wantError(t, "PUT to an unknown ID", put(alice.AccessToken, "mxc://localhost/neverCreated", []byte("x")), http.StatusNotFound, "M_NOT_FOUND")
		wantError(t, "PUT to another server's ID", put(alice.AccessToken, "mxc://elsewhere.example/abc", []byte("x")), http.StatusNotFound, "M_NOT_FOUND")

		// At most max_pending_uploads (2) IDs waiting per user.
		create(alice.AccessToken)
		create(alice.AccessToken)
		wantError(t, "third pending ID", request(t, s, "POST", "/_matrix/media/v1/create", alice.AccessToken, nil), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		create(bob.AccessToken)
	}, func(c *config.Config) { c.Media.MaxPendingUploads = 2 })
}

package mediaapi_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

func TestSafeServing(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		for _, c := range []struct {
			ctype, disposition string
		}{
			{"text/html", "attachment"},
			{"text/html; charset=utf-8", "attachment"},
			{"image/svg+xml", "attachment"},
			{"application/javascript", "attachment"},
			{"application/xhtml+xml", "attachment"},
			{"application/pdf", "attachment"},
			{"image/png", "inline"},
			{"IMAGE/JPEG", "inline"},
			{"video/mp4", "inline"},
			{"audio/mpeg", "inline"},
			{"text/plain; charset=utf-8", "inline"},
		} {
			page := []byte(`<html><script>alert(document.cookie)</script></html>`)
			mxc := upload(t, s, alice.AccessToken, c.ctype, page, "page.html")
			r := download(t, s, alice.AccessToken, mxc)
			if r.Status != http.StatusOK || !bytes.Equal(r.Body, page) {
				t.Fatalf("%s: %d", c.ctype, r.Status)
			}
			if got := r.Header.Get("Content-Disposition"); got != c.disposition+`; filename="page.html"` {
				t.Errorf("%s: Content-Disposition %q, want %s", c.ctype, got, c.disposition)
			}
			if got := r.Header.Get("Content-Type"); got != c.ctype {
				t.Errorf("%s: served as %q", c.ctype, got)
			}
			csp := r.Header.Get("Content-Security-Policy")
			if !strings.HasPrefix(csp, "sandbox;") || !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'none'") {
				t.Errorf("%s: Content-Security-Policy %q", c.ctype, csp)
			}
			if r.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("%s: no nosniff", c.ctype)
			}
		}
	})
}

func TestRangeRequests(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		data := make([]byte, 10000)
		for i := range data {
			data[i] = byte(i * 7)
		}
		mxc := upload(t, s, alice.AccessToken, "audio/mp4", data, "song.m4a")
		r := download(t, s, alice.AccessToken, mxc, "Range", "bytes=1000-1999")
		if r.Status != http.StatusPartialContent || !bytes.Equal(r.Body, data[1000:2000]) {
			t.Fatalf("Range: %d, %d bytes", r.Status, len(r.Body))
		}
		if got := r.Header.Get("Content-Range"); got != "bytes 1000-1999/10000" {
			t.Fatalf("Content-Range = %q", got)
		}
		r = download(t, s, alice.AccessToken, mxc, "Range", "bytes=-100")
		if r.Status != http.StatusPartialContent || !bytes.Equal(r.Body, data[9900:]) {
			t.Fatalf("suffix Range: %d, %d bytes", r.Status, len(r.Body))
		}
		r = download(t, s, alice.AccessToken, mxc, "Range", "bytes=20000-")
		if r.Status != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("Range past the end: %d", r.Status)
		}
	})
}

// TestUnauthenticatedFreeze: by default new media is served only by the authenticated
// endpoints; with media.allow_unauthenticated_legacy it is served by the deprecated ones too,
// and stays so after the option is turned off (it was stored before the freeze).
func TestUnauthenticatedFreeze(t *testing.T) {
	png := encodePNG(t, splitImage(64, 32))
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		mxc := upload(t, s, alice.AccessToken, "image/png", png, "")
		for _, p := range []string{"/_matrix/media/v3/download/", "/_matrix/media/r0/download/", "/_matrix/media/v3/thumbnail/"} {
			path := p + mediaPath(t, mxc) + "?width=32&height=32"
			wantError(t, "frozen "+p, request(t, s, "GET", path, "", nil), http.StatusNotFound, "M_NOT_FOUND")
			wantError(t, "frozen "+p+" with a token", request(t, s, "GET", path, alice.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		}
		// Uploads still work on the legacy paths (the spec keeps /upload there).
		r := request(t, s, "POST", "/_matrix/media/r0/upload", alice.AccessToken, []byte("r0"), "Content-Type", "text/plain")
		if r.Status != http.StatusOK {
			t.Fatalf("r0 upload: %d %s", r.Status, r.Body)
		}
	})
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		mxc := upload(t, s, alice.AccessToken, "image/png", png, "x.png")
		r := request(t, s, "GET", "/_matrix/media/v3/download/"+mediaPath(t, mxc), "", nil)
		if r.Status != http.StatusOK || !bytes.Equal(r.Body, png) || r.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
			t.Fatalf("legacy download: %d %q", r.Status, r.Header.Get("Cache-Control"))
		}
		r = request(t, s, "GET", "/_matrix/media/v3/download/"+mediaPath(t, mxc)+"/other.png", "", nil)
		if r.Status != http.StatusOK || r.Header.Get("Content-Disposition") != `inline; filename="other.png"` {
			t.Fatalf("legacy download with name: %d %q", r.Status, r.Header.Get("Content-Disposition"))
		}
		r = request(t, s, "GET", "/_matrix/media/v3/thumbnail/"+mediaPath(t, mxc)+"?width=32&height=16&method=scale", "", nil)
		if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("legacy thumbnail: %d %s", r.Status, r.Body)
		}
		// allow_remote=false on a remote ID: not found without trying.
		wantError(t, "allow_remote=false", request(t, s, "GET", "/_matrix/media/v3/download/elsewhere.example/abc?allow_remote=false", "", nil),
			http.StatusNotFound, "M_NOT_FOUND")
		// The legacy config endpoint needs a token.
		wantError(t, "legacy config", request(t, s, "GET", "/_matrix/media/v3/config", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	}, func(c *config.Config) { c.Media.AllowUnauthenticatedLegacy = true })
}

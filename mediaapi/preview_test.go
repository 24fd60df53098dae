package mediaapi_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// pageServer is a web site on loopback for URL previews.
func pageServer(t *testing.T, png []byte) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=iso-8859-1")
		// "Café" in Latin-1: the page's charset is honoured.
		fmt.Fprint(w, "<!doctype html><html><head><title>Ignored title</title>\n"+
			`<meta property="og:title" content="Caf`+"\xe9"+` Matrix">`+"\n"+
			`<meta property="og:description" content="A page about &lt;Matrix&gt;">`+"\n"+
			`<meta property="og:image" content="/pic.png">`+"\n"+
			`<meta property="og:type" content="article">`+"\n"+
			`</head><body><p>Hello</p></body></html>`)
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<html><head><title>  Just a
			title </title><meta name="description" content="Described"></head><body></body></html>`)
	})
	mux.HandleFunc("/pic.png", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(png)
	})
	mux.Handle("/moved", http.RedirectHandler("/page", http.StatusFound))
	mux.HandleFunc("/missing", http.NotFound)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &hits
}

func preview(t *testing.T, s *servertest.Server, token, target string) resp {
	t.Helper()
	return request(t, s, "GET", "/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(target), token, nil)
}

func TestURLPreview(t *testing.T) {
	png := encodePNG(t, splitImage(120, 60))
	site, hits := pageServer(t, png)
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		r := preview(t, s, alice.AccessToken, site.URL+"/page#fragment")
		if r.Status != http.StatusOK {
			t.Fatalf("preview: %d %s", r.Status, r.Body)
		}
		if r.str("og:title") != "Café Matrix" || r.str("og:description") != "A page about <Matrix>" || r.str("og:type") != "article" {
			t.Fatalf("preview = %s", r.Body)
		}
		img := r.str("og:image")
		if !strings.HasPrefix(img, "mxc://localhost/") || r.str("og:image:type") != "image/png" ||
			r.JSON["og:image:width"] != float64(120) || r.JSON["og:image:height"] != float64(60) ||
			r.JSON["matrix:image:size"] != float64(len(png)) {
			t.Fatalf("preview image fields: %s", r.Body)
		}
		if d := download(t, s, alice.AccessToken, img); d.Status != http.StatusOK || !bytes.Equal(d.Body, png) {
			t.Fatalf("preview image download: %d", d.Status)
		}
		// Served from the stored preview the second time.
		before := hits.Load()
		if r2 := preview(t, s, alice.AccessToken, site.URL+"/page"); r2.Status != http.StatusOK || r2.str("og:title") != "Café Matrix" {
			t.Fatalf("second preview: %d %s", r2.Status, r2.Body)
		}
		if hits.Load() != before {
			t.Fatal("the page was fetched again")
		}

		// <title> and <meta name=description> stand in; redirects are followed; an image URL
		// previews as its image.
		if r := preview(t, s, alice.AccessToken, site.URL+"/plain"); r.str("og:title") != "Just a title" || r.str("og:description") != "Described" {
			t.Fatalf("plain page: %s", r.Body)
		}
		if r := preview(t, s, alice.AccessToken, site.URL+"/moved"); r.str("og:title") != "Café Matrix" {
			t.Fatalf("redirected page: %d %s", r.Status, r.Body)
		}
		if r := preview(t, s, alice.AccessToken, site.URL+"/pic.png"); !strings.HasPrefix(r.str("og:image"), "mxc://") {
			t.Fatalf("image URL: %s", r.Body)
		}

		wantError(t, "page answering 404", preview(t, s, alice.AccessToken, site.URL+"/missing"), http.StatusBadGateway, "M_UNKNOWN")
		wantError(t, "not http", preview(t, s, alice.AccessToken, "file:///etc/passwd"), http.StatusBadRequest, "M_INVALID_PARAM")
		wantError(t, "no url", request(t, s, "GET", "/_matrix/client/v1/media/preview_url", alice.AccessToken, nil), http.StatusBadRequest, "M_MISSING_PARAM")
		wantError(t, "without token", preview(t, s, "", site.URL+"/page"), http.StatusUnauthorized, "M_MISSING_TOKEN")
	}, func(c *config.Config) {
		c.Media.URLPreview.Enabled = true
		c.Media.URLPreview.AllowedNetworks = []string{"127.0.0.0/8"}
	})
}

// TestURLPreviewRefusesLocalAddresses: without an allowance, loopback (and the other local
// ranges) cannot be fetched, by IP or by a name that resolves to it.
func TestURLPreviewRefusesLocalAddresses(t *testing.T) {
	site, hits := pageServer(t, nil)
	_, port, _ := net.SplitHostPort(site.Listener.Addr().String())
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		for _, target := range []string{
			site.URL + "/page",
			"http://localhost:" + port + "/page",
			"http://[::1]:" + port + "/page",
			"http://169.254.169.254/latest/meta-data/", // refused before any packet is sent
			"http://10.0.0.1:" + port + "/page",
		} {
			wantError(t, target, preview(t, s, alice.AccessToken, target), http.StatusForbidden, "M_FORBIDDEN")
		}
		if hits.Load() != 0 {
			t.Fatalf("the loopback site was fetched %d times", hits.Load())
		}
	}, func(c *config.Config) { c.Media.URLPreview.Enabled = true })
}

func TestURLPreviewDisabled(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	alice := s.Register(t, "alice", "alice password")
	wantError(t, "preview while disabled", preview(t, s, alice.AccessToken, "https://example.org/"), http.StatusNotFound, "M_UNRECOGNIZED")
}

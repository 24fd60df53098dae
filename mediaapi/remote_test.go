package mediaapi

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// fakeRemote is the federation side of remote media: files by "server/id".
type fakeRemote struct {
	files map[string][]byte
	calls atomic.Int64
	delay time.Duration
}

func (f *fakeRemote) FetchMedia(ctx context.Context, serverName, mediaID string, maxBytes int64) (*RemoteMedia, error) {
	f.calls.Add(1)
	time.Sleep(f.delay)
	data, ok := f.files[serverName+"/"+mediaID]
	if !ok {
		return nil, fmt.Errorf("fetch %s/%s: %w", serverName, mediaID, ErrRemoteNotFound)
	}
	return &RemoteMedia{ContentType: "image/png", FileName: "remote.png", Body: io.NopCloser(bytes.NewReader(data))}, nil
}

type callerKey struct{}

// testServer runs the media API alone over a store of the backend, with a stand-in for the
// client API's middleware: the bearer token is the user ID, and users named @admin... are admins.
func testServer(t *testing.T, backend string, remote RemoteFetcher, mutate func(*config.Media)) (*API, *httptest.Server, string) {
	t.Helper()
	store := storagetest.Open(t, backend)
	cfg := config.Default().Media
	if mutate != nil {
		mutate(&cfg)
	}
	dir := t.TempDir()
	a, err := New(store, nil, Options{ServerName: "hs.test", Config: cfg, Dir: dir, Remote: remote},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	auth := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := cutBearer(r.Header.Get("Authorization"))
			if !ok {
				writeJSON(w, http.StatusUnauthorized, spec.ErrMissingToken)
				return
			}
			c := account.Caller{UserID: spec.UserID(tok), Admin: len(tok) > 6 && tok[:6] == "@admin"}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
		})
	}
	admin := func(next http.Handler) http.Handler {
		return auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !r.Context().Value(callerKey{}).(account.Caller).Admin {
				writeJSON(w, http.StatusForbidden, spec.ErrForbidden)
				return
			}
			next.ServeHTTP(w, r)
		}))
	}
	r := chi.NewRouter()
	a.Routes(r, Middleware{RequireAuth: auth, RequireAdmin: admin, RateLimited: func(h http.Handler) http.Handler { return h },
		Caller: func(r *http.Request) account.Caller {
			c, _ := r.Context().Value(callerKey{}).(account.Caller)
			return c
		}})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return a, srv, dir
}

func cutBearer(h string) (string, bool) {
	if len(h) > 7 && h[:7] == "Bearer " {
		return h[7:], true
	}
	return "", false
}

func get(t *testing.T, method, url, token string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res, data
}

func testPNG(t *testing.T, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = byte(i)
	}
	img.Set(0, 0, color.White)
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRemoteMedia(t *testing.T) {
	for _, backend := range storagetest.Backends {
		t.Run(backend, func(t *testing.T) {
			img := testPNG(t, 300, 200)
			remote := &fakeRemote{files: map[string][]byte{"other.example/pic": img, "other.example/huge": make([]byte, 5<<20)},
				delay: 50 * time.Millisecond}
			a, srv, dir := testServer(t, backend, remote, func(c *config.Media) { c.MaxUploadBytes = 4096 * 1024 })
			const user = "@alice:hs.test"

			// Ten at once: one fetch, ten answers.
			var wg sync.WaitGroup
			for range 10 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, body := get(t, "GET", srv.URL+"/_matrix/client/v1/media/download/other.example/pic", user, nil)
					if res.StatusCode != http.StatusOK || !bytes.Equal(body, img) {
						t.Errorf("remote download: %d, %d bytes", res.StatusCode, len(body))
					}
				}()
			}
			wg.Wait()
			if n := remote.calls.Load(); n != 1 {
				t.Fatalf("%d fetches, want 1", n)
			}
			// The deprecated unauthenticated endpoint serves no frozen media and fetches none.
			for _, id := range []string{"pic", "huge"} {
				if res, _ := get(t, "GET", srv.URL+"/_matrix/media/v3/download/other.example/"+id, "", nil); res.StatusCode != http.StatusNotFound {
					t.Fatalf("legacy download of remote %s: %d", id, res.StatusCode)
				}
			}
			if n := remote.calls.Load(); n != 1 {
				t.Fatalf("%d fetches after legacy requests, want 1", n)
			}
			m, err := a.store.Read().Media(context.Background(), "other.example", "pic")
			if err != nil || !m.Remote || m.Uploader != "" || !m.Restricted || m.FileName != "remote.png" {
				t.Fatalf("cached row = %+v, %v", m, err)
			}
			// Served from the cache, thumbnails too.
			if res, _ := get(t, "GET", srv.URL+"/_matrix/client/v1/media/thumbnail/other.example/pic?width=32&height=32&method=crop", user, nil); res.StatusCode != http.StatusOK {
				t.Fatalf("remote thumbnail: %d", res.StatusCode)
			}
			if n := remote.calls.Load(); n != 1 {
				t.Fatalf("%d fetches after the cache was filled, want 1", n)
			}
			if res, _ := get(t, "GET", srv.URL+"/_matrix/client/v1/media/download/other.example/none", user, nil); res.StatusCode != http.StatusNotFound {
				t.Fatalf("unknown remote media: %d", res.StatusCode)
			}

			// A local upload, which purging the remote cache leaves alone.
			res, body := get(t, "POST", srv.URL+"/_matrix/media/v3/upload", user, []byte("local"))
			if res.StatusCode != http.StatusOK {
				t.Fatalf("upload: %d %s", res.StatusCode, body)
			}
			checkThumbs := func() error {
				n, err := a.store.Read().MediaThumbnailCount(context.Background(), "other.example", "pic")
				if err != nil || n < int64(len(a.thumbSizes)) {
					return fmt.Errorf("%d thumbnails (%v)", n, err)
				}
				return nil
			}
			for deadline := time.Now().Add(10 * time.Second); checkThumbs() != nil; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal(checkThumbs())
				}
			}

			// Purge as a user: refused; as an admin, with before_ts in the past: nothing; now: the
			// remote item, its thumbnails and their blobs.
			if res, _ := get(t, "POST", srv.URL+"/_synapse/admin/v1/purge_media_cache?before_ts=1", user, nil); res.StatusCode != http.StatusForbidden {
				t.Fatalf("purge as user: %d", res.StatusCode)
			}
			res, body = get(t, "POST", srv.URL+"/_synapse/admin/v1/purge_media_cache?before_ts=1", "@admin:hs.test", nil)
			if res.StatusCode != http.StatusOK || string(body) != `{"deleted":0}` {
				t.Fatalf("purge before 1: %d %s", res.StatusCode, body)
			}
			res, body = get(t, "POST", fmt.Sprintf("%s/_synapse/admin/v1/purge_media_cache?before_ts=%d", srv.URL, time.Now().Add(time.Minute).UnixMilli()),
				"@admin:hs.test", nil)
			if res.StatusCode != http.StatusOK || string(body) != `{"deleted":1}` {
				t.Fatalf("purge: %d %s", res.StatusCode, body)
			}
			if n := countBlobs(t, dir); n != 1 {
				t.Fatalf("%d blobs after the purge, want 1 (the local upload)", n)
			}
			// Asked again, it is fetched again.
			if res, _ := get(t, "GET", srv.URL+"/_matrix/client/v1/media/download/other.example/pic", user, nil); res.StatusCode != http.StatusOK {
				t.Fatalf("download after purge: %d", res.StatusCode)
			}
			if n := remote.calls.Load(); n != 3 { // pic, none, pic again
				t.Fatalf("%d fetches, want 3", n)
			}

			// Remote media over the size limit: 502 M_TOO_LARGE, nothing kept.
			res, body = get(t, "GET", srv.URL+"/_matrix/client/v1/media/download/other.example/huge", user, nil)
			if res.StatusCode != http.StatusBadGateway || !bytes.Contains(body, []byte("M_TOO_LARGE")) {
				t.Fatalf("huge remote media: %d %s", res.StatusCode, body)
			}
			if _, err := a.store.Read().Media(context.Background(), "other.example", "huge"); err != storage.ErrNotFound {
				t.Fatalf("huge remote media recorded: %v", err)
			}
		})
	}
}

// TestNoRemoteFetcher: without federation, remote media is simply not found.
func TestNoRemoteFetcher(t *testing.T) {
	_, srv, _ := testServer(t, "sqlite", nil, nil)
	res, body := get(t, "GET", srv.URL+"/_matrix/client/v1/media/download/other.example/pic", "@alice:hs.test", nil)
	if res.StatusCode != http.StatusNotFound || !bytes.Contains(body, []byte("M_NOT_FOUND")) {
		t.Fatalf("remote media without a fetcher: %d %s", res.StatusCode, body)
	}
}

func countBlobs(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	_ = filepath.WalkDir(filepath.Join(dir, "content"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

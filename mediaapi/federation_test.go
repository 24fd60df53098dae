package mediaapi

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// fedPart is the content part of a federation media answer.
type fedPart struct {
	ctype, disposition string
	data               []byte
}

// readFederationAnswer checks the shape the spec gives a 200 answer (multipart/mixed, a JSON
// object, then the content) and returns the content part.
func readFederationAnswer(t *testing.T, res *http.Response, body []byte) fedPart {
	t.Helper()
	mt, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		t.Fatalf("Content-Type %q", res.Header.Get("Content-Type"))
	}
	if cl := res.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
		t.Fatalf("Content-Length %s for %d bytes", cl, len(body))
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if raw, _ := io.ReadAll(meta); meta.Header.Get("Content-Type") != "application/json" || json.Unmarshal(raw, &obj) != nil || obj == nil {
		t.Fatalf("first part %v %q", meta.Header, raw)
	}
	content, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(content)
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("a third part: %v", err)
	}
	return fedPart{ctype: content.Header.Get("Content-Type"), disposition: content.Header.Get("Content-Disposition"), data: data}
}

func TestFederationMediaEndpoints(t *testing.T) {
	for _, backend := range storagetest.Backends {
		t.Run(backend, func(t *testing.T) {
			img := testPNG(t, 300, 200)
			remote := &fakeRemote{files: map[string][]byte{"other.example/cached": img}}
			a, srv, _ := testServer(t, backend, remote, nil)
			const user = "@alice:hs.test"
			// The federation API's group: here a stand-in for X-Matrix that wants any header.
			r := chi.NewRouter()
			r.Route("/_matrix/federation", func(r chi.Router) {
				r.Use(func(next http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						if !strings.HasPrefix(r.Header.Get("Authorization"), "X-Matrix ") {
							writeJSON(w, http.StatusUnauthorized, spec.ErrUnauthorized)
							return
						}
						next.ServeHTTP(w, r)
					})
				})
				a.FederationRoutes(r)
			})
			fed := httptest.NewServer(r)
			t.Cleanup(fed.Close)
			fedGet := func(path string) (*http.Response, []byte) {
				t.Helper()
				req, _ := http.NewRequest("GET", fed.URL+"/_matrix/federation/v1/media/"+path, nil)
				req.Header.Set("Authorization", "X-Matrix origin=other.example")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				body, _ := io.ReadAll(res.Body)
				return res, body
			}
			wantErr := func(what string, res *http.Response, body []byte, status int, errcode string) {
				t.Helper()
				if res.StatusCode != status || !bytes.Contains(body, []byte(`"`+errcode+`"`)) {
					t.Fatalf("%s: %d %s, want %d %s", what, res.StatusCode, body, status, errcode)
				}
			}

			req, _ := http.NewRequest("POST", srv.URL+"/_matrix/media/v3/upload?filename=pic.png", bytes.NewReader(img))
			req.Header.Set("Authorization", "Bearer "+user)
			req.Header.Set("Content-Type", "image/png")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("upload: %d %s", res.StatusCode, body)
			}
			var up struct {
				ContentURI string `json:"content_uri"`
			}
			_ = json.Unmarshal(body, &up)
			id := up.ContentURI[strings.LastIndexByte(up.ContentURI, '/')+1:]

			// The content, byte for byte, with its type and name.
			res, body = fedGet("download/" + id)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("download: %d %s", res.StatusCode, body)
			}
			p := readFederationAnswer(t, res, body)
			if !bytes.Equal(p.data, img) || p.ctype != "image/png" || p.disposition != `inline; filename="pic.png"` {
				t.Fatalf("download: %q %q, %d bytes", p.ctype, p.disposition, len(p.data))
			}
			// A thumbnail, as the client endpoint makes it.
			res, body = fedGet("thumbnail/" + id + "?width=32&height=32&method=crop&animated=false")
			if res.StatusCode != http.StatusOK {
				t.Fatalf("thumbnail: %d %s", res.StatusCode, body)
			}
			p = readFederationAnswer(t, res, body)
			thumb, err := png.Decode(bytes.NewReader(p.data))
			if err != nil || p.ctype != "image/png" || thumb.Bounds().Dx() != 32 || thumb.Bounds().Dy() != 32 {
				t.Fatalf("thumbnail: %q, %v, %v", p.ctype, err, thumb)
			}
			// Not an image: no thumbnail.
			res, body = get(t, "POST", srv.URL+"/_matrix/media/v3/upload", user, []byte("text"))
			_ = json.Unmarshal(body, &up)
			textID := up.ContentURI[strings.LastIndexByte(up.ContentURI, '/')+1:]
			res, body = fedGet("thumbnail/" + textID + "?width=32&height=32")
			wantErr("thumbnail of text", res, body, http.StatusBadRequest, "M_UNKNOWN")
			res, body = fedGet("thumbnail/" + id + "?width=32")
			wantErr("thumbnail without height", res, body, http.StatusBadRequest, "M_MISSING_PARAM")

			// Media of another server, even cached here, is not served to servers.
			if res, _ := get(t, "GET", srv.URL+"/_matrix/client/v1/media/download/other.example/cached", user, nil); res.StatusCode != http.StatusOK {
				t.Fatalf("caching remote media: %d", res.StatusCode)
			}
			res, body = fedGet("download/cached")
			wantErr("cached remote media", res, body, http.StatusNotFound, "M_NOT_FOUND")
			res, body = fedGet("thumbnail/cached?width=32&height=32")
			wantErr("thumbnail of cached remote media", res, body, http.StatusNotFound, "M_NOT_FOUND")
			res, body = fedGet("download/unknown")
			wantErr("unknown media", res, body, http.StatusNotFound, "M_NOT_FOUND")
			res, body = fedGet("download/bad.id")
			wantErr("invalid media ID", res, body, http.StatusBadRequest, "M_INVALID_PARAM")

			// An ID still waiting for its upload: 504 M_NOT_YET_UPLOADED after timeout_ms.
			res, body = get(t, "POST", srv.URL+"/_matrix/media/v1/create", user, nil)
			_ = json.Unmarshal(body, &up)
			pending := up.ContentURI[strings.LastIndexByte(up.ContentURI, '/')+1:]
			res, body = fedGet("download/" + pending + "?timeout_ms=0")
			wantErr("pending media", res, body, http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")

			// Deleted media is gone for servers too.
			if err := a.Delete(context.Background(), "hs.test", id); err != nil {
				t.Fatal(err)
			}
			res, body = fedGet("download/" + id)
			wantErr("deleted media", res, body, http.StatusNotFound, "M_NOT_FOUND")

			// Behind the group's authentication.
			res, body = get(t, "GET", fed.URL+"/_matrix/federation/v1/media/download/"+textID, "", nil)
			wantErr("unauthenticated", res, body, http.StatusUnauthorized, "M_UNAUTHORIZED")
		})
	}
}

package mediaapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestFederationDownloadHeaderOrder pins what Synapse (1.163) needs of a federation media answer
// to keep the file name: in the content part, Content-Type comes before Content-Disposition.
// Synapse's multipart reader remembers "the next value is a content type" from the JSON part's
// header, so with Content-Disposition first (what Go's multipart.Writer.CreatePart writes, keys
// sorted) it stored the disposition as the type and our media arrived there without a name.
func TestFederationDownloadHeaderOrder(t *testing.T) {
	for _, backend := range storagetest.Backends {
		t.Run(backend, func(t *testing.T) {
			a, srv, _ := testServer(t, backend, &fakeRemote{}, nil)
			r := chi.NewRouter()
			r.Route("/_matrix/federation", a.FederationRoutes)
			fed := httptest.NewServer(r)
			t.Cleanup(fed.Close)

			req, _ := http.NewRequest("POST", srv.URL+"/_matrix/media/v3/upload?filename=blob%20one.bin", strings.NewReader("some bytes"))
			req.Header.Set("Authorization", "Bearer @alice:hs.test")
			req.Header.Set("Content-Type", "application/octet-stream")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			var up struct {
				ContentURI string `json:"content_uri"`
			}
			if res.StatusCode != http.StatusOK || json.Unmarshal(body, &up) != nil {
				t.Fatalf("upload: %d %s", res.StatusCode, body)
			}
			id := up.ContentURI[strings.LastIndexByte(up.ContentURI, '/')+1:]

			res, err = http.Get(fed.URL + "/_matrix/federation/v1/media/download/" + id)
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("download: %d %s", res.StatusCode, body)
			}
			p := readFederationAnswer(t, res, body)
			if string(p.data) != "some bytes" || p.ctype != "application/octet-stream" || p.disposition != `attachment; filename="blob one.bin"` {
				t.Fatalf("content part: %q %q %q", p.ctype, p.disposition, p.data)
			}
			// The content part's header block, as written: type first, then disposition.
			second := bytes.Index(body, []byte("application/json"))
			head := body[second:]
			head = head[bytes.Index(head, []byte("\r\n--")):]
			head = head[:bytes.Index(head, []byte("\r\n\r\n"))]
			lines := strings.Split(string(head), "\r\n")
			if len(lines) != 4 || !strings.HasPrefix(lines[2], "Content-Type: ") || !strings.HasPrefix(lines[3], "Content-Disposition: ") {
				t.Fatalf("content part headers %q, want Content-Type then Content-Disposition", lines)
			}
		})
	}
}

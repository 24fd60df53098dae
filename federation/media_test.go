package federation_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/cert"
	"github.com/hearthmx/homeserver/federation/xmatrix"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// Media over federation: bob@hs2 downloads what alice@hs1 uploaded through his own server,
// which fetches it with /_matrix/federation/v1/media/download, caches it and thumbnails it.

// redBlue is a PNG, red on its left half and blue on its right.
func redBlue(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{R: 255, A: 255}
			if x >= w/2 {
				c = color.RGBA{B: 255, A: 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mediaGet GETs a client API path of hs with a token and returns the answer's body too.
func mediaGet(t *testing.T, hs *servertest.Server, token, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", hs.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func wantMediaError(t *testing.T, what string, res *http.Response, body []byte, status int, errcode string) {
	t.Helper()
	if res.StatusCode != status || !bytes.Contains(body, []byte(`"errcode":"`+errcode+`"`)) {
		t.Fatalf("%s: %d %s, want %d %s", what, res.StatusCode, body, status, errcode)
	}
}

func TestMediaOverFederation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		ca := servertest.NewCA(t)
		hs1 := servertest.Start(t, backend, servertest.Federated(t, ca, ip1))
		hs2 := servertest.Start(t, backend, servertest.Federated(t, ca, ip2), func(c *config.Config) { c.Media.MaxUploadBytes = 1 << 20 })
		name1, name2 := hs1.Config.ServerName, hs2.Config.ServerName
		alice := hs1.Register(t, "alice", "alice-password-1")
		bob := hs2.Register(t, "bob", "bob-password-12")

		// alice uploads a picture to hs1.
		img := redBlue(t, 200, 100)
		req, _ := http.NewRequest("POST", hs1.URL+"/_matrix/media/v3/upload?filename=pic.png", bytes.NewReader(img))
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		req.Header.Set("Content-Type", "image/png")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		mxc := string(raw)
		if i := strings.Index(mxc, "mxc://"+name1+"/"); res.StatusCode != 200 || i < 0 {
			t.Fatalf("upload: %d %s", res.StatusCode, raw)
		}
		mediaID := strings.Split(strings.SplitN(mxc, "mxc://"+name1+"/", 2)[1], `"`)[0]
		download := "/_matrix/client/v1/media/download/" + name1 + "/" + mediaID

		// bob, through hs2: the same bytes, type and name.
		checkDownload := func(what string) {
			t.Helper()
			res, body := mediaGet(t, hs2, bob.AccessToken, download)
			if res.StatusCode != 200 || !bytes.Equal(body, img) || res.Header.Get("Content-Type") != "image/png" ||
				res.Header.Get("Content-Disposition") != `inline; filename="pic.png"` {
				t.Fatalf("%s: %d %q %q, %d bytes", what, res.StatusCode, res.Header.Get("Content-Type"),
					res.Header.Get("Content-Disposition"), len(body))
			}
		}
		checkDownload("download through hs2")
		// A thumbnail made by hs2: the centre of the picture at the size asked, red left, blue right.
		checkThumbnail := func(what string, size int) {
			t.Helper()
			res, body := mediaGet(t, hs2, bob.AccessToken, fmt.Sprintf("/_matrix/client/v1/media/thumbnail/%s/%s?width=%d&height=%d&method=crop",
				name1, mediaID, size, size))
			if res.StatusCode != 200 {
				t.Fatalf("%s: %d %s", what, res.StatusCode, body)
			}
			thumb, err := png.Decode(bytes.NewReader(body))
			if err != nil || thumb.Bounds().Dx() != size || thumb.Bounds().Dy() != size {
				t.Fatalf("%s: %v %v", what, err, thumb)
			}
			left, right := thumb.At(size/8, size/2), thumb.At(size-1-size/8, size/2)
			if r, g, b, _ := left.RGBA(); r < 0xc000 || g > 0x4000 || b > 0x4000 {
				t.Fatalf("%s: left pixel %v, want red", what, left)
			}
			if r, g, b, _ := right.RGBA(); b < 0xc000 || r > 0x4000 || g > 0x4000 {
				t.Fatalf("%s: right pixel %v, want blue", what, right)
			}
		}
		checkThumbnail("thumbnail through hs2", 32)
		res, body := mediaGet(t, hs2, bob.AccessToken, "/_matrix/client/v1/media/download/"+name1+"/NoSuchMedia")
		wantMediaError(t, "unknown media of hs1", res, body, 404, "M_NOT_FOUND")

		// hs1's federation endpoint: signed requests only; hs2 serves servers only its own media.
		fedPath := "/_matrix/federation/v1/media/download/" + mediaID
		if r := fedDo(t, ca, hs1, "GET", fedPath, nil, ""); r.Status != 401 || r.Errcode() != "M_UNAUTHORIZED" {
			t.Fatalf("unsigned federation download: %d %s", r.Status, r.Raw)
		}
		thumbPath := "/_matrix/federation/v1/media/thumbnail/" + mediaID + "?width=32&height=32"
		if r := fedDo(t, ca, hs1, "GET", thumbPath, nil, ""); r.Status != 401 || r.Errcode() != "M_UNAUTHORIZED" {
			t.Fatalf("unsigned federation thumbnail: %d %s", r.Status, r.Raw)
		}
		sign := func(uri, origin, dest string, s *servertest.Server) string {
			h, err := xmatrix.Sign(xmatrix.Request{Method: "GET", URI: uri, Origin: origin, Destination: dest}, s.Key.ID, s.Key.Private)
			if err != nil {
				t.Fatal(err)
			}
			return h
		}
		if r := fedDo(t, ca, hs1, "GET", fedPath, nil, sign(fedPath, name2, name1, hs2)); r.Status != 200 ||
			!strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/mixed; boundary=") || !bytes.Contains(r.Raw, img) {
			t.Fatalf("signed federation download: %d %q", r.Status, r.Header.Get("Content-Type"))
		}
		if r := fedDo(t, ca, hs2, "GET", fedPath, nil, sign(fedPath, name1, name2, hs1)); r.Status != 404 || r.Errcode() != "M_NOT_FOUND" {
			t.Fatalf("hs2 asked for hs1's media it cached: %d %s", r.Status, r.Raw)
		}

		// Servers that answer otherwise: an older one (legacy endpoint), one that redirects,
		// content over hs2's limit, media it does not have.
		old := newMediaServer(t, ca, "127.0.0.4", img)
		for id, want := range map[string]string{"old": "legacy", "moved": "cdn"} {
			res, body := mediaGet(t, hs2, bob.AccessToken, "/_matrix/client/v1/media/download/"+old.name+"/"+id)
			if res.StatusCode != 200 || !bytes.Equal(body, img) || res.Header.Get("Content-Type") != "image/png" ||
				res.Header.Get("Content-Disposition") != `inline; filename="`+want+`.png"` {
				t.Fatalf("%s: %d %q %q %d bytes", id, res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Content-Disposition"), len(body))
			}
		}
		if got := old.get("legacy"); got != "allow_remote=false unsigned" {
			t.Fatalf("legacy download: %s", got)
		}
		if got := old.get("cdn"); got != "unsigned" {
			t.Fatalf("Location followed: %s", got)
		}
		res, body = mediaGet(t, hs2, bob.AccessToken, "/_matrix/client/v1/media/download/"+old.name+"/huge")
		wantMediaError(t, "content over hs2's limit", res, body, 502, "M_TOO_LARGE")
		// hs2 hung up once past its limit (what was written includes the sockets' buffers).
		if n := old.sentHuge(t); n > 32<<20 {
			t.Fatalf("hs2 read %d bytes of an endless answer", n)
		}
		res, body = mediaGet(t, hs2, bob.AccessToken, "/_matrix/client/v1/media/download/"+old.name+"/gone")
		wantMediaError(t, "media the server does not have", res, body, 404, "M_NOT_FOUND")

		// With hs1 stopped, hs2 serves the copy it cached, thumbnails included.
		hs1.Stop()
		checkDownload("download from hs2's cache")
		checkThumbnail("another thumbnail from hs2's cache", 96)
		res, body = mediaGet(t, hs2, bob.AccessToken, "/_matrix/client/v1/media/download/"+name1+"/NotCachedEither")
		wantMediaError(t, "uncached media of a stopped server", res, body, 502, "M_UNKNOWN")
	})
}

// mediaServer is another server's federation listener, answering media downloads as servers
// other than ours may: mediaId "old" with 404 M_UNRECOGNIZED (then the legacy endpoint), "moved"
// with a Location, "huge" with endless content, anything else 404 M_NOT_FOUND.
type mediaServer struct {
	name string
	mu   sync.Mutex
	seen map[string]string // what the legacy and cdn requests looked like
	huge int64             // bytes of the endless answer written
}

func newMediaServer(t *testing.T, ca *servertest.CA, ip string, content []byte) *mediaServer {
	c, err := cert.Issue(ca.CertPEM, ca.KeyPEM, []string{ip})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	m := &mediaServer{name: l.Addr().String(), seen: map[string]string{}}
	signed := func(r *http.Request) string {
		if strings.HasPrefix(r.Header.Get("Authorization"), "X-Matrix ") {
			return "signed"
		}
		return "unsigned"
	}
	multipartAnswer := func(w http.ResponseWriter, h textproto.MIMEHeader, body io.Reader) int64 {
		mw := multipart.NewWriter(w)
		w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
		p, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
		_, _ = p.Write([]byte("{}"))
		p, _ = mw.CreatePart(h)
		n, _ := io.Copy(p, body)
		_ = mw.Close()
		return n
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		write := func(status int, body string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
		}
		fed, isFed := strings.CutPrefix(r.URL.Path, "/_matrix/federation/v1/media/download/")
		if isFed && signed(r) != "signed" {
			write(401, `{"errcode":"M_UNAUTHORIZED","error":"sign it"}`)
			return
		}
		switch {
		case isFed && fed == "old":
			write(404, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)
		case isFed && fed == "moved":
			multipartAnswer(w, textproto.MIMEHeader{"Location": {"https://" + m.name + "/cdn/moved.png?sig=x"}}, strings.NewReader(""))
		case isFed && fed == "huge":
			n := multipartAnswer(w, textproto.MIMEHeader{"Content-Type": {"application/octet-stream"}}, endlessReader{r})
			m.mu.Lock()
			m.huge = n
			m.mu.Unlock()
		case r.URL.Path == "/_matrix/media/v3/download/"+m.name+"/old":
			m.record("legacy", r.URL.RawQuery+" "+signed(r))
			w.Header().Set("Content-Type", "image/png")
			w.Header().Set("Content-Disposition", `inline; filename="legacy.png"`)
			_, _ = w.Write(content)
		case r.URL.Path == "/cdn/moved.png" && r.URL.RawQuery == "sig=x":
			m.record("cdn", signed(r))
			w.Header().Set("Content-Type", "image/png")
			w.Header().Set("Content-Disposition", `inline; filename="cdn.png"`)
			_, _ = w.Write(content)
		default:
			write(404, `{"errcode":"M_NOT_FOUND","error":"Not found"}`)
		}
	}))
	s.Listener.Close()
	s.Listener = l
	s.TLS = &tls.Config{Certificates: []tls.Certificate{c}}
	s.StartTLS()
	t.Cleanup(s.Close)
	return m
}

func (m *mediaServer) record(what, how string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen[what] = how
}

func (m *mediaServer) get(what string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seen[what]
}

// sentHuge is how much of the endless answer was written before hs2 hung up.
func (m *mediaServer) sentHuge(t *testing.T) int64 {
	var n int64
	servertest.Eventually(t, 10*time.Second, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if n = m.huge; n == 0 {
			return fmt.Errorf("the endless answer has not ended")
		}
		return nil
	})
	return n
}

// endlessReader yields bytes until the request is over (the other side hung up).
type endlessReader struct{ r *http.Request }

func (e endlessReader) Read(p []byte) (int, error) {
	if err := e.r.Context().Err(); err != nil {
		return 0, err
	}
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

package mediaapi_test

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// resp is a response of the media API.
type resp struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

func (r resp) errcode() string { s, _ := r.JSON["errcode"].(string); return s }

func (r resp) str(key string) string { s, _ := r.JSON[key].(string); return s }

// request sends body as is (nil: none) with the given headers (name, value, name, value, ...).
func request(t testing.TB, s *servertest.Server, method, path, token string, body []byte, headers ...string) resp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := resp{Status: res.StatusCode, Header: res.Header, Body: data}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(data, &r.JSON)
	}
	return r
}

// upload uploads data with POST /_matrix/media/v3/upload and returns its mxc URI.
func upload(t testing.TB, s *servertest.Server, token, ctype string, data []byte, filename string) string {
	t.Helper()
	path := "/_matrix/media/v3/upload"
	if filename != "" {
		path += "?filename=" + url.QueryEscape(filename)
	}
	r := request(t, s, "POST", path, token, data, "Content-Type", ctype)
	if r.Status != http.StatusOK || !strings.HasPrefix(r.str("content_uri"), "mxc://") {
		t.Fatalf("upload: %d %s", r.Status, r.Body)
	}
	return r.str("content_uri")
}

// mediaPath is "serverName/mediaId" of an mxc URI.
func mediaPath(t testing.TB, mxc string) string {
	t.Helper()
	p, ok := strings.CutPrefix(mxc, "mxc://")
	if !ok || strings.Count(p, "/") != 1 {
		t.Fatalf("bad mxc URI %q", mxc)
	}
	return p
}

// download GETs the content of mxc through the authenticated endpoint.
func download(t testing.TB, s *servertest.Server, token, mxc string, headers ...string) resp {
	t.Helper()
	return request(t, s, "GET", "/_matrix/client/v1/media/download/"+mediaPath(t, mxc), token, nil, headers...)
}

func wantError(t testing.TB, what string, r resp, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.errcode() != errcode {
		t.Fatalf("%s: got %d %s, want %d %s", what, r.Status, r.Body, status, errcode)
	}
}

// splitImage is a w x h image, red on the left half and blue on the right.
func splitImage(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{R: 255, A: 255}
			if x >= w/2 {
				c = color.RGBA{B: 255, A: 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// encodeGIF makes a two-frame GIF: the split image, then an all-green frame.
func encodeGIF(t testing.TB, w, h int) []byte {
	t.Helper()
	pal := color.Palette{color.RGBA{R: 255, A: 255}, color.RGBA{B: 255, A: 255}, color.RGBA{G: 255, A: 255}}
	first := image.NewPaletted(image.Rect(0, 0, w, h), pal)
	second := image.NewPaletted(image.Rect(0, 0, w, h), pal)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if x >= w/2 {
				first.SetColorIndex(x, y, 1)
			}
			second.SetColorIndex(x, y, 2)
		}
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, &gif.GIF{Image: []*image.Paletted{first, second}, Delay: []int{10, 10}}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// isRed / isBlue tell the split image's colours apart, allowing for JPEG's losses.
func isRed(c color.Color) bool {
	r, g, b, _ := c.RGBA()
	return r > 0xc000 && g < 0x4000 && b < 0x4000
}

func isBlue(c color.Color) bool {
	r, g, b, _ := c.RGBA()
	return b > 0xc000 && r < 0x4000 && g < 0x4000
}

package mediaapi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// thumb GETs a thumbnail through the authenticated endpoint.
func thumb(t testing.TB, s *servertest.Server, token, mxc string, w, h int, method string) resp {
	t.Helper()
	return request(t, s, "GET", fmt.Sprintf("/_matrix/client/v1/media/thumbnail/%s?width=%d&height=%d&method=%s", mediaPath(t, mxc), w, h, method), token, nil)
}

func decodeThumb(t testing.TB, what string, r resp) image.Image {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("%s: %d %s", what, r.Status, r.Body)
	}
	img, format, err := image.Decode(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r.Header.Get("Content-Type") != "image/"+format {
		t.Fatalf("%s: Content-Type %q for a %s", what, r.Header.Get("Content-Type"), format)
	}
	if d := r.Header.Get("Content-Disposition"); !strings.HasPrefix(d, `inline; filename="thumbnail.`) {
		t.Fatalf("%s: Content-Disposition %q", what, d)
	}
	return img
}

// wantSplit checks a thumbnail of the split image: the size, red on the left edge and blue on
// the right.
func wantSplit(t testing.TB, what string, img image.Image, w, h int) {
	t.Helper()
	b := img.Bounds()
	if b.Dx() != w || b.Dy() != h {
		t.Fatalf("%s: %dx%d, want %dx%d", what, b.Dx(), b.Dy(), w, h)
	}
	for _, y := range []int{b.Min.Y, b.Min.Y + h/2, b.Max.Y - 1} {
		if c := img.At(b.Min.X+1, y); !isRed(c) {
			t.Fatalf("%s: left pixel at y=%d is %v, want red", what, y, c)
		}
		if c := img.At(b.Max.X-2, y); !isBlue(c) {
			t.Fatalf("%s: right pixel at y=%d is %v, want blue", what, y, c)
		}
	}
}

func TestThumbnails(t *testing.T) {
	webp, err := os.ReadFile("testdata/split-1000x500.webp")
	if err != nil {
		t.Fatal(err)
	}
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bob := s.Register(t, "bob", "bob password")
		for _, src := range []struct {
			name, ctype string
			data        []byte
			out         string
		}{
			{"png", "image/png", encodePNG(t, splitImage(1000, 500)), "png"},
			{"jpeg", "image/jpeg", encodeJPEG(t, splitImage(1000, 500)), "jpeg"},
			{"gif", "image/gif", encodeGIF(t, 1000, 500), "png"}, // first frame, as a still PNG
			{"webp", "image/webp", webp, "png"},
		} {
			mxc := upload(t, s, alice.AccessToken, src.ctype, src.data, "")
			for _, c := range []struct {
				w, h         int
				method       string
				wantW, wantH int
			}{
				// scale keeps the aspect ratio inside the box; crop fills the box.
				{320, 240, "scale", 320, 160},
				{800, 600, "scale", 800, 400},
				{32, 32, "crop", 32, 32},
				{96, 96, "crop", 96, 96},
				// Rounded up to the smallest configured size that is as large: never smaller.
				{90, 90, "crop", 96, 96},
				{300, 200, "scale", 320, 160},
				// No configured size is as large: made at the size asked.
				{900, 300, "scale", 600, 300},
				{200, 100, "crop", 200, 100},
				{300, 400, "crop", 300, 400},
				// Larger than the image: never upscaled.
				{2000, 2000, "scale", 1000, 500},
			} {
				what := fmt.Sprintf("%s %dx%d %s", src.name, c.w, c.h, c.method)
				r := thumb(t, s, bob.AccessToken, mxc, c.w, c.h, c.method)
				wantSplit(t, what, decodeThumb(t, what, r), c.wantW, c.wantH)
				if r.Header.Get("Content-Type") != "image/"+src.out {
					t.Fatalf("%s: thumbnail type %q", what, r.Header.Get("Content-Type"))
				}
			}
		}

		// An image smaller than asked is its own thumbnail (JPEG and PNG).
		small := encodePNG(t, splitImage(20, 10))
		mxc := upload(t, s, alice.AccessToken, "image/png", small, "")
		if r := thumb(t, s, bob.AccessToken, mxc, 32, 32, "crop"); r.Status != http.StatusOK || !bytes.Equal(r.Body, small) {
			t.Fatalf("small image: %d, %d bytes, want the original", r.Status, len(r.Body))
		}

		// The configured sizes are made once, right after the upload.
		mxc = upload(t, s, alice.AccessToken, "image/jpeg", encodeJPEG(t, splitImage(1600, 1200)), "")
		_, id, _ := strings.Cut(mediaPath(t, mxc), "/")
		servertest.Eventually(t, 20e9, func() error {
			n, err := s.Store.Read().MediaThumbnailCount(context.Background(), "localhost", id)
			if err != nil || n != int64(len(s.Config.Media.Thumbnails.Sizes)) {
				return fmt.Errorf("%d thumbnails made (%v), want %d", n, err, len(s.Config.Media.Thumbnails.Sizes))
			}
			return nil
		})
		wantSplit(t, "pre-made 800x600", decodeThumb(t, "jpeg", thumb(t, s, bob.AccessToken, mxc, 800, 600, "scale")), 800, 600)
		wantSplit(t, "pre-made 320x240", decodeThumb(t, "jpeg", thumb(t, s, bob.AccessToken, mxc, 300, 200, "scale")), 320, 240)

		// Not an image: 400; bad parameters: 400.
		audio := upload(t, s, alice.AccessToken, "audio/ogg", []byte("OggS not an image"), "")
		wantError(t, "thumbnail of audio", thumb(t, s, bob.AccessToken, audio, 32, 32, "crop"), http.StatusBadRequest, "M_UNKNOWN")
		liar := upload(t, s, alice.AccessToken, "image/png", []byte("<html>not a png</html>"), "")
		wantError(t, "thumbnail of a fake PNG", thumb(t, s, bob.AccessToken, liar, 32, 32, "crop"), http.StatusBadRequest, "M_UNKNOWN")
		base := "/_matrix/client/v1/media/thumbnail/" + mediaPath(t, mxc)
		wantError(t, "no width", request(t, s, "GET", base+"?height=32", bob.AccessToken, nil), http.StatusBadRequest, "M_MISSING_PARAM")
		wantError(t, "negative width", request(t, s, "GET", base+"?width=-1&height=32", bob.AccessToken, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		wantError(t, "bad method", request(t, s, "GET", base+"?width=32&height=32&method=zoom", bob.AccessToken, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// hugePNG is a valid PNG header claiming w x h pixels, with a tiny image body: decoding it would
// take w*h*4 bytes.
func hugePNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		_ = binary.Write(&b, binary.BigEndian, uint32(len(data)))
		c := crc32.NewIEEE()
		c.Write([]byte(typ))
		c.Write(data)
		b.WriteString(typ)
		b.Write(data)
		_ = binary.Write(&b, binary.BigEndian, c.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01}) // an empty zlib stream
	chunk("IEND", nil)
	return b.Bytes()
}

func TestDecompressionBomb(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		bomb := hugePNG(20000, 20000) // 400 megapixels, 1.6 GB decoded
		if len(bomb) > 100 {
			t.Fatalf("the bomb is %d bytes", len(bomb))
		}
		mxc := upload(t, s, alice.AccessToken, "image/png", bomb, "bomb.png")
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for _, method := range []string{"scale", "crop"} {
			wantError(t, "thumbnail of 20000x20000 ("+method+")", thumb(t, s, alice.AccessToken, mxc, 320, 240, method),
				http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		}
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
			t.Fatalf("refusing the bomb allocated %d MB", grew>>20)
		}
		// The file itself is still served as uploaded.
		if r := download(t, s, alice.AccessToken, mxc); r.Status != http.StatusOK || !bytes.Equal(r.Body, bomb) {
			t.Fatalf("download: %d", r.Status)
		}
	})
}

package mediaapi

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

func TestThumbnailBox(t *testing.T) {
	for _, c := range []struct {
		w, h, reqW, reqH int
		method           string
		outW, outH       int
		src              image.Rectangle
	}{
		{1000, 500, 320, 240, "scale", 320, 160, image.Rect(0, 0, 1000, 500)},
		{500, 1000, 320, 240, "scale", 120, 240, image.Rect(0, 0, 500, 1000)},
		{100, 50, 320, 240, "scale", 100, 50, image.Rect(0, 0, 100, 50)},     // never upscaled
		{1000, 500, 96, 96, "crop", 96, 96, image.Rect(250, 0, 750, 500)},    // the centre square
		{500, 1000, 96, 96, "crop", 96, 96, image.Rect(0, 250, 500, 750)},    // likewise, tall
		{100, 50, 96, 96, "crop", 50, 50, image.Rect(25, 0, 75, 50)},         // no upscaling
		{1000, 500, 200, 100, "crop", 200, 100, image.Rect(0, 0, 1000, 500)}, // same aspect
		{3, 10000, 32, 32, "crop", 3, 3, image.Rect(0, 4998, 3, 5001)},
		{10000, 1, 32, 32, "scale", 32, 1, image.Rect(0, 0, 10000, 1)}, // at least one pixel high
	} {
		w, h, src := thumbnailBox(c.w, c.h, c.reqW, c.reqH, c.method)
		if w != c.outW || h != c.outH || src != c.src {
			t.Errorf("%dx%d as %dx%d %s = %dx%d of %v, want %dx%d of %v", c.w, c.h, c.reqW, c.reqH, c.method, w, h, src, c.outW, c.outH, c.src)
		}
	}
}

func TestProbeImage(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 7, 5))
	var p, j bytes.Buffer
	_ = png.Encode(&p, img)
	_ = jpeg.Encode(&j, img, nil)
	for _, c := range []struct {
		data   []byte
		format string
	}{{p.Bytes(), "png"}, {j.Bytes(), "jpeg"}} {
		info, err := probeImage(bytes.NewReader(c.data))
		if err != nil || info != (imageInfo{format: c.format, width: 7, height: 5}) {
			t.Errorf("%s: %+v, %v", c.format, info, err)
		}
	}
	for _, bad := range [][]byte{nil, []byte("GIF89a"), []byte("\x89PNG\r\n\x1a\n garbage"), []byte("<svg/>")} {
		if _, err := probeImage(bytes.NewReader(bad)); err != errNotImage {
			t.Errorf("probe %q: %v, want errNotImage", bad, err)
		}
	}
}

// BenchmarkThumbnail is one thumbnail made from a photo-like JPEG: decode, scale, encode (what
// a request for a size not made yet costs; the configured sizes share one decode).
func BenchmarkThumbnail(b *testing.B) {
	for _, src := range []struct{ w, h int }{{1920, 1080}, {4000, 3000}} {
		img := image.NewRGBA(image.Rect(0, 0, src.w, src.h))
		for y := 0; y < src.h; y++ {
			for x := 0; x < src.w; x++ {
				img.SetRGBA(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
			}
		}
		var buf bytes.Buffer
		_ = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85})
		data := buf.Bytes()
		for _, size := range []struct {
			w, h   int
			method string
		}{{320, 240, "scale"}, {96, 96, "crop"}} {
			b.Run(fmt.Sprintf("jpeg%dx%d-to-%dx%d-%s", src.w, src.h, size.w, size.h, size.method), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					r := bytes.NewReader(data)
					info, err := probeImage(r)
					if err != nil {
						b.Fatal(err)
					}
					decoded, err := decodeImage(r, info)
					if err != nil {
						b.Fatal(err)
					}
					if _, _, err := renderThumbnail(decoded, info.format, size.w, size.h, size.method); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkThumbnailSet is what an uploaded photo costs in the background: one decode and the
// five default sizes.
func BenchmarkThumbnailSet(b *testing.B) {
	for _, src := range []struct{ w, h int }{{1920, 1080}, {4000, 3000}} {
		img := image.NewRGBA(image.Rect(0, 0, src.w, src.h))
		for y := 0; y < src.h; y++ {
			for x := 0; x < src.w; x++ {
				img.SetRGBA(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
			}
		}
		var buf bytes.Buffer
		_ = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85})
		data := buf.Bytes()
		b.Run(fmt.Sprintf("jpeg%dx%d", src.w, src.h), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				r := bytes.NewReader(data)
				info, _ := probeImage(r)
				decoded, err := decodeImage(r, info)
				if err != nil {
					b.Fatal(err)
				}
				for _, s := range []struct {
					w, h   int
					method string
				}{{32, 32, "crop"}, {96, 96, "crop"}, {320, 240, "scale"}, {640, 480, "scale"}, {800, 600, "scale"}} {
					if _, _, err := renderThumbnail(decoded, info.format, s.w, s.h, s.method); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

package mediaapi

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"

	"golang.org/x/image/draw"
	"golang.org/x/image/webp"
)

// Thumbnailing, the pure part: from an image's bytes to a thumbnail's bytes. The image is
// decoded only after its header says how large it is, so a small file that claims to be a huge
// image (a decompression bomb) is refused before any pixel memory is taken.

var (
	// errNotImage: the content is not an image this server thumbnails (JPEG, PNG, GIF, WebP).
	errNotImage = errors.New("mediaapi: cannot thumbnail this content")
	// errImageTooLarge: the image has more pixels than media.thumbnails.max_pixels.
	errImageTooLarge = errors.New("mediaapi: image too large to thumbnail")
)

// thumbnailable are the content types thumbnails are made of.
var thumbnailable = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// decoders by the format name image.DecodeConfig reports.
var decoders = map[string]struct {
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}{
	"jpeg": {jpeg.DecodeConfig, jpeg.Decode},
	"png":  {png.DecodeConfig, png.Decode},
	"gif":  {gif.DecodeConfig, gif.Decode}, // gif.Decode stops after the first frame
	"webp": {webp.DecodeConfig, webp.Decode},
}

// sniffFormat names the image format from the magic bytes, whatever the uploader said.
func sniffFormat(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte("\xff\xd8\xff")):
		return "jpeg"
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case bytes.HasPrefix(head, []byte("GIF87a")), bytes.HasPrefix(head, []byte("GIF89a")):
		return "gif"
	case len(head) >= 12 && string(head[0:4]) == "RIFF" && string(head[8:12]) == "WEBP":
		return "webp"
	}
	return ""
}

// imageInfo is what an image's header says.
type imageInfo struct {
	format        string
	width, height int
}

// probeImage reads the header of the image r holds (and seeks back to its start).
func probeImage(r io.ReadSeeker) (imageInfo, error) {
	head := make([]byte, 16)
	n, _ := io.ReadFull(r, head)
	format := sniffFormat(head[:n])
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return imageInfo{}, err
	}
	dec, ok := decoders[format]
	if !ok {
		return imageInfo{}, errNotImage
	}
	cfg, err := dec.config(r)
	if _, serr := r.Seek(0, io.SeekStart); serr != nil {
		return imageInfo{}, serr
	}
	if err != nil || cfg.Width < 1 || cfg.Height < 1 {
		return imageInfo{}, errNotImage
	}
	return imageInfo{format: format, width: cfg.Width, height: cfg.Height}, nil
}

// thumbnailBox is the output size of a thumbnail of a w x h image asked for reqW x reqH with
// method, and the part of the image it shows. Nothing is upscaled: "scale" fits the image inside
// the requested box keeping its aspect ratio; "crop" cuts the largest centred region with the
// requested aspect ratio and scales it down to the requested size (or keeps it if smaller).
func thumbnailBox(w, h, reqW, reqH int, method string) (outW, outH int, src image.Rectangle) {
	src = image.Rect(0, 0, w, h)
	if method == "crop" {
		cw, ch := w, h
		if w*reqH > h*reqW { // wider than asked: cut the sides
			cw = max(1, (h*reqW+reqH/2)/reqH)
		} else { // taller: cut top and bottom
			ch = max(1, (w*reqH+reqW/2)/reqW)
		}
		x0, y0 := (w-cw)/2, (h-ch)/2
		src = image.Rect(x0, y0, x0+cw, y0+ch)
		if cw <= reqW && ch <= reqH {
			return cw, ch, src
		}
		return reqW, reqH, src
	}
	if w <= reqW && h <= reqH {
		return w, h, src
	}
	if w*reqH > h*reqW { // width is the limit
		return reqW, max(1, (h*reqW+w/2)/w), src
	}
	return max(1, (w*reqH+h/2)/h), reqH, src
}

// decodeImage decodes the image r holds, whose header probeImage read as info (and checked
// against the pixel limit: decoding takes about 4 bytes a pixel).
func decodeImage(r io.Reader, info imageInfo) (image.Image, error) {
	img, err := decoders[info.format].decode(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNotImage, err)
	}
	return img, nil
}

// renderThumbnail makes a thumbnail of src for reqW x reqH with method: JPEG for JPEG sources
// (format), PNG for the others (they may be transparent). GIFs and WebPs give a still image of
// their first frame.
func renderThumbnail(src image.Image, format string, reqW, reqH int, method string) ([]byte, string, error) {
	b := src.Bounds()
	outW, outH, region := thumbnailBox(b.Dx(), b.Dy(), reqW, reqH, method)
	region = region.Add(b.Min)
	dst := image.NewRGBA(image.Rect(0, 0, outW, outH))
	if region.Dx() == outW && region.Dy() == outH {
		draw.Draw(dst, dst.Bounds(), src, region.Min, draw.Src)
	} else {
		// A large reduction first averages k x k blocks (cheap, and every source pixel counts),
		// then scales the rest of the way with a bilinear kernel.
		if k := min(region.Dx()/(2*outW), region.Dy()/(2*outH)); k >= 2 {
			if mid := boxShrink(src, region, k); mid != nil {
				src, region = mid, mid.Bounds()
			}
		}
		// x/image/draw's kernels widen their support with the scale factor, so a downscale
		// averages every source pixel instead of aliasing.
		draw.BiLinear.Scale(dst, dst.Bounds(), src, region, draw.Src, nil)
	}
	var buf bytes.Buffer
	if format == "jpeg" {
		if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 85}); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), "image/jpeg", nil
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, dst); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "image/png", nil
}

// boxShrink returns region r of src reduced k times in each direction, each pixel the average of
// a k x k block: for YCbCr (JPEG) and RGBA/NRGBA (PNG) images, nil for other kinds (the caller
// then scales directly). Averaging YCbCr before converting gives the same colours as converting
// first, since the conversion is affine.
func boxShrink(src image.Image, r image.Rectangle, k int) *image.RGBA {
	w, h := r.Dx()/k, r.Dy()/k
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	n := uint32(k * k)
	switch s := src.(type) {
	case *image.YCbCr:
		// Column offsets into Y and into Cb/Cr, by the chroma subsampling.
		cdivX, cdivY := 1, 1
		switch s.SubsampleRatio {
		case image.YCbCrSubsampleRatio422:
			cdivX = 2
		case image.YCbCrSubsampleRatio420:
			cdivX, cdivY = 2, 2
		case image.YCbCrSubsampleRatio440:
			cdivY = 2
		case image.YCbCrSubsampleRatio411:
			cdivX = 4
		case image.YCbCrSubsampleRatio410:
			cdivX, cdivY = 4, 2
		}
		ycol, ccol := make([]int, w*k), make([]int, w*k)
		for i := range ycol {
			px := r.Min.X + i
			ycol[i], ccol[i] = px-s.Rect.Min.X, px/cdivX-s.Rect.Min.X/cdivX
		}
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				var sy, scb, scr uint32
				for dy := 0; dy < k; dy++ {
					py := r.Min.Y + y*k + dy
					yrow, crow := (py-s.Rect.Min.Y)*s.YStride, (py/cdivY-s.Rect.Min.Y/cdivY)*s.CStride
					for _, i := range ycol[x*k : x*k+k] {
						sy += uint32(s.Y[yrow+i])
					}
					for _, i := range ccol[x*k : x*k+k] {
						scb += uint32(s.Cb[crow+i])
						scr += uint32(s.Cr[crow+i])
					}
				}
				cr, cg, cb := color.YCbCrToRGB(uint8(sy/n), uint8(scb/n), uint8(scr/n))
				i := out.PixOffset(x, y)
				out.Pix[i], out.Pix[i+1], out.Pix[i+2], out.Pix[i+3] = cr, cg, cb, 0xff
			}
		}
	case *image.RGBA, *image.NRGBA:
		var pix []uint8
		var stride int
		var origin image.Point
		premultiply := false
		if rgba, ok := s.(*image.RGBA); ok {
			pix, stride, origin = rgba.Pix, rgba.Stride, rgba.Rect.Min
		} else {
			n := s.(*image.NRGBA)
			pix, stride, origin, premultiply = n.Pix, n.Stride, n.Rect.Min, true
		}
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				var sr, sg, sb, sa uint32
				for dy := 0; dy < k; dy++ {
					row := (r.Min.Y+y*k+dy-origin.Y)*stride + (r.Min.X+x*k-origin.X)*4
					for dx := 0; dx < k; dx++ {
						p := pix[row+dx*4 : row+dx*4+4 : row+dx*4+4]
						a := uint32(p[3])
						if premultiply {
							sr += uint32(p[0]) * a / 0xff
							sg += uint32(p[1]) * a / 0xff
							sb += uint32(p[2]) * a / 0xff
						} else {
							sr, sg, sb = sr+uint32(p[0]), sg+uint32(p[1]), sb+uint32(p[2])
						}
						sa += a
					}
				}
				i := out.PixOffset(x, y)
				out.Pix[i], out.Pix[i+1], out.Pix[i+2], out.Pix[i+3] = uint8(sr/n), uint8(sg/n), uint8(sb/n), uint8(sa/n)
			}
		}
	default:
		return nil
	}
	return out
}

package mediaapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Thumbnails are made once per (media, size, method) and kept in the blob store, named by a
// media_thumbnails row. The configured sizes are made right after an image is uploaded, from one
// decode; a request is answered with the smallest configured size at least as large as it asks
// (same method), or else made at the size it asks. Sizes nobody configured are stored up to
// maxDynamicThumbnails per media item; past that they are made for the request and not kept.

const maxDynamicThumbnails = 32

// The largest width or height a thumbnail may be asked for.
const maxThumbnailSide = 10000

// errCannotThumbnail is the spec's answer for content that has no thumbnail.
var errCannotThumbnail = spec.ErrUnknown.WithStatus(http.StatusBadRequest).With("Cannot generate thumbnails for the requested content")

// errTooLargeToThumbnail is the spec's answer for an image over the pixel limit.
func (a *API) errTooLargeToThumbnail() error {
	return spec.ErrTooLarge.Withf("Content is too large to thumbnail (more than %d pixels)", a.cfg.Thumbnails.MaxPixels)
}

// thumbnail is GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId} and the deprecated
// /_matrix/media/v3/thumbnail/... .
func (a *API) thumbnail(acc access) rawHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		serverName, mediaID, err := mediaRef(r)
		if err != nil {
			return err
		}
		size, err := thumbnailParams(r)
		if err != nil {
			return err
		}
		m, err := a.lookup(r, serverName, mediaID, acc)
		if err != nil {
			return err
		}
		t, data, err := a.thumbnailOf(r.Context(), m, size)
		if err != nil {
			return err
		}
		setContentHeaders(w.Header(), t.ContentType, "thumbnail."+filenameExt(t.ContentType), t.SHA256, true, acc)
		if data != nil { // made for this request only
			serveBlob(w, r, bytes.NewReader(data), t.CreatedTS)
			return nil
		}
		blob, err := a.openBlob(r.Context(), t.SHA256)
		if err != nil {
			return err
		}
		defer blob.Close()
		serveBlob(w, r, blob, t.CreatedTS)
		return nil
	}
}

// thumbnailParams reads width, height and method (default scale). animated is accepted and
// treated as false: thumbnails are still images.
func thumbnailParams(r *http.Request) (config.ThumbnailSize, error) {
	q := r.URL.Query()
	var s config.ThumbnailSize
	for _, p := range []struct {
		name string
		dst  *int
	}{{"width", &s.Width}, {"height", &s.Height}} {
		v := q.Get(p.name)
		if v == "" {
			return s, spec.ErrMissingParam.Withf("%s is required", p.name)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxThumbnailSide {
			return s, spec.ErrInvalidParam.Withf("%s must be an integer from 1 to %d", p.name, maxThumbnailSide)
		}
		*p.dst = n
	}
	switch s.Method = q.Get("method"); s.Method {
	case "":
		s.Method = "scale"
	case "scale", "crop":
	default:
		return s, spec.ErrInvalidParam.With("method must be crop or scale")
	}
	return s, nil
}

// target is the size a request is answered with: the smallest configured size of the same
// method that is at least as large, or the request itself.
func (a *API) target(req config.ThumbnailSize) (config.ThumbnailSize, bool) {
	best, found := req, false
	for _, s := range a.thumbSizes {
		if s.Method != req.Method || s.Width < req.Width || s.Height < req.Height {
			continue
		}
		if !found || s.Width*s.Height < best.Width*best.Height {
			best, found = s, true
		}
	}
	return best, found
}

// thumbnailOf returns the thumbnail of m for a request: a stored one (data nil), or one made for
// this request only (data set).
func (a *API) thumbnailOf(ctx context.Context, m storage.Media, req config.ThumbnailSize) (storage.MediaThumbnail, []byte, error) {
	if !thumbnailable[mediaType(m.ContentType)] {
		return storage.MediaThumbnail{}, nil, errCannotThumbnail
	}
	size, configured := a.target(req)
	t, err := a.store.Read().MediaThumbnail(ctx, m.ServerName, m.MediaID, int64(size.Width), int64(size.Height), size.Method)
	if err == nil {
		return t, nil, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return t, nil, err
	}
	keep := configured
	if !keep {
		n, err := a.store.Read().MediaThumbnailCount(ctx, m.ServerName, m.MediaID)
		if err != nil {
			return t, nil, err
		}
		keep = n < maxDynamicThumbnails
	}
	// One job per thumbnail however many ask at once; it outlives a requester that goes away.
	key := fmt.Sprintf("thumb %s/%s %dx%d-%s %v", m.ServerName, m.MediaID, size.Width, size.Height, size.Method, keep)
	v, err, _ := a.flight.Do(key, func() (any, error) {
		made, err := a.makeThumbnails(a.ctx, m, []config.ThumbnailSize{size}, keep)
		if err != nil {
			return nil, err
		}
		return made[0], nil
	})
	if err != nil {
		return t, nil, err
	}
	made := v.(madeThumbnail)
	return made.MediaThumbnail, made.data, nil
}

// madeThumbnail is a thumbnail just made: stored (data nil) or not.
type madeThumbnail struct {
	storage.MediaThumbnail
	data []byte
}

// makeThumbnails decodes m's image once and makes a thumbnail for each size, storing them if
// keep. An image no larger than a size is its own thumbnail when it is a JPEG or PNG (the spec:
// return the original content); GIFs and WebPs get a still copy, since an animated answer is
// only for those who ask.
func (a *API) makeThumbnails(ctx context.Context, m storage.Media, sizes []config.ThumbnailSize, keep bool) ([]madeThumbnail, error) {
	select {
	case a.thumbSlots <- struct{}{}:
		defer func() { <-a.thumbSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	blob, err := a.openBlob(ctx, m.SHA256)
	if err != nil {
		return nil, err
	}
	defer blob.Close()
	info, err := probeImage(blob)
	if errors.Is(err, errNotImage) {
		return nil, errCannotThumbnail
	}
	if err != nil {
		return nil, err
	}
	if int64(info.width)*int64(info.height) > a.cfg.Thumbnails.MaxPixels {
		return nil, a.errTooLargeToThumbnail()
	}
	var out []madeThumbnail
	var img decodedImage
	for _, size := range sizes {
		t := storage.MediaThumbnail{ServerName: m.ServerName, MediaID: m.MediaID, Width: int64(size.Width),
			Height: int64(size.Height), Method: size.Method, CreatedTS: time.Now().UnixMilli()}
		small := info.width <= size.Width && info.height <= size.Height
		if small && (info.format == "jpeg" || info.format == "png") {
			t.SHA256, t.Size, t.ContentType = m.SHA256, m.Size, "image/"+info.format
			if keep {
				if err := a.store.Write(ctx, func(c storage.Conn) error { return c.InsertMediaThumbnail(ctx, t) }); err != nil {
					return nil, err
				}
			}
			out = append(out, madeThumbnail{MediaThumbnail: t})
			continue
		}
		src, err := img.get(blob, info)
		if err != nil {
			if errors.Is(err, errNotImage) {
				return nil, errCannotThumbnail
			}
			return nil, err
		}
		w, h, method := size.Width, size.Height, size.Method
		if small {
			w, h, method = info.width, info.height, "scale"
		}
		data, ctype, err := renderThumbnail(src, info.format, w, h, method)
		if err != nil {
			return nil, err
		}
		t.ContentType, t.Size = ctype, int64(len(data))
		if !keep {
			out = append(out, madeThumbnail{MediaThumbnail: t, data: data})
			continue
		}
		sp, err := a.spoolFrom(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return nil, err
		}
		t.SHA256 = sp.sha
		err = a.commit(ctx, sp, func(c storage.Conn) error { return c.InsertMediaThumbnail(ctx, t) })
		sp.remove()
		if err != nil {
			return nil, err
		}
		out = append(out, madeThumbnail{MediaThumbnail: t})
	}
	return out, nil
}

// decodedImage decodes an image on first use.
type decodedImage struct {
	img image.Image
}

func (d *decodedImage) get(r io.ReadSeeker, info imageInfo) (image.Image, error) {
	if d.img == nil {
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		img, err := decodeImage(bufio.NewReaderSize(r, 64<<10), info)
		if err != nil {
			return nil, err
		}
		d.img = img
	}
	return d.img, nil
}

// pregenerate makes the configured thumbnail sizes of a new image in the background.
func (a *API) pregenerate(m storage.Media) {
	if len(a.thumbSizes) == 0 || !thumbnailable[mediaType(m.ContentType)] {
		return
	}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		ctx := a.ctx
		var missing []config.ThumbnailSize
		for _, s := range a.thumbSizes {
			_, err := a.store.Read().MediaThumbnail(ctx, m.ServerName, m.MediaID, int64(s.Width), int64(s.Height), s.Method)
			if errors.Is(err, storage.ErrNotFound) {
				missing = append(missing, s)
			}
		}
		if len(missing) == 0 {
			return
		}
		if _, err := a.makeThumbnails(ctx, m, missing, true); err != nil && ctx.Err() == nil {
			a.log.Debug("media: thumbnails not made", "media", mxc(m.ServerName, m.MediaID), "err", err)
		}
	}()
}

package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// access says through which endpoints media is asked for.
type access int

const (
	// authenticated: /_matrix/client/v1/media/*, with an access token.
	authenticated access = iota
	// unauthenticated: the deprecated /_matrix/media/*/download and /thumbnail, frozen for media
	// stored while media.allow_unauthenticated_legacy was false.
	unauthenticated
)

// The headers every piece of content is served with. The CSP is the spec's recommendation: a
// file opened in a browser tab runs nothing and loads nothing.
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"

// inlineTypes may be served with Content-Disposition: inline (the spec's list under "Serving
// inline content"); everything else, SVG and HTML included, is an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true, "application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true, "audio/wave": true,
	"audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// Content never changes under its media ID. Authenticated answers must not be kept by shared
// caches (they would serve them without a token); the deprecated public ones may be.
const (
	cachePrivate = "private, max-age=31536000, immutable"
	cachePublic  = "public, max-age=31536000, immutable"
)

// mediaType is the lower-case type/subtype of a Content-Type, "" if it does not parse.
func mediaType(ctype string) string {
	t, _, err := mime.ParseMediaType(ctype)
	if err != nil {
		return ""
	}
	return t
}

// setContentHeaders sets the headers of served content. An unparseable stored type is served
// as application/octet-stream.
func setContentHeaders(h http.Header, ctype, fileName, sha string, inline bool, acc access) {
	if mediaType(ctype) == "" {
		ctype = "application/octet-stream"
	}
	h.Set("Content-Type", ctype)
	disp := "attachment"
	if inline {
		disp = "inline"
	}
	h.Set("Content-Disposition", contentDisposition(disp, fileName))
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	if acc == authenticated {
		h.Set("Cache-Control", cachePrivate)
	} else {
		h.Set("Cache-Control", cachePublic)
	}
	h.Set("ETag", `"`+sha+`"`)
}

// contentDisposition is disp with the file name: filename="name" when it is printable ASCII
// without quotes or backslashes, else the RFC 6266 extended form (filename*= with the UTF-8 bytes
// percent-encoded, RFC 8187).
func contentDisposition(disp, name string) string {
	if name == "" {
		return disp
	}
	plain := true
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return disp + `; filename="` + name + `"`
	}
	const attrChars = "!#$&+-.^_`|~"
	var b strings.Builder
	b.WriteString(disp + "; filename*=utf-8''")
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(attrChars, c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// download is GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}] and the
// deprecated /_matrix/media/v3/download/... .
func (a *API) download(acc access) rawHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		serverName, mediaID, err := mediaRef(r)
		if err != nil {
			return err
		}
		m, err := a.lookup(r, serverName, mediaID, acc)
		if err != nil {
			return err
		}
		name := m.FileName
		if fn := pathParam(r, "fileName"); fn != "" {
			name = fn
		}
		blob, err := a.openBlob(r.Context(), m.SHA256)
		if err != nil {
			return err
		}
		defer blob.Close()
		setContentHeaders(w.Header(), m.ContentType, name, m.SHA256, inlineTypes[mediaType(m.ContentType)], acc)
		serveBlob(w, r, blob, m.CreatedTS)
		return nil
	}
}

// serveBlob sends content with Range, If-Range and If-None-Match support.
func serveBlob(w http.ResponseWriter, r *http.Request, content io.ReadSeeker, createdTS int64) {
	http.ServeContent(w, r, "", time.UnixMilli(createdTS), content)
}

// openBlob opens stored content; a blob missing from the store is reported and answered 404.
func (a *API) openBlob(ctx context.Context, sha string) (Blob, error) {
	b, err := a.blobs.Open(ctx, sha)
	if errors.Is(err, ErrBlobNotFound) {
		a.log.WarnContext(ctx, "media: content missing from the store", "sha256", sha)
		return nil, spec.ErrNotFound.With("Media not found")
	}
	return b, err
}

// The longest a download waits for an asynchronous upload (timeout_ms is capped to it).
const maxWait = 60 * time.Second

// lookup finds the media a download or thumbnail asks for: local media (waiting up to
// timeout_ms for an asynchronous upload), or remote media from the cache or its server.
func (a *API) lookup(r *http.Request, serverName, mediaID string, acc access) (storage.Media, error) {
	ctx := r.Context()
	q := r.URL.Query()
	wait := 20 * time.Second
	if v := q.Get("timeout_ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return storage.Media{}, spec.ErrInvalidParam.With("timeout_ms must be a non-negative integer")
		}
		wait = min(time.Duration(ms)*time.Millisecond, maxWait)
	}
	notFound := spec.ErrNotFound.With("Media not found")
	m, err := a.store.Read().Media(ctx, serverName, mediaID)
	switch {
	case errors.Is(err, storage.ErrNotFound) && serverName != a.serverName:
		// Unauthenticated requests fetch nothing while the freeze is on: what they would
		// cache is frozen and not theirs to see.
		if acc == unauthenticated && (q.Get("allow_remote") == "false" || !a.cfg.AllowUnauthenticatedLegacy) {
			return m, notFound
		}
		if m, err = a.fetchRemote(ctx, serverName, mediaID); err != nil {
			return m, err
		}
	case errors.Is(err, storage.ErrNotFound):
		return m, notFound
	case err != nil:
		return m, err
	}
	if acc == unauthenticated && m.Restricted {
		return m, spec.ErrNotFound.With("This media is only served by the authenticated endpoints (/_matrix/client/v1/media)")
	}
	if m.Pending() {
		return a.waitForUpload(ctx, m, wait)
	}
	if m.Remote && time.Since(time.UnixMilli(m.LastAccessTS)) > time.Hour {
		now := time.Now().UnixMilli()
		if err := a.store.Write(ctx, func(c storage.Conn) error { return c.TouchMedia(ctx, serverName, mediaID, now) }); err != nil {
			a.log.WarnContext(ctx, "media: record access", "err", err)
		}
	}
	return m, nil
}

// waitForUpload waits up to wait for a pending item's content: woken by uploads on this node and
// (over the bus) others, and polling once a second in case a wake-up is lost.
func (a *API) waitForUpload(ctx context.Context, m storage.Media, wait time.Duration) (storage.Media, error) {
	deadline := time.Now().Add(wait)
	for {
		if m.ExpiresTS <= time.Now().UnixMilli() {
			return m, spec.ErrNotFound.With("Media not found")
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return m, spec.ErrNotYetUploaded
		}
		signal := a.uploadedSignal()
		var err error
		if m, err = a.store.Read().Media(ctx, m.ServerName, m.MediaID); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return m, spec.ErrNotFound.With("Media not found")
			}
			return m, err
		}
		if !m.Pending() {
			return m, nil
		}
		t := time.NewTimer(min(remaining, time.Second))
		select {
		case <-signal:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return m, ctx.Err()
		}
		t.Stop()
	}
}

// filenameExt is the extension of a thumbnail's file name by its type.
func filenameExt(ctype string) string {
	_, sub, _ := strings.Cut(ctype, "/")
	if sub == "jpeg" {
		return "jpg"
	}
	return sub
}

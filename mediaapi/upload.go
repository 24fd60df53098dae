package mediaapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// An upload is received in three steps, so that a failed one leaves nothing behind:
//
//	body ──> spool file (Dir/tmp), hashed while written, refused past max_upload_bytes
//	     ──> blob store under the SHA-256 (renamed into place, or kept if already there)
//	     ──> database row naming the blob (one transaction)
//
// A failure before the row removes the spool file, and the blob too unless another row names it.

// upload is POST /_matrix/media/v3/upload.
func (a *API) upload(callerOf func(*http.Request) account.Caller) handler {
	return func(r *http.Request) (any, error) {
		caller := callerOf(r)
		ctype, name, err := uploadMeta(r)
		if err != nil {
			return nil, err
		}
		sp, err := a.receive(r)
		if err != nil {
			return nil, err
		}
		defer sp.remove()
		m := storage.Media{ServerName: a.serverName, MediaID: newMediaID(), SHA256: sp.sha, Size: sp.size,
			ContentType: ctype, FileName: name, Uploader: string(caller.UserID), CreatedTS: time.Now().UnixMilli(),
			Restricted: !a.cfg.AllowUnauthenticatedLegacy}
		err = a.commit(r.Context(), sp, func(c storage.Conn) error {
			if err := a.checkQuota(r.Context(), c, m.Uploader, sp.size); err != nil {
				return err
			}
			return c.InsertMedia(r.Context(), m)
		})
		if err != nil {
			return nil, err
		}
		a.pregenerate(m)
		return map[string]string{"content_uri": mxc(m.ServerName, m.MediaID)}, nil
	}
}

// create is POST /_matrix/media/v1/create: a media ID whose content comes later (uploadTo).
func (a *API) create(callerOf func(*http.Request) account.Caller) handler {
	return func(r *http.Request) (any, error) {
		caller := callerOf(r)
		now := time.Now()
		m := storage.Media{ServerName: a.serverName, MediaID: newMediaID(), Uploader: string(caller.UserID),
			CreatedTS: now.UnixMilli(), ExpiresTS: now.Add(a.cfg.PendingUploadLifetime.D()).UnixMilli(),
			Restricted: !a.cfg.AllowUnauthenticatedLegacy}
		err := a.store.Write(r.Context(), func(c storage.Conn) error {
			n, err := c.PendingMediaCount(r.Context(), m.Uploader, m.CreatedTS)
			if err != nil {
				return err
			}
			if n >= int64(a.cfg.MaxPendingUploads) {
				return spec.LimitExceeded(60_000).Withf("You have %d media IDs waiting for uploads; upload to them first", n)
			}
			return c.InsertMedia(r.Context(), m)
		})
		if err != nil {
			return nil, err
		}
		return map[string]any{"content_uri": mxc(m.ServerName, m.MediaID), "unused_expires_at": m.ExpiresTS}, nil
	}
}

// uploadTo is PUT /_matrix/media/v3/upload/{serverName}/{mediaId}: the content of an ID from
// create, once.
func (a *API) uploadTo(callerOf func(*http.Request) account.Caller) handler {
	return func(r *http.Request) (any, error) {
		caller := callerOf(r)
		serverName, mediaID, err := mediaRef(r)
		if err != nil {
			return nil, err
		}
		ctype, name, err := uploadMeta(r)
		if err != nil {
			return nil, err
		}
		// Answer what can be answered before reading the body.
		if err := a.checkPending(r.Context(), a.store.Read(), serverName, mediaID, string(caller.UserID)); err != nil {
			return nil, err
		}
		sp, err := a.receive(r)
		if err != nil {
			return nil, err
		}
		defer sp.remove()
		m := storage.Media{ServerName: serverName, MediaID: mediaID, SHA256: sp.sha, Size: sp.size, ContentType: ctype,
			FileName: name, Uploader: string(caller.UserID)}
		err = a.commit(r.Context(), sp, func(c storage.Conn) error {
			if err := a.checkQuota(r.Context(), c, m.Uploader, sp.size); err != nil {
				return err
			}
			err := c.FillPendingMedia(r.Context(), m, time.Now().UnixMilli())
			if errors.Is(err, storage.ErrNotFound) { // changed while the body came: say why
				if err := a.checkPending(r.Context(), c, serverName, mediaID, m.Uploader); err != nil {
					return err
				}
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		a.wakeWaiters()
		if a.bus != nil {
			_ = a.bus.Publish(bus.SubjectMediaUploaded, []byte(mxc(serverName, mediaID)))
		}
		if m, err := a.store.Read().Media(r.Context(), serverName, mediaID); err == nil {
			a.pregenerate(m)
		}
		return struct{}{}, nil
	}
}

// checkPending explains why an ID cannot take content: unknown or lapsed (404), someone else's
// (403), or filled already (409 M_CANNOT_OVERWRITE_MEDIA).
func (a *API) checkPending(ctx context.Context, c storage.Conn, serverName, mediaID, uploader string) error {
	if serverName != a.serverName {
		return spec.ErrNotFound.With("Unknown media ID")
	}
	m, err := c.Media(ctx, serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return spec.ErrNotFound.With("Unknown media ID")
	}
	if err != nil {
		return err
	}
	if m.Uploader != uploader {
		return spec.ErrForbidden.With("This media ID was created by another user")
	}
	if !m.Pending() {
		return spec.ErrCannotOverwriteMedia
	}
	if m.ExpiresTS <= time.Now().UnixMilli() {
		return spec.ErrNotFound.With("This media ID has expired")
	}
	return nil
}

// uploadMeta reads the Content-Type header and the filename parameter of an upload.
func uploadMeta(r *http.Request) (ctype, name string, err error) {
	ctype = strings.TrimSpace(r.Header.Get("Content-Type"))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	if len(ctype) > 255 {
		return "", "", spec.ErrInvalidParam.With("Content-Type is too long")
	}
	if _, _, err := mime.ParseMediaType(ctype); err != nil {
		return "", "", spec.ErrInvalidParam.With("Content-Type is not a media type")
	}
	name = r.URL.Query().Get("filename")
	if len(name) > 255 || !utf8.ValidString(name) || strings.ContainsAny(name, "\x00\r\n") {
		return "", "", spec.ErrInvalidParam.With("filename must be valid UTF-8 of at most 255 bytes, without line breaks")
	}
	return ctype, name, nil
}

// errTooLarge is the answer to an upload over the limit.
func (a *API) errTooLarge() error {
	return spec.ErrTooLarge.Withf("Uploads may be at most %d bytes", a.cfg.MaxUploadBytes)
}

// uploadDeadline gives an upload's body upload_timeout to arrive, instead of the server's
// http.read_timeout.
func (a *API) uploadDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(a.cfg.UploadTimeout.D()))
		next.ServeHTTP(w, r)
	})
}

// receive spools the request body, refusing it past max_upload_bytes.
func (a *API) receive(r *http.Request) (*spool, error) {
	if r.ContentLength > a.cfg.MaxUploadBytes {
		return nil, a.errTooLarge()
	}
	sp, err := a.spoolFrom(r.Body, a.cfg.MaxUploadBytes)
	if errors.Is(err, errSpoolTooLarge) {
		return nil, a.errTooLarge()
	}
	return sp, err
}

var errSpoolTooLarge = errors.New("mediaapi: content over the size limit")

// spoolFrom copies body into a new spool file, hashing it, up to limit bytes.
func (a *API) spoolFrom(body io.Reader, limit int64) (*spool, error) {
	f, err := os.CreateTemp(a.spoolDir, "upload-*")
	if err != nil {
		return nil, fmt.Errorf("mediaapi: spool: %w", err)
	}
	sp := &spool{f: f}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, limit+1))
	if err != nil {
		sp.remove()
		return nil, fmt.Errorf("mediaapi: receive: %w", err)
	}
	if n > limit {
		sp.remove()
		return nil, errSpoolTooLarge
	}
	sp.sha, sp.size = hex.EncodeToString(h.Sum(nil)), n
	return sp, nil
}

// commit stores the spooled blob, then runs record (which inserts the row naming it) in one
// transaction. If record fails, the blob goes again unless another row names it.
func (a *API) commit(ctx context.Context, sp *spool, record func(c storage.Conn) error) error {
	mu := a.hashLock(sp.sha)
	mu.Lock()
	defer mu.Unlock()
	if err := a.blobs.Put(ctx, sp.sha, sp.f, sp.size); err != nil {
		return err
	}
	err := a.store.Write(ctx, record)
	if err != nil {
		if used, rerr := a.store.Read().BlobReferenced(context.WithoutCancel(ctx), sp.sha); rerr == nil && !used {
			_ = a.blobs.Delete(context.WithoutCancel(ctx), sp.sha)
		}
	}
	return err
}

// checkQuota refuses an upload of size bytes that would take the user past media.user_quota_bytes
// (403 M_FORBIDDEN, as the spec's content repository section says for quotas).
func (a *API) checkQuota(ctx context.Context, c storage.Conn, uploader string, size int64) error {
	if a.cfg.UserQuotaBytes <= 0 || uploader == "" {
		return nil
	}
	used, err := c.MediaBytesOf(ctx, uploader)
	if err != nil {
		return err
	}
	if used+size > a.cfg.UserQuotaBytes {
		return spec.ErrForbidden.Withf("This upload would exceed your media quota of %d bytes (%d used)", a.cfg.UserQuotaBytes, used)
	}
	return nil
}

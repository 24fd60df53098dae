package mediaapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// RemoteFetcher gets media from the server that holds it; the federation layer provides it
// (/_matrix/federation/v1/media/download). Fetched media is cached here like an upload (in the
// blob store, with a row marked remote) and purged by POST /_synapse/admin/v1/purge_media_cache.
type RemoteFetcher interface {
	// FetchMedia returns the content of mxc://serverName/mediaID, or an error wrapping
	// ErrRemoteNotFound if that server has no such media. The caller reads at most maxBytes of
	// the body and closes it.
	FetchMedia(ctx context.Context, serverName, mediaID string, maxBytes int64) (*RemoteMedia, error)
}

// RemoteMedia is media being fetched from another server.
type RemoteMedia struct {
	ContentType string
	FileName    string
	Body        io.ReadCloser
}

// ErrRemoteNotFound is wrapped by RemoteFetcher errors for media the other server does not have.
var ErrRemoteNotFound = errors.New("mediaapi: remote media not found")

// remoteFetchTimeout bounds one fetch of remote media.
const remoteFetchTimeout = 2 * time.Minute

// fetchRemote returns remote media from its server, caching it. Concurrent requests for the same
// media share one fetch.
func (a *API) fetchRemote(ctx context.Context, serverName, mediaID string) (storage.Media, error) {
	if a.remote == nil {
		return storage.Media{}, spec.ErrNotFound.With("Media not found")
	}
	v, err, _ := a.flight.Do("remote "+serverName+"/"+mediaID, func() (any, error) {
		ctx, cancel := context.WithTimeout(a.ctx, remoteFetchTimeout)
		defer cancel()
		if m, err := a.store.Read().Media(ctx, serverName, mediaID); err == nil {
			return m, nil // cached by a fetch that just finished
		}
		rm, err := a.remote.FetchMedia(ctx, serverName, mediaID, a.cfg.MaxUploadBytes)
		if errors.Is(err, ErrRemoteNotFound) {
			return nil, spec.ErrNotFound.With("Media not found")
		}
		if err != nil {
			a.log.Info("media: fetching remote media failed", "media", mxc(serverName, mediaID), "err", err)
			return nil, spec.ErrUnknown.WithStatus(http.StatusBadGateway).With("Could not fetch the media from its server")
		}
		defer rm.Body.Close()
		sp, err := a.spoolFrom(rm.Body, a.cfg.MaxUploadBytes)
		if errors.Is(err, errSpoolTooLarge) {
			return nil, spec.ErrTooLarge.WithStatus(http.StatusBadGateway).With("The remote content is too large")
		}
		if err != nil {
			return nil, spec.ErrUnknown.WithStatus(http.StatusBadGateway).With("Could not fetch the media from its server")
		}
		defer sp.remove()
		ctype := rm.ContentType
		if mediaType(ctype) == "" {
			ctype = "application/octet-stream"
		}
		now := time.Now().UnixMilli()
		m := storage.Media{ServerName: serverName, MediaID: mediaID, SHA256: sp.sha, Size: sp.size, ContentType: ctype,
			FileName: rm.FileName, CreatedTS: now, LastAccessTS: now, Remote: true,
			// The spec's freeze counts remote media as new when the cache is filled.
			Restricted: !a.cfg.AllowUnauthenticatedLegacy}
		err = a.commit(ctx, sp, func(c storage.Conn) error { return c.InsertMedia(ctx, m) })
		if errors.Is(err, storage.ErrConflict) { // another node cached it meanwhile
			return a.store.Read().Media(ctx, serverName, mediaID)
		}
		if err != nil {
			return nil, err
		}
		a.pregenerate(m)
		return m, nil
	})
	if err != nil {
		return storage.Media{}, err
	}
	return v.(storage.Media), nil
}

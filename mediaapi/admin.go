package mediaapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Delete removes a media item (local or cached remote), its thumbnails, and the blobs no other
// item names. storage.ErrNotFound if there is no such item.
func (a *API) Delete(ctx context.Context, serverName, mediaID string) error {
	var hashes []string
	err := a.store.Write(ctx, func(c storage.Conn) (err error) {
		hashes, err = c.DeleteMedia(ctx, serverName, mediaID)
		return err
	})
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, sha := range hashes {
		if seen[sha] {
			continue
		}
		seen[sha] = true
		if err := a.dropBlobIfUnused(ctx, sha); err != nil {
			return err
		}
	}
	return nil
}

// dropBlobIfUnused deletes a blob that no row names any more. It holds the blob's lock, which an
// upload of the same content holds from storing the blob to committing its row.
func (a *API) dropBlobIfUnused(ctx context.Context, sha string) error {
	mu := a.hashLock(sha)
	mu.Lock()
	defer mu.Unlock()
	used, err := a.store.Read().BlobReferenced(ctx, sha)
	if err != nil || used {
		return err
	}
	return a.blobs.Delete(ctx, sha)
}

// PurgeRemote deletes cached remote media last served before beforeMS (Unix milliseconds) and
// returns how many items went.
func (a *API) PurgeRemote(ctx context.Context, beforeMS int64) (int, error) {
	n := 0
	for {
		items, err := a.store.Read().RemoteMediaBefore(ctx, beforeMS, 500)
		if err != nil || len(items) == 0 {
			return n, err
		}
		for _, m := range items {
			err := a.Delete(ctx, m.ServerName, m.MediaID)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return n, err
			}
			n++
		}
	}
}

// adminDelete is DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}.
func (a *API) adminDelete(r *http.Request) (any, error) {
	serverName, mediaID, err := mediaRef(r)
	if err != nil {
		return nil, err
	}
	err = a.Delete(r.Context(), serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, spec.ErrNotFound.With("Media not found")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"deleted_media": []string{mediaID}, "total": 1}, nil
}

// adminPurgeRemote is POST /_synapse/admin/v1/purge_media_cache?before_ts=: cached remote media
// last served before before_ts (Unix milliseconds) goes.
func (a *API) adminPurgeRemote(r *http.Request) (any, error) {
	v := r.URL.Query().Get("before_ts")
	if v == "" {
		return nil, spec.ErrMissingParam.With("before_ts is required")
	}
	before, err := strconv.ParseInt(v, 10, 64)
	if err != nil || before < 0 {
		return nil, spec.ErrInvalidParam.With("before_ts must be a timestamp in milliseconds")
	}
	n, err := a.PurgeRemote(r.Context(), before)
	if err != nil {
		return nil, err
	}
	return map[string]int{"deleted": n}, nil
}

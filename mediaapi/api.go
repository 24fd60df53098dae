package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"golang.org/x/sync/singleflight"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/netguard"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Options configure the media repository.
type Options struct {
	ServerName string
	Config     config.Media
	// Dir is the filesystem store's directory (config.Config.MediaDir); uploads are spooled in
	// Dir/tmp whatever the store.
	Dir string
	// Remote fetches media of other servers; nil answers 404 M_NOT_FOUND for remote media that
	// is not cached.
	Remote RemoteFetcher
	// Blobs replaces the store the configuration names (tests, tools); nil builds it.
	Blobs Blobs
}

// API is the media repository: its HTTP endpoints and the work behind them.
type API struct {
	serverName string
	cfg        config.Media
	store      *storage.Store
	blobs      Blobs
	bus        *bus.Bus
	remote     RemoteFetcher
	log        *slog.Logger
	spoolDir   string

	thumbSizes []config.ThumbnailSize
	// thumbSlots bounds how many images are decoded at once, and so the memory thumbnailing
	// takes: at most cap(thumbSlots) x max_pixels x 4 bytes.
	thumbSlots chan struct{}
	// flight merges concurrent requests for the same thumbnail or remote file into one job.
	flight singleflight.Group

	// hashLocks serialise, per blob, storing it with a new reference and deleting it with its
	// last one, so a delete cannot remove a blob an upload of the same content just relied on.
	hashLocks [64]sync.Mutex

	// uploaded is closed (and replaced) whenever an asynchronous upload completes on any node,
	// waking downloads that wait for one.
	uploadedMu sync.Mutex
	uploaded   chan struct{}

	preview *http.Client // nil while URL previews are off

	ctx    context.Context // cancelled by Close: background work stops
	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// New builds the media repository: the blob store, the spool directory (emptied of what a crash
// left), and a background loop that expires unused media IDs and old URL previews. b may
// be nil (one node, or tools): waiting downloads then notice uploads of other nodes by polling
// only.
func New(store *storage.Store, b *bus.Bus, o Options, log *slog.Logger) (*API, error) {
	a := &API{serverName: o.ServerName, cfg: o.Config, store: store, bus: b, remote: o.Remote, log: log,
		spoolDir: filepath.Join(o.Dir, "tmp"), blobs: o.Blobs, uploaded: make(chan struct{}),
		thumbSlots: make(chan struct{}, max(1, min(runtime.GOMAXPROCS(0), 4)))}
	for _, s := range o.Config.Thumbnails.Sizes {
		ts, err := config.ParseThumbnailSize(s)
		if err != nil {
			return nil, err
		}
		a.thumbSizes = append(a.thumbSizes, ts)
	}
	if a.blobs == nil {
		var err error
		if a.blobs, err = openBlobs(o.Config, o.Dir); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(a.spoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("mediaapi: spool directory: %w", err)
	}
	a.cleanSpool()
	if o.Config.URLPreview.Enabled {
		guard, err := netguard.New(o.Config.URLPreview.AllowedNetworks)
		if err != nil {
			return nil, err
		}
		a.preview = newPreviewClient(guard, o.Config.URLPreview.Timeout.D())
	}
	if b != nil {
		if _, err := b.Subscribe(bus.SubjectMediaUploaded, func([]byte) { a.wakeWaiters() }); err != nil {
			return nil, err
		}
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.bg.Add(1)
	go a.housekeeping()
	return a, nil
}

// cleanSpool removes spool files a crash left behind: those older than any upload can take (the
// directory may be shared by several nodes, whose uploads in progress must stay).
func (a *API) cleanSpool() {
	entries, err := os.ReadDir(a.spoolDir)
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-a.cfg.UploadTimeout.D() - time.Hour)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			_ = os.Remove(filepath.Join(a.spoolDir, e.Name()))
		}
	}
}

// Close stops background work (thumbnails being made, housekeeping) and waits for it.
func (a *API) Close() {
	a.cancel()
	a.bg.Wait()
}

// Middleware is what the media endpoints borrow from the client API (clientapi.API's
// RequireAuth, RequireAdmin and RateLimited, and clientapi.Caller), handed over by the
// composition root, so that authentication and rate limits work exactly as on every other
// endpoint.
type Middleware struct {
	RequireAuth, RequireAdmin, RateLimited func(http.Handler) http.Handler
	Caller                                 func(*http.Request) account.Caller
}

// Routes mounts the media endpoints on r, which already has the client API's middleware (request
// IDs, logs, CORS). The route table:
func (a *API) Routes(r chi.Router, mw Middleware) {
	h := func(fn handler) http.HandlerFunc { return a.serveJSON(fn) }
	raw := func(fn rawHandler) http.HandlerFunc { return a.serveRaw(fn) }

	// Authenticated media (spec v1.11).
	r.Route("/_matrix/client/v1/media", func(r chi.Router) {
		r.Use(mw.RequireAuth)
		r.Get("/config", h(a.config))
		r.Get("/download/{serverName}/{mediaId}", raw(a.download(authenticated)))
		r.Get("/download/{serverName}/{mediaId}/{fileName}", raw(a.download(authenticated)))
		r.Get("/thumbnail/{serverName}/{mediaId}", raw(a.thumbnail(authenticated)))
		r.With(mw.RateLimited).Get("/preview_url", h(a.previewURL))
	})
	// The deprecated /_matrix/media endpoints, under the versions clients still call.
	legacy := func(r chi.Router) {
		r.Get("/download/{serverName}/{mediaId}", raw(a.download(unauthenticated)))
		r.Get("/download/{serverName}/{mediaId}/{fileName}", raw(a.download(unauthenticated)))
		r.Get("/thumbnail/{serverName}/{mediaId}", raw(a.thumbnail(unauthenticated)))
		r.Group(func(r chi.Router) {
			r.Use(mw.RequireAuth)
			r.With(mw.RateLimited, a.uploadDeadline).Post("/upload", h(a.upload(mw.Caller)))
			r.With(mw.RateLimited, a.uploadDeadline).Put("/upload/{serverName}/{mediaId}", h(a.uploadTo(mw.Caller)))
			r.With(mw.RateLimited).Post("/create", h(a.create(mw.Caller)))
			r.Get("/config", h(a.config))
			r.With(mw.RateLimited).Get("/preview_url", h(a.previewURL))
		})
	}
	r.Route("/_matrix/media/v3", legacy)
	r.Route("/_matrix/media/r0", legacy)
	r.Route("/_matrix/media/v1", legacy) // POST /_matrix/media/v1/create lives here

	// Synapse-compatible admin API.
	r.With(mw.RequireAdmin).Delete("/_synapse/admin/v1/media/{serverName}/{mediaId}", h(a.adminDelete))
	r.With(mw.RequireAdmin).Post("/_synapse/admin/v1/purge_media_cache", h(a.adminPurgeRemote))
}

// config is GET /_matrix/client/v1/media/config (and the deprecated /_matrix/media/v3/config).
func (a *API) config(*http.Request) (any, error) {
	return map[string]any{"m.upload.size": a.cfg.MaxUploadBytes}, nil
}

// housekeeping deletes, every ten minutes, media IDs created but never uploaded to once they
// lapse, URL previews older than a day and abandoned spool files.
func (a *API) housekeeping() {
	defer a.bg.Done()
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
			a.cleanSpool()
			if err := a.expirePending(a.ctx); err != nil && a.ctx.Err() == nil {
				a.log.Warn("media: expire unused media IDs", "err", err)
			}
			cutoff := time.Now().Add(-24 * time.Hour).UnixMilli()
			err := a.store.Write(a.ctx, func(c storage.Conn) error { return c.DeleteURLPreviewsBefore(a.ctx, cutoff) })
			if err != nil && a.ctx.Err() == nil {
				a.log.Warn("media: purge URL previews", "err", err)
			}
		}
	}
}

// expirePending deletes lapsed media IDs from POST /create.
func (a *API) expirePending(ctx context.Context) error {
	for {
		items, err := a.store.Read().ExpiredPendingMedia(ctx, time.Now().UnixMilli(), 500)
		if err != nil || len(items) == 0 {
			return err
		}
		for _, m := range items {
			if err := a.Delete(ctx, m.ServerName, m.MediaID); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
	}
}

// wakeWaiters wakes every download waiting for an asynchronous upload; each checks its own.
func (a *API) wakeWaiters() {
	a.uploadedMu.Lock()
	close(a.uploaded)
	a.uploaded = make(chan struct{})
	a.uploadedMu.Unlock()
}

// uploadedSignal is closed at the next completed asynchronous upload.
func (a *API) uploadedSignal() <-chan struct{} {
	a.uploadedMu.Lock()
	defer a.uploadedMu.Unlock()
	return a.uploaded
}

// hashLock is the lock of a blob (see API.hashLocks).
func (a *API) hashLock(sha string) *sync.Mutex {
	var n byte
	if len(sha) > 1 {
		n = sha[0] ^ sha[1]<<4
	}
	return &a.hashLocks[int(n)%len(a.hashLocks)]
}

// Package homeserver is the composition root: it builds every component from the configuration
// with explicit constructor arguments and runs the HTTP listeners.
package homeserver

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hearthmx/homeserver/clientapi"
	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/federation"
	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/presence"
	"github.com/hearthmx/homeserver/homeserver/push"
	"github.com/hearthmx/homeserver/homeserver/receipt"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/storage"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
	"github.com/hearthmx/homeserver/homeserver/typing"
	"github.com/hearthmx/homeserver/mediaapi"
)

// Version is the server version, set at build time with -ldflags "-X .../homeserver.Version=...".
var Version = "0.1.0-dev"

// Server is one running homeserver node.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	Store    *storage.Store
	Bus      *bus.Bus
	Key      signing.Key
	Accounts *account.Service
	Rooms    *room.Service
	Sync     *hsync.Service
	Typing   *typing.Service
	Presence *presence.Service

	// To-device messages, key backup and dehydrated devices (e2ee/todevice.go, backup.go,
	// dehydrated.go).
	ToDevice   *e2ee.ToDevice
	Backup     *e2ee.Backup
	Dehydrated *e2ee.Dehydrated
	// E2EE manages device, one-time, fallback and cross-signing keys and the device_lists stream.
	E2EE *e2ee.Service
	// Media is the media repository (uploads, downloads, thumbnails, URL previews).
	Media *mediaapi.API
	// Federation serves the server-server API and holds the key ring and the federation client.
	Federation *federation.API

	notifier *hsync.Notifier
	registry *prometheus.Registry
	handler  http.Handler
	api      *clientapi.API

	client, metrics net.Listener
	// fed is the TLS federation listener (homeserver/federation.go), nil when there is none.
	fed        net.Listener
	fedTLS     *tls.Config
	fedHandler http.Handler
}

// New builds a server: data directory, signing key, storage (migrated), bus, services and routes.
// It does not listen yet.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *Server, err error) {
	if problems := cfg.Validate(); len(problems) > 0 {
		return nil, fmt.Errorf("invalid configuration: %v", problems)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	s := &Server{cfg: cfg, log: log, registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	key, generated, err := signing.LoadOrGenerate(cfg.SigningKeyFile())
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	s.Key = key
	if generated {
		log.Info("generated a new signing key", "path", cfg.SigningKeyFile(), "key_id", key.ID)
	}
	s.Store, err = storage.Open(ctx, storage.Options{Backend: cfg.Database.Backend, SQLitePath: cfg.SQLiteFile(),
		PostgresDSN: cfg.Database.PostgresDSN, MaxOpenConns: cfg.Database.MaxOpenConns})
	if err != nil {
		return nil, err
	}
	s.Bus, err = bus.Start(ctx, bus.Options{URLs: cfg.NATS.URLs, StoreDir: cfg.NATSStoreDir(), Name: "homeserver-" + cfg.ServerName}, log)
	if err != nil {
		return nil, err
	}
	s.Accounts = account.New(s.Store, s.Bus, account.Options{
		ServerName:        cfg.ServerName,
		RefreshLifetime:   cfg.Auth.RefreshableAccessTokenLifetime.D(),
		PasswordMinLength: cfg.Auth.PasswordMinLength,
		UIALifetime:       cfg.Auth.UIASessionLifetime.D(),
		OpenIDLifetime:    cfg.Auth.OpenIDTokenLifetime.D(),
	}, log)

	defaultVersion, err := event.LookupVersion(cfg.RoomVersions.Default)
	if err != nil {
		return nil, err
	}
	s.Rooms = room.New(s.Store, s.Bus, room.Options{ServerName: cfg.ServerName, Key: key, DefaultVersion: defaultVersion,
		Resolve: resolveState}, log)
	// The notifier first: typing and presence wake syncing users through it.
	if s.notifier, err = hsync.NewNotifier(ctx, s.Store, s.Bus, log); err != nil {
		return nil, err
	}
	node := nodeID()
	if s.Typing, err = typing.New(s.Bus, node, s.notifier, s.Rooms, log); err != nil {
		return nil, err
	}
	s.Presence, err = presence.New(ctx, presence.Options{Enabled: cfg.Presence.Enabled, Visibility: cfg.Presence.Visibility,
		IdleTimeout: cfg.Presence.IdleTimeout.D(), OfflineTimeout: cfg.Presence.OfflineTimeout.D()}, s.Store, s.Bus, node, s.notifier, log)
	if err != nil {
		return nil, err
	}
	s.Sync = hsync.New(s.Store, s.Rooms, s.notifier, hsync.Ephemeral{Typing: s.Typing,
		Receipts: receipt.New(s.Store, s.Bus, s.Rooms, log), Presence: s.Presence}, log)

	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.registry.MustRegister(roomWriterMetrics(s.Rooms)...)
	r := chi.NewRouter()
	api := clientapi.New(cfg, s.Accounts, s.Rooms, push.New(s.Store, s.Bus, log), s.Sync, log, s.registry)
	s.api = api
	waker, err := hsync.NewBusWaker(s.notifier, s.Bus)
	if err != nil {
		return nil, err
	}
	s.ToDevice = e2ee.NewToDevice(s.Store, waker, e2ee.ToDeviceOptions{ServerName: cfg.ServerName}, log)
	s.Backup = e2ee.NewBackup(s.Store, log)
	s.Dehydrated = e2ee.NewDehydrated(s.Store, s.Accounts, s.ToDevice, nil, log)
	api.SetToDevice(s.ToDevice)
	api.SetBackup(s.Backup)
	api.SetDehydrated(s.Dehydrated)
	s.E2EE = e2ee.New(s.Store, waker, e2ee.Options{ServerName: cfg.ServerName}, log)
	api.SetE2EE(s.E2EE)
	s.Sync.SetE2EE(s.E2EE, s.ToDevice)
	s.Dehydrated.SetKeyUploader(s.E2EE)
	// Device logins and deletions (recorded on the device_lists stream in their transaction) wake
	// the syncs of the user's room-mates, on every node.
	if _, err := s.Bus.Subscribe(bus.SubjectDeviceChange, s.notifier.ReceiveDeviceChange); err != nil {
		return nil, err
	}
	api.Wrap(r)
	api.Routes(r)
	s.Federation, err = federation.New(federation.Options{ServerName: cfg.ServerName, Version: Version, Key: key,
		Config: cfg.Federation, Store: s.Store, Accounts: s.Accounts, Rooms: s.Rooms, Bus: s.Bus, MaxBodyBytes: cfg.HTTP.MaxBodyBytes, Log: log,
		E2EE: s.E2EE, ToDevice: s.ToDevice})
	if err != nil {
		return nil, err
	}
	api.SetRemoteRooms(s.Federation)
	fedPresence := s.Presence // presence.local_only: none sent, none taken
	if cfg.Presence.LocalOnly {
		fedPresence = nil
	}
	s.Federation.SetEphemeral(s.Typing, s.Sync.Receipts(), fedPresence)
	s.Rooms.SetBackfiller(s.Federation) // /messages fetches history from before this server joined
	// Other servers' users: keys are asked over federation, to-device messages queued as EDUs.
	s.E2EE.SetRemote(s.Federation.RemoteKeys())
	s.ToDevice.SetRemote(s.Federation.RemoteToDevice())
	api.SetRemoteKnocks(s.Federation)
	api.SetRemoteDirectory(s.Federation)
	// After federation: it fetches other servers' media, and serves ours to them.
	s.Media, err = mediaapi.New(s.Store, s.Bus, mediaapi.Options{ServerName: cfg.ServerName, Config: cfg.Media, Dir: cfg.MediaDir(),
		Remote: remoteMedia{s.Federation}}, log)
	if err != nil {
		return nil, err
	}
	s.Media.Routes(r, mediaapi.Middleware{RequireAuth: api.RequireAuth, RequireAdmin: api.RequireAdmin,
		RateLimited: api.RateLimited, Caller: clientapi.Caller})
	s.Federation.Routes(r, s.Media.FederationRoutes)
	if cfg.FederationListen() != "" {
		if s.fedTLS, err = federationTLS(cfg); err != nil {
			return nil, err
		}
		fr := chi.NewRouter()
		api.Wrap(fr)
		s.Federation.Routes(fr, s.Media.FederationRoutes)
		s.fedHandler = fr
	}
	if cfg.Metrics.Enabled && cfg.Metrics.Listen == "" {
		r.Handle(cfg.Metrics.Path, s.metricsHandler())
		if cfg.Metrics.Pprof {
			r.Handle("/debug/pprof/*", pprofHandler())
		}
	}
	s.handler = r
	return s, nil
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry})
}

// Handler is the HTTP handler of the client listener (for tests that bring their own server).
func (s *Server) Handler() http.Handler { return s.handler }

// Listen opens the listeners without serving yet, so the bound addresses are known (port 0 in
// tests).
func (s *Server) Listen() error {
	var err error
	if s.client, err = net.Listen("tcp", s.cfg.Listen.Client); err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen.Client, err)
	}
	if s.cfg.Metrics.Enabled && s.cfg.Metrics.Listen != "" {
		if s.metrics, err = net.Listen("tcp", s.cfg.Metrics.Listen); err != nil {
			s.client.Close()
			return fmt.Errorf("listen on %s: %w", s.cfg.Metrics.Listen, err)
		}
	}
	if err := s.listenFederation(); err != nil {
		s.client.Close()
		if s.metrics != nil {
			s.metrics.Close()
		}
		return err
	}
	return nil
}

// ClientAddr is the bound address of the client listener (after Listen).
func (s *Server) ClientAddr() string { return s.client.Addr().String() }

// MetricsAddr is the bound address of the metrics listener, "" when metrics share the client one.
func (s *Server) MetricsAddr() string {
	if s.metrics == nil {
		return ""
	}
	return s.metrics.Addr().String()
}

// Serve serves until ctx is cancelled, then shuts down gracefully: it stops accepting, lets running
// requests finish within http.shutdown_timeout, and returns.
func (s *Server) Serve(ctx context.Context) error {
	if s.client == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	client := s.httpServer(s.handler)
	client.RegisterOnShutdown(s.api.StopStreams) // streaming syncs end instead of holding shutdown
	servers := []*http.Server{client}
	listeners := []net.Listener{s.client}
	s.log.Info("listening", "client_api", "http://"+s.ClientAddr(), "public_baseurl", s.cfg.BaseURL(), "server_name", s.cfg.ServerName)
	if s.metrics != nil {
		mux := http.NewServeMux()
		mux.Handle(s.cfg.Metrics.Path, s.metricsHandler())
		if s.cfg.Metrics.Pprof {
			mux.Handle("/debug/pprof/", pprofHandler())
		}
		servers = append(servers, s.httpServer(mux))
		listeners = append(listeners, s.metrics)
		s.log.Info("metrics listening", "url", "http://"+s.MetricsAddr()+s.cfg.Metrics.Path)
	} else if s.cfg.Metrics.Enabled {
		s.log.Info("metrics served", "url", "http://"+s.ClientAddr()+s.cfg.Metrics.Path)
	}
	if s.fed != nil {
		servers = append(servers, s.httpServer(s.fedHandler))
		listeners = append(listeners, s.fed)
		s.log.Info("federation listening", "url", "https://"+s.FederationAddr())
	} else {
		s.log.Info("no federation TLS listener (federation.tls has no certificate); federation is served on the client listener, for a TLS proxy in front")
	}

	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { errc <- srv.Serve(listeners[i]) }()
	}
	go s.housekeeping(ctx)

	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	s.log.Info("shutting down", "grace", s.cfg.HTTP.ShutdownTimeout.D())
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.HTTP.ShutdownTimeout.D())
	defer cancel()
	var err error
	for _, srv := range servers {
		err = errors.Join(err, srv.Shutdown(sctx))
	}
	return err
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       s.cfg.HTTP.ReadTimeout.D(),
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// housekeeping purges expired sessions and tokens every minute.
func (s *Server) housekeeping(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Accounts.PurgeExpired(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("purge expired sessions", "err", err)
			}
		}
	}
}

// nodeID names this process on the bus, so that services sharing in-memory state over it can
// tell their own messages from other nodes'.
func nodeID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Close stops the sync notifier, typing, presence and the room writer and releases the bus and
// the database.
func (s *Server) Close() {
	if s.Typing != nil {
		s.Typing.Close()
	}
	if s.Presence != nil {
		s.Presence.Close()
	}
	if s.notifier != nil {
		s.notifier.Close()
	}
	if s.Media != nil {
		s.Media.Close()
	}
	if s.Federation != nil {
		s.Federation.Close()
	}
	if s.Rooms != nil {
		s.Rooms.Close()
	}
	if s.Bus != nil {
		s.Bus.Close()
	}
	if s.Store != nil {
		s.Store.Close()
	}
}

// DataLocations describes where the server keeps its data, for the start-up log.
func DataLocations(cfg *config.Config) []any {
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	out := []any{"data_dir", abs(cfg.DataDir), "signing_key", abs(cfg.SigningKeyFile()), "database", cfg.Database.Backend}
	if cfg.Database.Backend == "sqlite" {
		out = append(out, "sqlite_path", abs(cfg.SQLiteFile()))
	}
	if len(cfg.NATS.URLs) == 0 {
		out = append(out, "nats", "embedded", "nats_store", abs(cfg.NATSStoreDir()))
	} else {
		out = append(out, "nats", cfg.NATS.URLs)
	}
	if cfg.Media.Store == "s3" {
		out = append(out, "media", "s3://"+cfg.Media.S3.Endpoint+"/"+cfg.Media.S3.Bucket+"/"+cfg.Media.S3.Prefix)
	} else {
		out = append(out, "media", abs(cfg.MediaDir()))
	}
	return out
}

// NewLogger builds the logger the configuration asks for.
func NewLogger(cfg config.Logging, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// pprofHandler serves net/http/pprof under /debug/pprof/.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// API is the client API (for tests that need its hooks).
func (s *Server) API() *clientapi.API { return s.api }

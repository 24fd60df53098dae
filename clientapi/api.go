// Package clientapi serves the Matrix client-server API (/_matrix/client/*), the .well-known
// discovery documents, and the Synapse-compatible admin endpoints that admin tools and test suites
// use. Handlers decode and validate, call a domain service, and return a value or a Matrix error.
package clientapi

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/filter"
	"github.com/hearthmx/homeserver/homeserver/push"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
	hsync "github.com/hearthmx/homeserver/homeserver/sync"
)

// API holds what the client API handlers need.
type API struct {
	cfg            *config.Config
	accounts       *account.Service
	rooms          *room.Service
	push           *push.Service
	syncer         *hsync.Service
	log            *slog.Logger
	metrics        *metrics
	perIP, perUser *limiter
	exemptNets     []*net.IPNet
	trustedProxies []*net.IPNet
	// streams is cancelled by StopStreams when the server shuts down, ending SSE and WebSocket
	// streams, which http.Server.Shutdown does not wait out or close by itself.
	streams     context.Context
	stopStreams context.CancelFunc

	// filters are the stored filters /sync named, parsed (shared: read, never modify them);
	// filterTexts the same parsed filters by their JSON.
	filtersMu   sync.Mutex
	filters     map[parsedFilterKey]filter.Filter
	filterTexts map[string]filter.Filter

	// To-device messages, key backup and dehydrated devices (set by SetToDevice, SetBackup,
	// SetDehydrated before serving; nil answers M_UNRECOGNIZED).
	toDevice   *e2ee.ToDevice
	backup     *e2ee.Backup
	dehydrated *e2ee.Dehydrated
	// e2ee is the key-management service (set by SetE2EE; nil answers M_UNRECOGNIZED).
	e2ee *e2ee.Service
	// remote joins rooms on other servers (set by SetRemoteRooms; nil: local rooms only).
	remote RemoteRooms
	// knocks knocks on rooms of other servers (set by SetRemoteKnocks; nil: local rooms only).
	knocks RemoteKnocks
	// directory reads other servers' directories, spaces, profiles and timestamps (set by
	// SetRemoteDirectory; nil: this server's only).
	directory RemoteDirectory
}

// StopStreams ends every open SSE and WebSocket sync stream (at server shutdown).
func (a *API) StopStreams() { a.stopStreams() }

// New builds the client API. reg receives the HTTP metrics (nil for none).
func New(cfg *config.Config, accounts *account.Service, rooms *room.Service, pushRules *push.Service, syncer *hsync.Service, log *slog.Logger, reg prometheus.Registerer) *API {
	streams, stop := context.WithCancel(context.Background())
	return &API{
		streams:        streams,
		stopStreams:    stop,
		cfg:            cfg,
		accounts:       accounts,
		rooms:          rooms,
		push:           pushRules,
		syncer:         syncer,
		log:            log,
		metrics:        newMetrics(reg),
		perIP:          newLimiter(cfg.RateLimits.PerIP),
		perUser:        newLimiter(cfg.RateLimits.PerUser),
		exemptNets:     parseNets(cfg.RateLimits.ExemptIPs),
		trustedProxies: parseNets(cfg.HTTP.TrustedProxies),
	}
}

// Wrap applies the middleware every request gets (request ID, logs, metrics, panic recovery, CORS,
// body limit) to a router, and answers unknown paths and wrong methods with M_UNRECOGNIZED.
func (a *API) Wrap(r chi.Router) {
	r.Use(a.withRequestID, a.withLogAndMetrics, withCORS, withBodyLimit(a.cfg.HTTP.MaxBodyBytes))
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, spec.ErrUnrecognized)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, spec.ErrUnrecognized.With("Method not allowed for this endpoint").WithStatus(http.StatusMethodNotAllowed))
	})
}

// Routes mounts the client API on r. The route table: one line per endpoint.
func (a *API) Routes(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }

	r.Get("/.well-known/matrix/client", h(a.wellKnownClient))
	r.Get("/.well-known/matrix/server", h(a.wellKnownServer))
	r.Get("/.well-known/matrix/support", h(a.wellKnownSupport))
	r.Get("/_matrix/client/versions", h(a.versions))

	client := func(r chi.Router) {
		// Unauthenticated.
		r.Get("/login", h(a.loginFlows))
		r.With(a.rateLimited).Post("/login", h(a.login))
		r.With(a.rateLimited).Post("/register", h(a.register))
		r.With(a.rateLimited).Get("/register/available", h(a.registerAvailable))
		r.With(a.rateLimited).Post("/refresh", h(a.refresh))
		a.routesProfilePublic(r)
		a.routesDirectoryPublic(r)

		// Authenticated.
		r.Group(func(r chi.Router) {
			r.Use(a.requireAuth)
			r.Get("/capabilities", h(a.capabilities))
			r.Get("/account/whoami", h(a.whoami))
			r.Post("/logout", h(a.logout))
			r.Post("/logout/all", h(a.logoutAll))
			r.With(a.rateLimited).Post("/account/password", h(a.changePassword))
			r.With(a.rateLimited).Post("/account/deactivate", h(a.deactivate))
			r.Get("/account/3pid", h(a.threepids))
			r.Get("/admin/whois/{userId}", h(a.whois))
			r.Get("/devices", h(a.listDevices))
			r.Get("/devices/{deviceId}", h(a.getDevice))
			r.Put("/devices/{deviceId}", h(a.putDevice))
			r.Delete("/devices/{deviceId}", h(a.deleteDevice))
			r.Post("/delete_devices", h(a.deleteDevices))
			a.routesProfile(r)
			a.routesAccountData(r)
			a.routesFilter(r)
			a.routesOpenID(r)
			a.routesRooms(r)
			a.routesDirectory(r)
			a.routesReports(r)
			a.routesThirdParty(r)
			a.routesTyping(r)
			a.routesReceipts(r)
			a.routesPresence(r)
			a.routesPushRules(r)
			a.routesToDevice(r)
			a.routesRoomKeys(r)
			a.routesKeys(r)
		})
	}
	// GET /sync is routed here, ahead of its prefix's subrouter: one lookup instead of two, and
	// no path value for the subrouter's wildcard (a long poll makes one request per response).
	a.routesSync(r.With(a.requireAuth))
	r.Route("/_matrix/client/v3", client)
	r.Route("/_matrix/client/r0", client)
	r.Route("/_matrix/client/v1", func(r chi.Router) {
		r.With(a.rateLimited).Get("/register/m.login.registration_token/validity", h(a.registrationTokenValidity))
		a.routesRoomSummary(r)
		r.Group(func(r chi.Router) {
			r.Use(a.requireAuth)
			a.routesRelations(r)
			a.routesDirectoryV1(r)
			r.Get("/mutual_rooms", h(a.mutualRooms))
		})
	})
	r.Route("/_matrix/client/unstable/org.matrix.msc3814.v1", func(r chi.Router) {
		r.Use(a.requireAuth)
		a.routesDehydratedDevice(r)
	})
	r.Route("/_synapse/admin/v1", a.routesAdmin)
	a.routesSyncStreams(r) // SSE and WebSocket sync under /_matrix/client/unstable/dev.hearth
}

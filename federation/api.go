// Package federation serves the server-server API (/_matrix/federation/*, /_matrix/key/*) and
// holds what federation needs to talk to other servers: this server's key response, the ring of
// other servers' keys (federation/serverkey), the signed HTTP client (federation/fedclient) and
// the X-Matrix authentication of incoming requests (federation/xmatrix).
//
// Files: api.go (route table), auth.go (X-Matrix middleware), acl.go (server ACLs), keys.go,
// send.go and receive.go (events in), sender.go and edu.go (events and EDUs out, EDU dispatch),
// events.go (reads by other servers), backfill.go, join.go, leave.go, invite.go, knock.go,
// thirdparty.go, directory.go, directory_remote.go, publicrooms.go, hierarchy.go, timestamp.go,
// profile.go, ephemeral.go (typing, receipts, presence), e2ee.go and todevice.go (keys, devices,
// to-device), media.go. What is done and what is not: docs/federation.md.
package federation

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/e2ee"
	"github.com/hearthmx/homeserver/federation/cert"
	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/federation/serverkey"
	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/netguard"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/serveracl"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Options are what New needs.
type Options struct {
	ServerName string
	Version    string
	Key        signing.Key
	// Config is the federation section of the configuration.
	Config   config.Federation
	Store    *storage.Store
	Accounts *account.Service
	Rooms    *room.Service
	// Bus wakes the outbound queue when the room service queues events (nil: it polls).
	Bus *bus.Bus
	// MaxBodyBytes bounds the bodies of incoming requests.
	MaxBodyBytes int64
	Log          *slog.Logger
	// E2EE and ToDevice serve our users' keys and take other servers' device list updates and
	// to-device messages (e2ee.go, todevice.go); nil: those endpoints answer 404.
	E2EE     *e2ee.Service
	ToDevice *e2ee.ToDevice
}

// API holds what the federation handlers need.
type API struct {
	serverName string
	version    string
	accounts   *account.Service
	own        *serverkey.Own
	keys       *serverkey.Ring
	client     *fedclient.Client
	maxBody    int64
	log        *slog.Logger
	key        signing.Key
	store      *storage.Store
	rooms      *room.Service
	sender     *Sender
	// versions caches room versions (they never change), room ID -> event.Version.
	versions sync.Map
	// inflight holds the /send transactions being processed, by origin and txn ID.
	inflight inflight
	// remote caches other servers' profile and hierarchy answers (directory_remote.go).
	remote remoteCaches
	// acls caches the rooms' compiled server ACLs (acl.go).
	acls serveracl.Cache
	// edus holds the handlers of incoming EDUs by edu_type (edu.go).
	edus map[string]EDUHandler
	// e2e holds the e2ee services and the device list announcer (e2ee.go); nil without them.
	e2e *e2eeFed
	// eph connects typing, receipts and presence with federation (ephemeral.go); nil without them.
	eph *ephemeralFed
}

// New builds the federation API, its key ring and its client.
func New(o Options) (*API, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	cfg := o.Config
	var old []serverkey.OldKey
	for _, s := range cfg.OldVerifyKeys {
		k, err := config.ParseOldVerifyKey(s)
		if err != nil {
			return nil, fmt.Errorf("federation.old_verify_keys: %w", err)
		}
		old = append(old, serverkey.OldKey{KeyID: k.KeyID, Public: k.Public, ExpiredTS: k.ExpiredTS})
	}
	var notaries []serverkey.Notary
	byName := map[string]int{}
	for _, s := range cfg.TrustedKeyServers {
		ks, err := config.ParseKeyServer(s)
		if err != nil {
			return nil, fmt.Errorf("federation.trusted_key_servers: %w", err)
		}
		i, ok := byName[ks.ServerName]
		if !ok {
			i = len(notaries)
			byName[ks.ServerName] = i
			notaries = append(notaries, serverkey.Notary{ServerName: ks.ServerName, Keys: map[string]ed25519.PublicKey{}})
		}
		notaries[i].Keys[ks.KeyID] = ks.Public
	}
	guard, err := netguard.New(cfg.AllowedNetworks)
	if err != nil {
		return nil, fmt.Errorf("federation.allowed_networks: %w", err)
	}
	roots, err := cert.Pool(cfg.TLS.ExtraCAFiles)
	if err != nil {
		return nil, fmt.Errorf("federation.tls.extra_ca_files: %w", err)
	}
	client := fedclient.New(fedclient.Options{
		ServerName:         o.ServerName,
		Key:                o.Key,
		RootCAs:            roots,
		InsecureSkipVerify: cfg.TLS.InsecureSkipVerify,
		Guard:              guard.Check,
		Dial:               guard.Dialer(10 * time.Second).DialContext, // checks again, on the address dialled
		Timeout:            cfg.RequestTimeout.D(),
		Log:                o.Log,
	})
	own := serverkey.NewOwn(o.ServerName, o.Key, old, cfg.KeyValidity.D(), nil)
	ring := serverkey.NewRing(serverkey.Options{Own: own, Store: o.Store, Client: client, Notaries: notaries, Log: o.Log})
	a := &API{serverName: o.ServerName, version: o.Version, accounts: o.Accounts, own: own, keys: ring,
		client: client, maxBody: o.MaxBodyBytes, log: o.Log, key: o.Key, store: o.Store, rooms: o.Rooms}
	a.registerEDUHandlers()
	if o.Rooms != nil {
		a.sender, err = NewSender(SenderOptions{ServerName: o.ServerName, Store: o.Store, Rooms: o.Rooms, Client: client, Bus: o.Bus,
			RetryInitial: cfg.RetryInitial.D(), RetryMax: cfg.RetryMax.D(), Log: o.Log})
		if err != nil {
			return nil, err
		}
	}
	if err := a.startE2EE(o.E2EE, o.ToDevice, o.Bus); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// Close stops the outbound queues.
func (a *API) Close() {
	a.stopE2EE()
	a.stopEphemeral()
	if a.sender != nil {
		a.sender.Close()
	}
}

// Sender is the outbound queue (nil without a room service).
func (a *API) Sender() *Sender { return a.sender }

// Keys is the ring of server keys; Keys().Key is the event.KeyFunc for signature checks.
func (a *API) Keys() *serverkey.Ring { return a.keys }

// Client sends signed requests to other servers.
func (a *API) Client() *fedclient.Client { return a.client }

// Routes mounts the federation and key endpoints on r. The route table: one line per endpoint.
// Every /_matrix/federation endpoint goes into the authenticated group unless the spec marks it
// unauthenticated (TestEveryFederationEndpointIsAuthenticated walks this table). media mounts
// endpoints served by other components in the authenticated group (mediaapi.FederationRoutes:
// /v1/media/download and /v1/media/thumbnail).
func (a *API) Routes(r chi.Router, media ...func(chi.Router)) {
	r.Get("/_matrix/key/v2/server", a.serverKeys)
	r.Get("/_matrix/key/v2/server/{keyId}", a.serverKeys) // removed from the spec; older servers still ask
	r.Get("/_matrix/key/v2/query/{serverName}", a.queryKeysOne)
	r.Post("/_matrix/key/v2/query", a.queryKeys)

	r.Route("/_matrix/federation", func(r chi.Router) {
		// Unauthenticated (spec: no signedRequest security).
		r.Get("/v1/version", a.serverVersion)
		r.Get("/v1/openid/userinfo", a.openIDUserInfo)
		r.Put("/v1/3pid/onbind", a.handle(a.onBind))

		// Signed with X-Matrix.
		r.Group(func(r chi.Router) {
			r.Use(a.authenticate)
			// Path parameters decoded: %40user%3Aserver as Synapse sends it (pathparam.go).
			r.Use(unescapePathParams)
			r.Use(a.aclGuard) // routes naming a {roomId}: 403 for servers the room's ACL denies (acl.go)
			r.Get("/v1/query/profile", a.queryProfile)
			r.Get("/v1/query/directory", a.handle(a.queryDirectory))
			r.Get("/v1/publicRooms", a.handle(a.getPublicRooms))
			r.Post("/v1/publicRooms", a.handle(a.postPublicRooms))
			r.Get("/v1/hierarchy/{roomId}", a.handle(a.getHierarchy))
			r.Get("/v1/timestamp_to_event/{roomId}", a.handle(a.getTimestampToEvent))
			r.Put("/v1/send/{txnId}", a.handle(a.sendTransaction))
			r.Get("/v1/event/{eventId}", a.handle(a.getEvent))
			r.Get("/v1/state_ids/{roomId}", a.handle(a.getStateIDs))
			r.Get("/v1/state/{roomId}", a.handle(a.getState))
			r.Get("/v1/event_auth/{roomId}/{eventId}", a.handle(a.getEventAuth))
			r.Post("/v1/get_missing_events/{roomId}", a.handle(a.getMissingEvents))
			r.Get("/v1/backfill/{roomId}", a.handle(a.getBackfill))
			r.Get("/v1/make_join/{roomId}/{userId}", a.handle(a.makeJoin))
			r.Put("/v2/send_join/{roomId}/{eventId}", a.handle(a.sendJoin))
			r.Get("/v1/make_leave/{roomId}/{userId}", a.handle(a.makeLeave))
			r.Put("/v2/send_leave/{roomId}/{eventId}", a.handle(a.sendLeave))
			r.Put("/v2/invite/{roomId}/{eventId}", a.handle(a.invite))
			for _, mount := range media {
				mount(r) // GET /v1/media/download/{mediaId}, /v1/media/thumbnail/{mediaId}
			}
			r.Post("/v1/user/keys/query", a.handle(a.userKeysQuery))
			r.Post("/v1/user/keys/claim", a.handle(a.userKeysClaim))
			r.Get("/v1/user/devices/{userId}", a.handle(a.userDevices))
			r.Get("/v1/make_knock/{roomId}/{userId}", a.handle(a.makeKnock))
			r.Put("/v1/send_knock/{roomId}/{eventId}", a.handle(a.sendKnock))
			r.Put("/v1/exchange_third_party_invite/{roomId}", a.handle(a.exchangeThirdPartyInvite))
		})
	})
}

// unauthenticated are the /_matrix/federation endpoints the spec serves without X-Matrix
// signatures: the version, OpenID userinfo (it has its own token) and the identity servers'
// PUT /3pid/onbind.
var unauthenticated = map[string]bool{
	"GET /_matrix/federation/v1/version":         true,
	"GET /_matrix/federation/v1/openid/userinfo": true,
	"PUT /_matrix/federation/v1/3pid/onbind":     true,
}

// serverVersion is GET /_matrix/federation/v1/version.
func (a *API) serverVersion(w http.ResponseWriter, _ *http.Request) {
	write(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "hearth", "version": a.version}})
}

// openIDUserInfo is GET /_matrix/federation/v1/openid/userinfo: exchanges an OpenID token from
// /openid/request_token for the user ID it was issued to.
func (a *API) openIDUserInfo(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		write(w, http.StatusUnauthorized, spec.ErrMissingToken.With("access_token is required"))
		return
	}
	user, err := a.accounts.OpenIDUser(r.Context(), token)
	if err != nil {
		write(w, http.StatusUnauthorized, spec.ErrUnknownToken.With("Unknown or expired OpenID token"))
		return
	}
	write(w, http.StatusOK, map[string]string{"sub": string(user)})
}

func write(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	writeRaw(w, status, body)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// handle adapts a handler that returns a value (JSON-encoded; a json.RawMessage is sent as is)
// or an error.
func (a *API) handle(fn func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		if raw, ok := v.(json.RawMessage); ok {
			writeRaw(w, http.StatusOK, raw)
			return
		}
		write(w, http.StatusOK, v)
	}
}

// writeError sends a Matrix error; errors that are not one are logged and sent as M_UNKNOWN.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *spec.Error
	if errors.As(err, &e) {
		write(w, e.Status, e)
		return
	}
	a.log.Error("federation: internal error", "path", r.URL.Path, "err", err)
	write(w, http.StatusInternalServerError, spec.ErrUnknown)
}

package serverkey

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Requester sends federation requests (fedclient.Client).
type Requester interface {
	Do(ctx context.Context, destination, method, path string, body any) ([]byte, error)
}

// Notary is a trusted key server (federation.trusted_key_servers) with the keys it signs with.
type Notary struct {
	ServerName string
	Keys       map[string]ed25519.PublicKey
}

// Options configure a Ring.
type Options struct {
	Own      *Own
	Store    *storage.Store
	Client   Requester
	Notaries []Notary
	// RefetchInterval is the least time between two fetches of one server's keys (a request
	// or event naming an unknown key otherwise makes us ask every time); 0 is one minute.
	RefetchInterval time.Duration
	Log             *slog.Logger
	Now             func() time.Time
}

// MaxKeyValidity caps how long a fetched key is trusted after it was fetched, whatever its
// valid_until_ts says (server-server API, keys.yaml: "the lesser of this field and 7 days").
const MaxKeyValidity = 7 * 24 * time.Hour

// maxServers bounds the in-memory cache (entries are reloaded from the database when needed).
const maxServers = 10000

// Ring finds the keys of other servers: in memory, then in the database, then by asking the
// server (GET /_matrix/key/v2/server), then the notaries (POST /_matrix/key/v2/query). Fetched
// responses are verified, stored, and served again by the notary endpoints.
type Ring struct {
	own      *Own
	store    *storage.Store
	client   Requester
	notaries []Notary
	refetch  time.Duration
	log      *slog.Logger
	now      func() time.Time

	flight singleflight.Group

	mu      sync.Mutex
	servers map[string]*serverKeys
	// reads numbers the database reads of reload, in the order they start.
	reads uint64
}

// serverKeys is what the ring knows of one server.
type serverKeys struct {
	loaded    bool // the database rows were read
	keys      map[string]storage.ServerKey
	lastFetch time.Time
	// lastErr is why the last fetch failed (nil: it was answered).
	lastErr error
	// read is the number of the reload whose rows keys holds: a slower read that started
	// earlier, before the rows of a fetch were stored, must not put its older rows back.
	read uint64
}

// NewRing returns a Ring.
func NewRing(o Options) *Ring {
	r := &Ring{own: o.Own, store: o.Store, client: o.Client, notaries: o.Notaries, refetch: o.RefetchInterval,
		log: o.Log, now: o.Now, servers: map[string]*serverKeys{}}
	if r.refetch <= 0 {
		r.refetch = time.Minute
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r
}

// ServerName is the name of this server.
func (r *Ring) ServerName() string { return r.own.serverName }

// Key is an event.KeyFunc: the key keyID of server that was valid at atTS (milliseconds), from
// verify_keys or, for times before it expired, old_verify_keys.
func (r *Ring) Key(ctx context.Context, server, keyID string, atTS int64) (ed25519.PublicKey, error) {
	return r.lookup(ctx, server, keyID, atTS, false)
}

// RequestKey is an xmatrix.KeyFunc: a key server publishes in verify_keys now (old keys do not
// authenticate requests).
func (r *Ring) RequestKey(ctx context.Context, server, keyID string) (ed25519.PublicKey, error) {
	return r.lookup(ctx, server, keyID, r.now().UnixMilli(), true)
}

var _ event.KeyFunc = (*Ring)(nil).Key

// ErrKeyUnavailable matches an UnavailableError.
var ErrKeyUnavailable = errors.New("signing key not available now")

// UnavailableError is a key lookup that failed for a reason that may pass: the server and the
// notaries could not be heard (now, or at the last fetch within the refetch interval), or the
// database could not be read. It matches event.ErrKeyNotFound, so that the signature is skipped
// as one by an unknown key, and ErrKeyUnavailable, so that a caller that must not lose the event
// can Refetch the key and verify again.
type UnavailableError struct {
	Server, KeyID string
	AtTS          int64 // the time the key was wanted for
	Err           error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%v: %s of %s: %v", ErrKeyUnavailable, e.KeyID, e.Server, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

func (e *UnavailableError) Is(target error) bool {
	return target == ErrKeyUnavailable || target == event.ErrKeyNotFound
}

// usable says whether a stored key verifies something signed at atTS, and whether asking again
// could change the answer.
func usable(k storage.ServerKey, atTS int64, current bool) (ok, final bool) {
	if k.ExpiredTS != 0 {
		// An old key stays old: refetching cannot make it current or move its expiry.
		return !current && atTS < k.ExpiredTS, true
	}
	return atTS <= effectiveValidUntil(k), false
}

func effectiveValidUntil(k storage.ServerKey) int64 {
	return min(k.ValidUntilTS, k.FetchedTS+MaxKeyValidity.Milliseconds())
}

func (r *Ring) lookup(ctx context.Context, server, keyID string, atTS int64, current bool) (ed25519.PublicKey, error) {
	if server == r.own.serverName {
		return r.own.Key(keyID, atTS, current)
	}
	k, found, err := r.cached(ctx, server, keyID)
	if err != nil {
		return nil, &UnavailableError{Server: server, KeyID: keyID, AtTS: atTS, Err: err}
	}
	if found {
		ok, final := usable(k, atTS, current)
		if ok {
			return decodeKey(k.PublicKey)
		}
		if final {
			return nil, fmt.Errorf("%w: %s of %s expired at %d", event.ErrKeyNotFound, keyID, server, k.ExpiredTS)
		}
	}
	// Another node may have fetched it meanwhile: look in the database before asking the network.
	if err := r.reload(ctx, server); err != nil {
		return nil, &UnavailableError{Server: server, KeyID: keyID, AtTS: atTS, Err: err}
	}
	if k, found, _ = r.cached(ctx, server, keyID); found {
		if ok, _ := usable(k, atTS, current); ok {
			return decodeKey(k.PublicKey)
		}
	}
	fetchErr := r.fetch(ctx, server, keyID, atTS, false)
	if fetchErr != nil {
		r.log.Debug("federation: fetching server keys", "server", server, "key_id", keyID, "err", fetchErr)
	}
	if k, found, err = r.cached(ctx, server, keyID); err != nil {
		return nil, &UnavailableError{Server: server, KeyID: keyID, AtTS: atTS, Err: err}
	}
	if found {
		if ok, _ := usable(k, atTS, current); ok {
			return decodeKey(k.PublicKey)
		}
	}
	if fetchErr != nil && !errors.Is(fetchErr, errFetchedRecently) {
		// The server (or a notary) was not heard: it may well have the key.
		return nil, &UnavailableError{Server: server, KeyID: keyID, AtTS: atTS, Err: fetchErr}
	}
	if found {
		return nil, fmt.Errorf("%w: %s of %s is not valid at %d", event.ErrKeyNotFound, keyID, server, atTS)
	}
	return nil, fmt.Errorf("%w: %s of %s", event.ErrKeyNotFound, keyID, server)
}

// Refetch asks server (then the notaries) for its keys now, even if it was asked within the
// refetch interval, for a caller that cannot do without a key that was unavailable
// (UnavailableError): the join of a room, whose state must verify whole. keyID and atTS are the
// key wanted and when it must be valid (they decide whether the notaries are asked too).
func (r *Ring) Refetch(ctx context.Context, server, keyID string, atTS int64) error {
	if server == r.own.serverName {
		return nil
	}
	return r.fetch(ctx, server, keyID, atTS, true)
}

// cached returns the key from memory, reading the server's rows from the database the first
// time.
func (r *Ring) cached(ctx context.Context, server, keyID string) (storage.ServerKey, bool, error) {
	r.mu.Lock()
	e := r.servers[server]
	if e != nil && e.loaded {
		k, ok := e.keys[keyID]
		r.mu.Unlock()
		return k, ok, nil
	}
	r.mu.Unlock()
	if err := r.reload(ctx, server); err != nil {
		return storage.ServerKey{}, false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e = r.servers[server]
	if e == nil { // evicted meanwhile
		return storage.ServerKey{}, false, nil
	}
	k, ok := e.keys[keyID]
	return k, ok, nil
}

// reload reads a server's keys from the database into memory.
func (r *Ring) reload(ctx context.Context, server string) error {
	read := r.beginRead()
	rows, err := r.store.Read().ServerKeys(ctx, server)
	if err != nil {
		return fmt.Errorf("server keys of %s: %w", server, err)
	}
	r.apply(server, read, rows)
	return nil
}

// beginRead numbers a database read of server keys that is about to start.
func (r *Ring) beginRead() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	return r.reads
}

// apply puts the rows of database read number read in memory, unless a read that started later
// (and so saw at least as much) is there already: a slow read begun before a fetch stored its
// keys must not hide them again (lookups then failed with "key not found" while the key was
// stored).
func (r *Ring) apply(server string, read uint64, rows []storage.ServerKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entry(server)
	if e.loaded && e.read > read {
		return
	}
	e.loaded, e.read = true, read
	e.keys = make(map[string]storage.ServerKey, len(rows))
	for _, k := range rows {
		e.keys[k.KeyID] = k
	}
}

// entry returns the memory entry of server, creating it (r.mu held).
func (r *Ring) entry(server string) *serverKeys {
	e := r.servers[server]
	if e == nil {
		if len(r.servers) >= maxServers {
			for name := range r.servers { // drop an arbitrary tenth; they reload from the database
				delete(r.servers, name)
				if len(r.servers) < maxServers*9/10 {
					break
				}
			}
		}
		e = &serverKeys{}
		r.servers[server] = e
	}
	return e
}

// errFetchedRecently is a fetch skipped because the last one, within the refetch interval,
// succeeded: what it stored is what the server has.
var errFetchedRecently = errors.New("fetched recently")

// fetch asks server, then the notaries, for its keys (valid until at least minValid), at most once
// per RefetchInterval unless force, and stores what verifies.
func (r *Ring) fetch(ctx context.Context, server, keyID string, minValid int64, force bool) error {
	flight := server
	if force {
		flight = "force " + server // not answered by a throttled lookup's shared call
	}
	ch := r.flight.DoChan(flight, func() (any, error) {
		// The throttle is checked inside the shared call, so that lookups arriving while a fetch
		// is under way wait for its result instead of failing as "fetched recently".
		r.mu.Lock()
		e := r.entry(server)
		if !force && !e.lastFetch.IsZero() && r.now().Sub(e.lastFetch) < r.refetch {
			lastErr := e.lastErr
			r.mu.Unlock()
			if lastErr != nil {
				return nil, fmt.Errorf("fetched recently, and that failed: %w", lastErr)
			}
			return nil, errFetchedRecently
		}
		e.lastFetch = r.now()
		r.mu.Unlock()
		// Shared by everyone waiting for this server: one of them giving up must not cancel it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		err := r.fetchFrom(ctx, server, keyID, minValid)
		r.mu.Lock()
		r.entry(server).lastErr = err
		r.mu.Unlock()
		return nil, err
	})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case res := <-ch:
		return res.Err
	}
}

// fetchFrom asks server, then the notaries, for its keys and stores what verifies. It returns nil
// when keyID was found, or when the server answered without it and no notary failed.
func (r *Ring) fetchFrom(ctx context.Context, server, keyID string, minValid int64) error {
	err := r.fetchDirect(ctx, server)
	if err == nil {
		if k, ok, _ := r.cached(ctx, server, keyID); ok {
			if ok, _ := usable(k, minValid, false); ok {
				return nil
			}
		}
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range r.notaries {
		if n.ServerName == server {
			continue
		}
		err := r.fetchFromNotary(ctx, n, server, keyID, minValid)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// storeResponses saves verified responses (fetched from `from`) and reloads the memory entry.
func (r *Ring) storeResponses(ctx context.Context, from string, resps []*Response) error {
	fetched := r.now().UnixMilli()
	var rows []storage.ServerKey
	servers := map[string]bool{}
	for _, res := range resps {
		servers[res.ServerName] = true
		for id, pub := range res.VerifyKeys {
			rows = append(rows, storage.ServerKey{ServerName: res.ServerName, KeyID: id, PublicKey: encodeKey(pub),
				ValidUntilTS: res.ValidUntilTS, FetchedTS: fetched, FromServer: from, KeyJSON: res.Raw})
		}
		for id, old := range res.OldKeys {
			rows = append(rows, storage.ServerKey{ServerName: res.ServerName, KeyID: id, PublicKey: encodeKey(old.Public),
				ValidUntilTS: res.ValidUntilTS, ExpiredTS: max(old.ExpiredTS, 1), FetchedTS: fetched, FromServer: from, KeyJSON: res.Raw})
		}
	}
	if err := r.store.Write(ctx, func(c storage.Conn) error { return c.StoreServerKeys(ctx, rows) }); err != nil {
		return fmt.Errorf("store server keys: %w", err)
	}
	for s := range servers {
		if err := r.reload(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

package account

import (
	"sync"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// tokenCache keeps access-token lookups in memory, so an authenticated request costs a hash and a
// map read instead of a query. It is revocation-safe:
//
//   - every change that can revoke a user's tokens (logout, device deletion, password change,
//     deactivation, refresh, login again on a device) drops the user's entries on this node before
//     the call returns, and on other nodes through the bus (SubjectTokenRevoked);
//   - a lookup that read the database before a revocation committed cannot put its stale row back:
//     it inserts only if no revocation happened since it started (the epoch is unchanged);
//   - entries live at most tokenCacheTTL, which bounds staleness should a bus message be lost.
//
// Expiry of refreshable tokens is checked on every use against the cached expires_ts.
type tokenCache struct {
	mu      sync.Mutex
	epoch   uint64
	entries map[string]cachedToken // by token hash
	now     func() time.Time
}

type cachedToken struct {
	t       storage.AccessToken
	expires time.Time // when the entry (not the token) goes stale
}

const (
	tokenCacheTTL = 5 * time.Minute
	// tokenCacheMax bounds memory: a full cache starts over rather than tracking recency.
	tokenCacheMax = 100_000
)

func newTokenCache(now func() time.Time) *tokenCache {
	return &tokenCache{entries: make(map[string]cachedToken), now: now}
}

// get returns the cached row of a token hash, and the epoch to pass to put after a miss.
func (c *tokenCache) get(hash string) (storage.AccessToken, bool, uint64) {
	if c == nil {
		return storage.AccessToken{}, false, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[hash]
	if ok && c.now().Before(e.expires) {
		return e.t, true, c.epoch
	}
	if ok {
		delete(c.entries, hash)
	}
	return storage.AccessToken{}, false, c.epoch
}

// put caches a row read from the database, unless a revocation happened since get returned epoch.
func (c *tokenCache) put(t storage.AccessToken, epoch uint64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return
	}
	if len(c.entries) >= tokenCacheMax {
		clear(c.entries)
	}
	c.entries[t.Hash] = cachedToken{t: t, expires: c.now().Add(tokenCacheTTL)}
}

// revoke drops every cached token of a user ("" for everyone) and fences off lookups in flight.
func (c *tokenCache) revoke(localpart string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	if localpart == "" {
		clear(c.entries)
		return
	}
	for h, e := range c.entries {
		if e.t.Localpart == localpart {
			delete(c.entries, h)
		}
	}
}

// revokeTokens is called after every write that can revoke tokens of a
// user: it drops them from this node's cache and tells the other nodes.
func (s *Service) revokeTokens(localpart string) {
	s.tokens.revoke(localpart)
	if s.bus == nil {
		return
	}
	if err := s.bus.Publish(bus.SubjectTokenRevoked, []byte(localpart)); err != nil {
		// Other nodes then keep the entries until tokenCacheTTL; say so loudly.
		s.log.Error("publish token revocation; other nodes may accept revoked tokens until their cache entries expire",
			"localpart", localpart, "err", err)
	}
}

// listenRevocations drops cache entries when another node (or this one) announces a revocation.
// Losing the bus connection may lose announcements, so reconnecting clears the whole cache.
func (s *Service) listenRevocations() error {
	if s.bus == nil {
		return nil
	}
	_, err := s.bus.Subscribe(bus.SubjectTokenRevoked, func(data []byte) { s.tokens.revoke(string(data)) })
	if err != nil {
		return err
	}
	s.bus.OnReconnect(func() { s.tokens.revoke("") })
	return nil
}

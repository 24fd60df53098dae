package serverkey

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/signing"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

func newKey(t *testing.T, id string) signing.Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signing.Key{ID: id, Private: priv}
}

// fakeNet answers federation requests from fake servers.
type fakeNet struct {
	mu    sync.Mutex
	calls map[string]int // "server method path"
	// handlers by destination
	servers map[string]func(method, path string, body []byte) ([]byte, error)
}

func (f *fakeNet) Do(_ context.Context, dest, method, path string, body any) ([]byte, error) {
	f.mu.Lock()
	f.calls[dest+" "+method+" "+path]++
	h := f.servers[dest]
	f.mu.Unlock()
	if h == nil {
		return nil, errors.New("connection refused")
	}
	b, _ := json.Marshal(body)
	return h(method, path, b)
}

func (f *fakeNet) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[key]
}

// keyServer serves the key response of own.
func keyServer(own *Own) func(string, string, []byte) ([]byte, error) {
	return func(method, path string, _ []byte) ([]byte, error) {
		if method == "GET" && path == "/_matrix/key/v2/server" {
			return own.Response()
		}
		return nil, errors.New("404")
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRingDirect(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, store *storage.Store) {
		ctx := context.Background()
		ring, net, clk, remoteKey := directRing(t, store)
		const direct = "remote.org GET /_matrix/key/v2/server"

		got, err := ring.RequestKey(ctx, "remote.org", "ed25519:r1")
		if err != nil || !got.Equal(remoteKey.Public()) {
			t.Fatalf("RequestKey = %v, %v", got, err)
		}
		// Cached in memory: no second fetch.
		if _, err := ring.Key(ctx, "remote.org", "ed25519:r1", clk.now().UnixMilli()); err != nil || net.count(direct) != 1 {
			t.Fatalf("second lookup: %v, fetches %d", err, net.count(direct))
		}
		// Cached in the database: a new ring (another node, a restart) does not fetch either.
		ring2 := NewRing(Options{Own: NewOwn("us.org", newKey(t, "ed25519:us"), nil, time.Hour, clk.now), Store: store, Client: net, Now: clk.now})
		if _, err := ring2.Key(ctx, "remote.org", "ed25519:r1", clk.now().UnixMilli()); err != nil || net.count(direct) != 1 {
			t.Fatalf("lookup by a second ring: %v, fetches %d", err, net.count(direct))
		}
		// An unknown key ID is not fetched for within the refetch interval of the last fetch; after
		// it, once, then not again within the interval.
		if _, err := ring.Key(ctx, "remote.org", "ed25519:nope", clk.now().UnixMilli()); !errors.Is(err, event.ErrKeyNotFound) || net.count(direct) != 1 {
			t.Fatalf("unknown key right after a fetch: %v, fetches %d", err, net.count(direct))
		}
		clk.add(2 * time.Minute)
		for range 3 {
			if _, err := ring.Key(ctx, "remote.org", "ed25519:nope", clk.now().UnixMilli()); !errors.Is(err, event.ErrKeyNotFound) {
				t.Fatalf("unknown key: %v", err)
			}
		}
		if n := net.count(direct); n != 2 {
			t.Fatalf("fetches after three lookups of an unknown key = %d, want 2", n)
		}
		// An event from after valid_until_ts (24h) needs the key valid then: fetched again once
		// the interval has passed; the response is then valid 24h from the new now.
		clk.add(25 * time.Hour)
		ts := clk.now().UnixMilli()
		if _, err := ring.Key(ctx, "remote.org", "ed25519:r1", ts); err != nil || net.count(direct) != 3 {
			t.Fatalf("lookup past valid_until_ts: %v, fetches %d", err, net.count(direct))
		}
		// An event from the past stays verifiable without fetching.
		if _, err := ring.Key(ctx, "remote.org", "ed25519:r1", ts-20*3600_000); err != nil || net.count(direct) != 3 {
			t.Fatalf("lookup of an old event: %v, fetches %d", err, net.count(direct))
		}
		// A server that is down and unknown: not found, no error other than that.
		if _, err := ring.Key(ctx, "down.org", "ed25519:x", ts); !errors.Is(err, event.ErrKeyNotFound) {
			t.Fatalf("down server: %v", err)
		}
		// Our own keys never leave the process.
		if _, err := ring.Key(ctx, "us.org", "ed25519:us", ts); err != nil || net.count("us.org GET /_matrix/key/v2/server") != 0 {
			t.Fatalf("own key: %v", err)
		}
	})
}

func TestRingSevenDayCap(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, store *storage.Store) {
		ctx := context.Background()
		clk := &clock{t: time.Now()}
		remoteKey := newKey(t, "ed25519:r1")
		// A response claiming a year of validity is trusted for seven days only.
		remote := NewOwn("remote.org", remoteKey, nil, 365*24*time.Hour, clk.now)
		net := &fakeNet{calls: map[string]int{}, servers: map[string]func(string, string, []byte) ([]byte, error){"remote.org": keyServer(remote)}}
		ring := NewRing(Options{Own: NewOwn("us.org", newKey(t, "ed25519:us"), nil, time.Hour, clk.now), Store: store, Client: net, Now: clk.now})
		start := clk.now().UnixMilli()
		if _, err := ring.Key(ctx, "remote.org", "ed25519:r1", start); err != nil {
			t.Fatal(err)
		}
		net.servers["remote.org"] = nil // down from now on
		clk.add(8 * 24 * time.Hour)
		if _, err := ring.RequestKey(ctx, "remote.org", "ed25519:r1"); !errors.Is(err, event.ErrKeyNotFound) {
			t.Fatalf("request 8 days after the fetch: %v", err)
		}
		if _, err := ring.Key(ctx, "remote.org", "ed25519:r1", start+6*24*3600_000); err != nil {
			t.Fatalf("event from within the 7 days: %v", err)
		}
	})
}

func TestRingRejectsBadResponses(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, store *storage.Store) {
		ctx := context.Background()
		remoteKey := newKey(t, "ed25519:r1")
		good, _ := NewOwn("remote.org", remoteKey, nil, time.Hour, nil).Response()
		other, _ := NewOwn("other.org", remoteKey, nil, time.Hour, nil).Response()
		// A response listing a second verify key that did not sign it.
		twoKeys := func() []byte {
			var m map[string]any
			_ = json.Unmarshal(good, &m)
			m["verify_keys"].(map[string]any)["ed25519:r2"] = map[string]any{"key": encodeKey(newKey(t, "x").Public())}
			b, _ := json.Marshal(m)
			return b
		}()
		// A response signed by a key it does not list (the key is swapped after signing).
		swapped := func() []byte {
			var m map[string]any
			_ = json.Unmarshal(good, &m)
			m["verify_keys"].(map[string]any)["ed25519:r1"] = map[string]any{"key": encodeKey(newKey(t, "x").Public())}
			b, _ := json.Marshal(m)
			return b
		}()
		for name, body := range map[string][]byte{
			"for another server":  other,
			"unsigned second key": twoKeys,
			"key swapped":         swapped,
			"not JSON":            []byte("<html>"),
			"no valid_until_ts":   []byte(`{"server_name":"remote.org","verify_keys":{},"signatures":{}}`),
			"no ed25519 key":      []byte(`{"server_name":"remote.org","valid_until_ts":1,"verify_keys":{},"signatures":{"remote.org":{}}}`),
		} {
			t.Run(name, func(t *testing.T) {
				net := &fakeNet{calls: map[string]int{}, servers: map[string]func(string, string, []byte) ([]byte, error){
					"remote.org": func(string, string, []byte) ([]byte, error) { return body, nil },
				}}
				ring := NewRing(Options{Own: NewOwn("us.org", newKey(t, "ed25519:us"), nil, time.Hour, nil), Store: store, Client: net})
				if k, err := ring.Key(ctx, "remote.org", "ed25519:r1", time.Now().UnixMilli()); !errors.Is(err, event.ErrKeyNotFound) {
					t.Fatalf("accepted %s: %v, %v", body, k, err)
				}
				if rows, _ := store.Read().ServerKeys(ctx, "remote.org"); len(rows) != 0 {
					t.Fatalf("stored %+v", rows)
				}
			})
		}
	})
}

func TestRingNotary(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, store *storage.Store) {
		ctx := context.Background()
		remoteKey := newKey(t, "ed25519:r1")
		remote := NewOwn("remote.org", remoteKey, nil, time.Hour, nil)
		notaryKey := newKey(t, "ed25519:n1")
		notary := NewOwn("notary.org", notaryKey, nil, time.Hour, nil)
		remoteResp, _ := remote.Response()

		// notaryAnswer builds a notary answer from the given key responses, signed by signer.
		notaryAnswer := func(signer *Own, resps ...[]byte) func(string, string, []byte) ([]byte, error) {
			return func(method, path string, body []byte) ([]byte, error) {
				if method != "POST" || path != "/_matrix/key/v2/query" {
					return nil, errors.New("404")
				}
				var q struct {
					ServerKeys map[string]map[string]struct {
						MinValidUntilTS int64 `json:"minimum_valid_until_ts"`
					} `json:"server_keys"`
				}
				if err := json.Unmarshal(body, &q); err != nil || q.ServerKeys["remote.org"] == nil {
					return nil, fmt.Errorf("bad query %s", body)
				}
				var out []json.RawMessage
				for _, r := range resps {
					s, _ := signer.Sign(r)
					out = append(out, s)
				}
				return json.Marshal(map[string]any{"server_keys": out})
			}
		}
		tamperedResp := func() []byte {
			var m map[string]any
			_ = json.Unmarshal(remoteResp, &m)
			m["valid_until_ts"] = m["valid_until_ts"].(float64) + 1e9 // the notary extends the validity
			b, _ := json.Marshal(m)
			return b
		}()
		impostor := NewOwn("notary.org", newKey(t, "ed25519:n1"), nil, time.Hour, nil)
		cases := []struct {
			name    string
			handler func(string, string, []byte) ([]byte, error)
			ok      bool
		}{
			{"genuine", notaryAnswer(notary, remoteResp), true},
			{"signed by another key under the notary's key ID", notaryAnswer(impostor, remoteResp), false},
			{"origin's response altered by the notary", notaryAnswer(notary, tamperedResp), false},
			{"not the origin's keys", notaryAnswer(notary, func() []byte { r, _ := notary.Response(); return r }()), false},
			{"empty answer", notaryAnswer(notary), false},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				store := storagetest.Open(t, store.Backend())
				net := &fakeNet{calls: map[string]int{}, servers: map[string]func(string, string, []byte) ([]byte, error){
					"notary.org": c.handler, // remote.org itself is down
				}}
				ring := NewRing(Options{Own: NewOwn("us.org", newKey(t, "ed25519:us"), nil, time.Hour, nil), Store: store, Client: net,
					Notaries: []Notary{{ServerName: "notary.org", Keys: map[string]ed25519.PublicKey{"ed25519:n1": notaryKey.Public()}}}})
				got, err := ring.Key(ctx, "remote.org", "ed25519:r1", time.Now().UnixMilli())
				if c.ok != (err == nil) {
					t.Fatalf("Key = %v, %v; want ok=%v", got, err, c.ok)
				}
				if c.ok && !got.Equal(remoteKey.Public()) {
					t.Fatalf("wrong key %v", got)
				}
				if net.count("remote.org GET /_matrix/key/v2/server") != 1 {
					t.Fatal("the server itself was not asked first")
				}
			})
		}
	})
}

func TestOwnResponse(t *testing.T) {
	clk := &clock{t: time.Now()}
	k := newKey(t, "ed25519:new")
	oldKey := newKey(t, "ed25519:old")
	own := NewOwn("us.org", k, []OldKey{{KeyID: "ed25519:old", Public: oldKey.Public(), ExpiredTS: 1234}}, 4*time.Hour, clk.now)
	first, err := own.Response()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseResponse(first, "us.org")
	if err != nil {
		t.Fatal(err)
	}
	if r.ValidUntilTS != clk.now().Add(4*time.Hour).UnixMilli() || r.OldKeys["ed25519:old"].ExpiredTS != 1234 {
		t.Fatalf("response %s", first)
	}
	// The same signed response until half of its validity has passed, then a new one.
	clk.add(time.Hour)
	if again, _ := own.Response(); string(again) != string(first) {
		t.Fatal("response rebuilt before half its validity")
	}
	clk.add(90 * time.Minute)
	renewed, _ := own.Response()
	if r2, err := ParseResponse(renewed, "us.org"); err != nil || r2.ValidUntilTS != clk.now().Add(4*time.Hour).UnixMilli() {
		t.Fatalf("renewed response: %s, %v", renewed, err)
	}
	// Own keys: current always, old before expiry and never for requests.
	if _, err := own.Key("ed25519:old", 1000, false); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ts      int64
		current bool
	}{{1234, false}, {1000, true}} {
		if _, err := own.Key("ed25519:old", c.ts, c.current); !errors.Is(err, event.ErrKeyNotFound) {
			t.Fatalf("old key at %d (current=%v): %v", c.ts, c.current, err)
		}
	}
}

// TestStaleReadDoesNotHideFetchedKeys: a database read of a server's keys that started before a
// fetch stored them, and finishes after the ring loaded them, must not put the older rows back;
// before, lookups in that window failed with "key not found" (a join then dropped the room's
// state events that did not verify) until the refetch interval passed.
func TestStaleReadDoesNotHideFetchedKeys(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, store *storage.Store) {
		ctx := context.Background()
		ring, net, clk, _ := directRing(t, store)
		slow := ring.beginRead() // a read that starts now, before the fetch, and sees no rows
		if _, err := ring.Key(ctx, "remote.org", "ed25519:r1", clk.now().UnixMilli()); err != nil {
			t.Fatal(err)
		}
		ring.apply("remote.org", slow, nil) // ... and ends after it
		k, found, err := ring.cached(ctx, "remote.org", "ed25519:r1")
		if err != nil || !found || k.KeyID != "ed25519:r1" {
			t.Fatalf("in memory after the stale read: %+v %v %v", k, found, err)
		}
		if _, err := ring.Key(ctx, "remote.org", "ed25519:r1", clk.now().UnixMilli()); err != nil {
			t.Fatalf("after a late stale read: %v", err)
		}
		if n := net.count("remote.org GET /_matrix/key/v2/server"); n != 1 {
			t.Fatalf("%d fetches, want 1", n)
		}
	})
}

// directRing is a ring of us.org that fetches the keys of remote.org (key ed25519:r1) straight from it.
func directRing(t *testing.T, store *storage.Store) (*Ring, *fakeNet, *clock, signing.Key) {
	clk := &clock{t: time.Now()}
	remoteKey := newKey(t, "ed25519:r1")
	remote := NewOwn("remote.org", remoteKey, nil, 24*time.Hour, clk.now)
	net := &fakeNet{calls: map[string]int{}, servers: map[string]func(string, string, []byte) ([]byte, error){
		"remote.org": keyServer(remote),
	}}
	ring := NewRing(Options{Own: NewOwn("us.org", newKey(t, "ed25519:us"), nil, time.Hour, clk.now), Store: store, Client: net,
		RefetchInterval: time.Minute, Now: clk.now})
	return ring, net, clk, remoteKey
}

// A key that could not be fetched is "unavailable", not merely unknown, for as long as the ring
// would not ask again; Refetch asks again at once. A key the server answered without is unknown.
func TestRingUnavailableAndRefetch(t *testing.T) {
	storagetest.ForEachBackend(t, func(t *testing.T, store *storage.Store) {
		ctx := context.Background()
		ring, net, clk, remoteKey := directRing(t, store)
		const direct = "remote.org GET /_matrix/key/v2/server"
		up := net.servers["remote.org"]
		net.servers["remote.org"] = nil // down
		ts := clk.now().UnixMilli()

		for i := range 2 { // the fetch fails, then the lookup within the interval is throttled
			_, err := ring.Key(ctx, "remote.org", "ed25519:r1", ts)
			var ue *UnavailableError
			if !errors.Is(err, ErrKeyUnavailable) || !errors.Is(err, event.ErrKeyNotFound) || !errors.As(err, &ue) ||
				ue.Server != "remote.org" || ue.KeyID != "ed25519:r1" || ue.AtTS != ts {
				t.Fatalf("lookup %d while the server is down: %v", i, err)
			}
		}
		if n := net.count(direct); n != 1 {
			t.Fatalf("fetches while down = %d, want 1", n)
		}

		net.servers["remote.org"] = up
		if err := ring.Refetch(ctx, "remote.org", "ed25519:r1", ts); err != nil || net.count(direct) != 2 {
			t.Fatalf("Refetch within the interval: %v, fetches %d", err, net.count(direct))
		}
		if got, err := ring.Key(ctx, "remote.org", "ed25519:r1", ts); err != nil || !got.Equal(remoteKey.Public()) {
			t.Fatalf("lookup after Refetch: %v, %v", got, err)
		}
		// The server answered without this key: unknown, not unavailable, also when throttled.
		for i := range 2 {
			clk.add(2 * time.Minute * time.Duration(1-i))
			_, err := ring.Key(ctx, "remote.org", "ed25519:nope", clk.now().UnixMilli())
			if !errors.Is(err, event.ErrKeyNotFound) || errors.Is(err, ErrKeyUnavailable) {
				t.Fatalf("lookup %d of a key the server does not have: %v", i, err)
			}
		}
		if n := net.count(direct); n != 3 {
			t.Fatalf("fetches = %d, want 3", n)
		}
	})
}

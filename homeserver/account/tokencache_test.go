package account

import (
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

func TestTokenCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c := newTokenCache(func() time.Time { return now })
	alice := storage.AccessToken{Hash: "h1", Localpart: "alice"}
	bob := storage.AccessToken{Hash: "h2", Localpart: "bob"}

	_, ok, epoch := c.get("h1")
	if ok {
		t.Fatal("hit in an empty cache")
	}
	c.put(alice, epoch)
	c.put(bob, epoch)
	if got, ok, _ := c.get("h1"); !ok || got.Localpart != "alice" {
		t.Fatalf("get after put = %+v, %v", got, ok)
	}

	// A lookup that started before a revocation must not put its (possibly revoked) row back.
	_, _, before := c.get("h3")
	c.revoke("alice")
	if _, ok, _ := c.get("h1"); ok {
		t.Fatal("alice's token still cached after revoke")
	}
	if _, ok, _ := c.get("h2"); !ok {
		t.Fatal("revoking alice dropped bob's token")
	}
	c.put(storage.AccessToken{Hash: "h3", Localpart: "alice"}, before)
	if _, ok, _ := c.get("h3"); ok {
		t.Fatal("a lookup from before the revocation was cached")
	}

	// Entries go stale after the TTL; revoke("") clears everything.
	now = now.Add(tokenCacheTTL)
	if _, ok, _ := c.get("h2"); ok {
		t.Fatal("entry served after its TTL")
	}
	_, _, epoch = c.get("h2")
	c.put(bob, epoch)
	c.revoke("")
	if _, ok, _ := c.get("h2"); ok {
		t.Fatal("revoke(\"\") kept an entry")
	}
}

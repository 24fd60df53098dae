package clientapi

import (
	"net/http/httptest"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/config"
)

// TestClientIP checks whose address rate limits and logs use: the peer, unless the peer is a
// trusted proxy, then the right-most X-Forwarded-For hop that is not a trusted proxy, so a
// client cannot pick its own address by sending the header.
func TestClientIP(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.TrustedProxies = []string{"10.0.0.0/8", "127.0.0.1"}
	a := New(cfg, nil, nil, nil, nil, nil, nil)
	cases := []struct {
		peer, xff, want string
	}{
		{"203.0.113.5:1234", "", "203.0.113.5"},
		{"203.0.113.5:1234", "6.6.6.6", "203.0.113.5"},               // untrusted peer: header ignored
		{"127.0.0.1:1234", "198.51.100.7", "198.51.100.7"},           // trusted proxy
		{"127.0.0.1:1234", "6.6.6.6, 198.51.100.7", "198.51.100.7"},  // spoofed first hop ignored
		{"127.0.0.1:1234", "198.51.100.7, 10.1.2.3", "198.51.100.7"}, // chain of trusted proxies
		{"127.0.0.1:1234", "garbage", "127.0.0.1"},
		{"127.0.0.1:1234", "10.1.2.3", "127.0.0.1"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.peer
		if c.xff != "" {
			r.Header.Set("X-Forwarded-For", c.xff)
		}
		if got := a.clientIP(r); got != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: got %s, want %s", c.peer, c.xff, got, c.want)
		}
	}
}

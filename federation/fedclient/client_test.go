package fedclient_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/federation/cert"
	"github.com/hearthmx/homeserver/federation/fedclient"
	"github.com/hearthmx/homeserver/federation/xmatrix"
	"github.com/hearthmx/homeserver/homeserver/netguard"
	"github.com/hearthmx/homeserver/homeserver/signing"
)

// testNet is a small federation on 127.0.0.x: TLS servers with certificates from a test CA,
// DNS answers and a dialer that maps the addresses the client means (IP:port from resolution)
// to where the test servers really listen.
type testNet struct {
	t      *testing.T
	caCert []byte
	caKey  []byte
	pool   *x509.CertPool
	mu     sync.Mutex
	dial   map[string]string // logical IP:port -> real listener address
	hosts  map[string][]netip.Addr
	srv    map[string][]*net.SRV
	// seen records, per server, the Host header and SNI of the requests it got.
	seen map[string][]seen
}

type seen struct {
	host, sni, auth, uri string
	body                 []byte
}

func newTestNet(t *testing.T) *testNet {
	caCert, caKey, err := cert.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caCert)
	return &testNet{t: t, caCert: caCert, caKey: caKey, pool: pool, dial: map[string]string{}, hosts: map[string][]netip.Addr{},
		srv: map[string][]*net.SRV{}, seen: map[string][]seen{}}
}

// serve starts a TLS server on ip with a certificate for certName, reachable as ip:port.
func (n *testNet) serve(label, ip string, port int, certName string, h http.HandlerFunc) {
	c, err := cert.Issue(n.caCert, n.caKey, []string{certName})
	if err != nil {
		n.t.Fatal(err)
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		n.t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n.mu.Lock()
		n.seen[label] = append(n.seen[label], seen{host: r.Host, sni: r.TLS.ServerName, auth: r.Header.Get("Authorization"),
			uri: r.RequestURI, body: body})
		n.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		h(w, r)
	}))
	s.Listener.Close()
	s.Listener = l
	s.TLS = &tls.Config{Certificates: []tls.Certificate{c}}
	s.StartTLS()
	n.t.Cleanup(s.Close)
	n.mu.Lock()
	n.dial[fmt.Sprintf("%s:%d", ip, port)] = l.Addr().String()
	n.mu.Unlock()
}

func (n *testNet) last(label string) seen {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.seen[label]
	if len(s) == 0 {
		n.t.Fatalf("server %s got no request", label)
	}
	return s[len(s)-1]
}

func (n *testNet) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if rs, ok := n.srv["_"+service+"._"+proto+"."+name]; ok {
		return "", rs, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (n *testNet) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if a, ok := n.hosts[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (n *testNet) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	real, ok := n.dial[addr]
	n.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, real)
}

func (n *testNet) client(key signing.Key, mutate ...func(*fedclient.Options)) *fedclient.Client {
	g, _ := netguard.New([]string{"127.0.0.0/8"})
	o := fedclient.Options{ServerName: "origin.test", Key: key, RootCAs: n.pool, DNS: n, Guard: g.Check, Dial: n.Dial}
	for _, m := range mutate {
		m(&o)
	}
	return fedclient.New(o)
}

func newKey(t *testing.T) signing.Key {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signing.Key{ID: "ed25519:k1", Private: priv}
}

// verifying answers {"ok": true} after checking the X-Matrix signature as destination dest.
func verifying(t *testing.T, key signing.Key, dest string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		origin, err := xmatrix.Verify(r.Context(), xmatrix.Request{Method: r.Method, URI: r.RequestURI, Content: body},
			r.Header.Values("Authorization"), dest, func(_ context.Context, server, keyID string) (ed25519.PublicKey, error) {
				if server == "origin.test" && keyID == key.ID {
					return key.Public(), nil
				}
				return nil, errors.New("unknown key")
			})
		if err != nil {
			w.WriteHeader(401)
			fmt.Fprintf(w, `{"errcode":"M_UNAUTHORIZED","error":%q}`, err.Error())
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "origin": origin, "body": json.RawMessage(orEmpty(body))})
	}
}

func orEmpty(b []byte) []byte {
	if len(b) == 0 {
		return []byte("null")
	}
	return b
}

func TestClientResolvesAndVerifies(t *testing.T) {
	n := newTestNet(t)
	key := newKey(t)
	ip := func(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }

	// wk.test delegates to fed.test:8443 with /.well-known/matrix/server on 443.
	n.hosts["wk.test"] = ip("127.0.0.5")
	n.serve("wk", "127.0.0.5", 443, "wk.test", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/matrix/server" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, `{"m.server": "fed.test:8443"}`)
	})
	n.hosts["fed.test"] = ip("127.0.0.6")
	n.serve("fed", "127.0.0.6", 8443, "fed.test", verifying(t, key, "wk.test"))

	// srv.test has no well-known; its SRV record points at target.test:7777, which must present a
	// certificate for srv.test.
	n.hosts["srv.test"] = ip("127.0.0.9") // nothing listens on 443 there
	n.srv["_matrix-fed._tcp.srv.test"] = []*net.SRV{{Target: "target.test.", Port: 7777}}
	n.hosts["target.test"] = ip("127.0.0.7")
	n.serve("srv", "127.0.0.7", 7777, "srv.test", verifying(t, key, "srv.test"))

	// An IP literal: certificate for the IP, no SNI, port 8448.
	n.serve("ip", "127.0.0.8", 8448, "127.0.0.8", verifying(t, key, "127.0.0.8"))

	// plain.test: no well-known, no SRV: port 8448 of its own address.
	n.hosts["plain.test"] = ip("127.0.0.10")
	n.serve("plain", "127.0.0.10", 8448, "plain.test", verifying(t, key, "plain.test"))

	// evil.test resolves to fed.test's server, whose certificate is not for evil.test.
	n.hosts["evil.test"] = ip("127.0.0.6")
	n.dial["127.0.0.6:8448"] = n.dial["127.0.0.6:8443"]

	c := n.client(key)
	ctx := context.Background()
	for _, tc := range []struct {
		dest, label, host, sni string
	}{
		{"wk.test", "fed", "fed.test:8443", "fed.test"},
		{"srv.test", "srv", "srv.test", "srv.test"},
		{"127.0.0.8", "ip", "127.0.0.8", ""},
		{"plain.test", "plain", "plain.test", "plain.test"},
	} {
		var got map[string]any
		path := "/_matrix/federation/v1/query/profile?user_id=%40a%3A" + tc.dest
		if err := c.DoJSON(ctx, tc.dest, "GET", path, nil, &got); err != nil {
			t.Fatalf("%s: %v", tc.dest, err)
		}
		if got["ok"] != true || got["origin"] != "origin.test" {
			t.Fatalf("%s: %v", tc.dest, got)
		}
		s := n.last(tc.label)
		if s.host != tc.host || s.sni != tc.sni || s.uri != path {
			t.Errorf("%s: Host %q, SNI %q, URI %q; want %q, %q, %q", tc.dest, s.host, s.sni, s.uri, tc.host, tc.sni, path)
		}
		h, err := xmatrix.Parse(s.auth)
		if err != nil || h.Destination != tc.dest || h.Origin != "origin.test" || h.Key != key.ID {
			t.Errorf("%s: Authorization %q", tc.dest, s.auth)
		}
	}

	// A JSON body is sent and signed.
	var got map[string]any
	if err := c.DoJSON(ctx, "wk.test", "PUT", "/_matrix/federation/v1/send/txn1", map[string]any{"pdus": []any{}, "edus": []any{}}, &got); err != nil {
		t.Fatal(err)
	}
	if body, _ := json.Marshal(got["body"]); string(body) != `{"edus":[],"pdus":[]}` {
		t.Fatalf("body echoed %s", body)
	}

	// The certificate must match the name.
	_, err := c.Do(ctx, "evil.test", "GET", "/_matrix/federation/v1/version", nil)
	var certErr *tls.CertificateVerificationError
	if !errors.As(err, &certErr) {
		t.Fatalf("certificate for fed.test accepted for evil.test: %v", err)
	}
	// Unless verification is off (tests only).
	insecure := n.client(key, func(o *fedclient.Options) { o.InsecureSkipVerify = true })
	if _, err := insecure.Do(ctx, "evil.test", "GET", "/_matrix/federation/v1/version", nil); err == nil ||
		!strings.Contains(err.Error(), "401") {
		t.Fatalf("insecure client: %v (want the server's 401 for the wrong destination)", err)
	}
	// A client not trusting the test CA refuses them all.
	untrusting := n.client(key, func(o *fedclient.Options) { o.RootCAs = x509.NewCertPool() })
	if _, err := untrusting.Do(ctx, "wk.test", "GET", "/_matrix/federation/v1/version", nil); err == nil {
		t.Fatal("certificate of an unknown CA accepted")
	}
	// Loopback is refused unless allowed.
	strict := n.client(key, func(o *fedclient.Options) { o.Guard = nil })
	if _, err := strict.Do(ctx, "127.0.0.8", "GET", "/_matrix/federation/v1/version", nil); !errors.Is(err, netguard.ErrForbidden) {
		t.Fatalf("loopback destination with the default guard: %v", err)
	}
	if _, err := c.Do(ctx, "bad name", "GET", "/x", nil); err == nil {
		t.Fatal("invalid destination accepted")
	}
}

func TestClientErrorsAndLimits(t *testing.T) {
	n := newTestNet(t)
	key := newKey(t)
	n.serve("s", "127.0.0.11", 8448, "127.0.0.11", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/forbidden":
			w.WriteHeader(403)
			_, _ = io.WriteString(w, `{"errcode":"M_FORBIDDEN","error":"not you"}`)
		case "/html":
			w.WriteHeader(502)
			_, _ = io.WriteString(w, `<html>bad gateway</html>`)
		case "/big":
			_, _ = w.Write(make([]byte, 2<<20))
		case "/slow":
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		case "/redirect":
			http.Redirect(w, r, "/forbidden", http.StatusFound)
		default:
			_, _ = io.WriteString(w, `{}`)
		}
	})
	c := n.client(key, func(o *fedclient.Options) { o.MaxResponseBytes = 1 << 20; o.Timeout = 300 * time.Millisecond })
	ctx := context.Background()

	_, err := c.Do(ctx, "127.0.0.11", "GET", "/forbidden", nil)
	var fe *fedclient.Error
	if !errors.As(err, &fe) || fe.Status != 403 || fe.Code != "M_FORBIDDEN" || fe.Message != "not you" || fe.Destination != "127.0.0.11" {
		t.Fatalf("403: %#v", err)
	}
	if _, err := c.Do(ctx, "127.0.0.11", "GET", "/html", nil); !errors.As(err, &fe) || fe.Status != 502 || fe.Code != "" {
		t.Fatalf("502: %v", err)
	}
	if _, err := c.Do(ctx, "127.0.0.11", "GET", "/big", nil); !errors.Is(err, fedclient.ErrTooLarge) {
		t.Fatalf("2 MiB response with a 1 MiB limit: %v", err)
	}
	start := time.Now()
	if _, err := c.Do(ctx, "127.0.0.11", "GET", "/slow", nil); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("slow response: %v after %v", err, time.Since(start))
	}
	if _, err := c.Do(ctx, "127.0.0.11", "GET", "/redirect", nil); !errors.As(err, &fe) || fe.Status != 302 {
		t.Fatalf("redirect followed: %v", err)
	}
	// Concurrent requests share the destination's connection pool.
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Do(ctx, "127.0.0.11", "GET", "/ok", nil); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

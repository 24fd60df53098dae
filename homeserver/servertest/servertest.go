// Package servertest starts whole homeservers for tests: real storage (SQLite or PostgreSQL), the
// embedded NATS bus, and real HTTP on a loopback port. Tests talk to them over HTTP like a client.
package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// Server is a running test homeserver.
type Server struct {
	*homeserver.Server
	URL    string // http://127.0.0.1:port
	Config *config.Config
	// stop shuts the server down (Stop); it runs at the end of the test otherwise.
	stop func()
}

// SharedSecret is the registration shared secret of test servers.
const SharedSecret = "test-shared-secret"

// Start runs a homeserver on the backend ("sqlite" or "postgres") until the test ends. mutate may
// change the configuration before start.
func Start(t testing.TB, backend string, mutate ...func(*config.Config)) *Server {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Listen.Client = "127.0.0.1:0"
	cfg.Logging.Level = "warn"
	cfg.Registration.SharedSecret = SharedSecret
	cfg.RateLimits.Enabled = false
	opts := storagetest.Options(t, backend)
	cfg.Database.Backend = opts.Backend
	cfg.Database.SQLitePath = opts.SQLitePath
	cfg.Database.PostgresDSN = opts.PostgresDSN
	cfg.Database.MaxOpenConns = 8
	for _, m := range mutate {
		m(cfg)
	}
	return startWith(t, cfg)
}

// startWith runs a homeserver with a complete configuration until the test ends or Stop.
func startWith(t testing.TB, cfg *config.Config) *Server {
	t.Helper()
	backend := cfg.Database.Backend
	var logOut io.Writer = io.Discard
	if os.Getenv("HS_TEST_LOG") != "" {
		logOut = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := homeserver.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("servertest: start %s: %v", backend, err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		srv.Close()
		t.Fatalf("servertest: listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("servertest: server did not stop within 30s")
			}
			srv.Close()
		})
	}
	t.Cleanup(stop)
	return &Server{Server: srv, URL: "http://" + srv.ClientAddr(), Config: cfg, stop: stop}
}

// Stop shuts the server down now (its data stays, for Restart).
func (s *Server) Stop() { s.stop() }

// Restart starts a new server on the data of a stopped one: same configuration, database, data
// directory and server name (the client listener gets a new port).
func (s *Server) Restart(t testing.TB) *Server {
	t.Helper()
	cfg := *s.Config
	return startWith(t, &cfg)
}

// ForEachBackend runs fn as a subtest per storage backend, each with its own fresh server.
func ForEachBackend(t *testing.T, fn func(t *testing.T, s *Server), mutate ...func(*config.Config)) {
	t.Helper()
	for _, b := range storagetest.Backends {
		t.Run(b, func(t *testing.T) { fn(t, Start(t, b, mutate...)) })
	}
}

// Response is a decoded HTTP response.
type Response struct {
	Status int
	Header http.Header
	Raw    []byte
	JSON   map[string]any // nil if the body is not a JSON object
}

// Errcode is the Matrix errcode of the response ("" if none).
func (r Response) Errcode() string {
	s, _ := r.JSON["errcode"].(string)
	return s
}

// Str reads a string field of the body.
func (r Response) Str(key string) string {
	s, _ := r.JSON[key].(string)
	return s
}

// Do sends a request with an optional access token and body. A body of type []byte or string is
// sent as is; anything else is JSON-encoded; nil sends no body.
func (s *Server) Do(t testing.TB, method, path, token string, body any) Response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("servertest: encode body: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("servertest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("servertest: read body: %v", err)
	}
	r := Response{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	_ = json.Unmarshal(raw, &r.JSON)
	return r
}

// User is a registered, logged-in test user.
type User struct {
	UserID, Localpart, Password, AccessToken, DeviceID string
}

// Register creates a user through /register with the m.login.dummy flow and returns it logged in.
func (s *Server) Register(t testing.TB, localpart, password string) User {
	t.Helper()
	body := map[string]any{"username": localpart, "password": password}
	first := s.Do(t, "POST", "/_matrix/client/v3/register", "", body)
	if first.Status != http.StatusUnauthorized {
		t.Fatalf("servertest: register %s: want 401 challenge, got %d %s", localpart, first.Status, first.Raw)
	}
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": first.Str("session")}
	res := s.Do(t, "POST", "/_matrix/client/v3/register", "", body)
	if res.Status != http.StatusOK {
		t.Fatalf("servertest: register %s: %d %s", localpart, res.Status, res.Raw)
	}
	return User{UserID: res.Str("user_id"), Localpart: localpart, Password: password,
		AccessToken: res.Str("access_token"), DeviceID: res.Str("device_id")}
}

// Login logs an existing user in on a new device.
func (s *Server) Login(t testing.TB, localpart, password string) User {
	t.Helper()
	res := s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart}, "password": password})
	if res.Status != http.StatusOK {
		t.Fatalf("servertest: login %s: %d %s", localpart, res.Status, res.Raw)
	}
	return User{UserID: res.Str("user_id"), Localpart: localpart, Password: password,
		AccessToken: res.Str("access_token"), DeviceID: res.Str("device_id")}
}

// Package config is the typed model of config.yaml: defaults, loading, environment overrides and
// validation. Each component receives only its own section.
package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Config is the whole configuration. The yaml tags are the keys of config.yaml; the environment
// variable for a key is HS_ followed by its path in upper case with dots as underscores
// (database.postgres_dsn -> HS_DATABASE_POSTGRES_DSN).
type Config struct {
	ServerName     string       `yaml:"server_name"`
	PublicBaseURL  string       `yaml:"public_baseurl"`
	DataDir        string       `yaml:"data_dir"`
	SigningKeyPath string       `yaml:"signing_key_path"`
	Listen         Listen       `yaml:"listen"`
	WellKnown      WellKnown    `yaml:"well_known"`
	Database       Database     `yaml:"database"`
	NATS           NATS         `yaml:"nats"`
	Logging        Logging      `yaml:"logging"`
	Metrics        Metrics      `yaml:"metrics"`
	Registration   Registration `yaml:"registration"`
	Auth           Auth         `yaml:"auth"`
	HTTP           HTTP         `yaml:"http"`
	RateLimits     RateLimits   `yaml:"rate_limits"`
	RoomVersions   RoomVersions `yaml:"room_versions"`
	Presence       Presence     `yaml:"presence"`
	Media          Media        `yaml:"media"`
	Federation     Federation   `yaml:"federation"`
}

// Listen says where the server accepts connections.
type Listen struct {
	// Client is host:port of the plain-HTTP listener serving the client and federation APIs.
	Client string `yaml:"client"`
	// Federation is host:port of the TLS listener serving the federation API; empty means :8448
	// when federation.tls has a certificate or a CA, and no such listener otherwise.
	Federation string `yaml:"federation"`
}

// WellKnown is what /.well-known/matrix/{client,server,support} answer.
type WellKnown struct {
	// Server is the m.server delegation (host:port); empty derives it from public_baseurl.
	Server string `yaml:"server"`
	// SupportAdmins and SupportSecurity are the contacts of /.well-known/matrix/support with the
	// roles m.role.admin and m.role.security: each a Matrix user ID or an email address.
	SupportAdmins   []string `yaml:"support_admins"`
	SupportSecurity []string `yaml:"support_security"`
	// SupportPage is a web page about getting help with this server.
	SupportPage string `yaml:"support_page"`
}

// Database selects and tunes the storage backend.
type Database struct {
	Backend      string `yaml:"backend"`
	SQLitePath   string `yaml:"sqlite_path"`
	PostgresDSN  string `yaml:"postgres_dsn"`
	MaxOpenConns int    `yaml:"max_open_conns"`
}

// NATS configures the message bus.
type NATS struct {
	// URLs of an external NATS cluster; empty runs an embedded server in-process.
	URLs     []string `yaml:"urls"`
	StoreDir string   `yaml:"store_dir"`
}

// Logging configures log/slog output.
type Logging struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Enabled bool   `yaml:"enabled"`
	Path    string `yaml:"path"`
	// Listen is a separate host:port for metrics; empty serves them on the client listener.
	Listen string `yaml:"listen"`
	// Pprof serves Go's profiler under /debug/pprof/ next to the metrics (keep it off public ports).
	Pprof bool `yaml:"pprof"`
}

// Registration says who may create accounts.
type Registration struct {
	// Enabled turns on /register for everyone. Unset means on for server_name localhost, off otherwise.
	Enabled *bool `yaml:"enabled"`
	// RequireToken asks for an admin-issued registration token (m.login.registration_token).
	RequireToken bool `yaml:"require_token"`
	// SharedSecret enables Synapse-compatible /_synapse/admin/v1/register for admin tools.
	SharedSecret string `yaml:"shared_secret"`
	// AllowGuests enables kind=guest registration.
	AllowGuests bool `yaml:"allow_guests"`
}

// RegistrationOpen reports whether open registration is on for this server.
func (c *Config) RegistrationOpen() bool {
	if c.Registration.Enabled != nil {
		return *c.Registration.Enabled
	}
	return c.ServerName == "localhost"
}

// Auth tunes tokens and passwords.
type Auth struct {
	// RefreshableAccessTokenLifetime is how long an access token issued with a refresh token lives.
	RefreshableAccessTokenLifetime Duration `yaml:"refreshable_access_token_lifetime"`
	PasswordMinLength              int      `yaml:"password_min_length"`
	// UIASessionLifetime is how long a user-interactive auth session stays valid.
	UIASessionLifetime Duration `yaml:"uia_session_lifetime"`
	// OpenIDTokenLifetime is the lifetime of tokens from /openid/request_token.
	OpenIDTokenLifetime Duration `yaml:"openid_token_lifetime"`
}

// HTTP tunes request handling.
type HTTP struct {
	MaxBodyBytes    int64    `yaml:"max_body_bytes"`
	ReadTimeout     Duration `yaml:"read_timeout"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// TrustedProxies are addresses whose X-Forwarded-For header is believed for rate limits and logs.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// RateLimits configures the token buckets protecting rate-limited endpoints.
type RateLimits struct {
	Enabled bool `yaml:"enabled"`
	// PerIP applies to unauthenticated rate-limited requests (login, register, ...), keyed by client IP.
	PerIP Rate `yaml:"per_ip"`
	// PerUser applies to authenticated rate-limited requests, keyed by user.
	PerUser Rate `yaml:"per_user"`
	// ExemptIPs are never limited.
	ExemptIPs []string `yaml:"exempt_ips"`
}

// Rate is a token bucket: PerSecond tokens refill each second, up to Burst.
type Rate struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// RoomVersions configures room creation.
type RoomVersions struct {
	Default string `yaml:"default"`
}

// Presence configures presence (online / unavailable / offline, status messages).
type Presence struct {
	// Enabled tracks and shares presence; off, the presence endpoints still answer (everyone is
	// offline) and nothing is sent.
	Enabled bool `yaml:"enabled"`
	// LocalOnly keeps presence on this server: it is not sent to other servers, and theirs is
	// ignored.
	LocalOnly bool `yaml:"local_only"`
	// Visibility says who may read a user's presence with GET /presence: shared_rooms (users who
	// share a room with them) or everyone.
	Visibility string `yaml:"visibility"`
	// IdleTimeout: an online user without activity for this long becomes unavailable.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// OfflineTimeout: a user without a sync for this long becomes offline.
	OfflineTimeout Duration `yaml:"offline_timeout"`
}

// Default returns the configuration used when there is no config file.
func Default() *Config {
	return &Config{
		ServerName: "localhost",
		DataDir:    "./data",
		Listen:     Listen{Client: "127.0.0.1:8008"},
		Database:   Database{Backend: "sqlite", MaxOpenConns: 20},
		Logging:    Logging{Level: "info", Format: "text"},
		Metrics:    Metrics{Enabled: true, Path: "/metrics"},
		Auth: Auth{
			RefreshableAccessTokenLifetime: Duration(5 * time.Minute),
			PasswordMinLength:              8,
			UIASessionLifetime:             Duration(15 * time.Minute),
			OpenIDTokenLifetime:            Duration(time.Hour),
		},
		HTTP: HTTP{
			MaxBodyBytes:    8 << 20,
			ReadTimeout:     Duration(60 * time.Second),
			ShutdownTimeout: Duration(10 * time.Second),
		},
		RateLimits: RateLimits{
			Enabled: true,
			PerIP:   Rate{PerSecond: 1, Burst: 10},
			PerUser: Rate{PerSecond: 5, Burst: 50},
		},
		RoomVersions: RoomVersions{Default: "11"},
		Media:        defaultMedia(),
		Federation:   defaultFederation(),
		Presence: Presence{
			Enabled:        true,
			Visibility:     "shared_rooms",
			IdleTimeout:    Duration(5 * time.Minute),
			OfflineTimeout: Duration(30 * time.Second),
		},
	}
}

// Resolved paths and URLs, filled from the others when left empty.

// SigningKeyFile is where the server's ed25519 signing key lives.
func (c *Config) SigningKeyFile() string {
	if c.SigningKeyPath != "" {
		return c.SigningKeyPath
	}
	return filepath.Join(c.DataDir, "signing.key")
}

// SQLiteFile is the SQLite database path.
func (c *Config) SQLiteFile() string {
	if c.Database.SQLitePath != "" {
		return c.Database.SQLitePath
	}
	return filepath.Join(c.DataDir, "homeserver.db")
}

// NATSStoreDir is where the embedded NATS server keeps JetStream data.
func (c *Config) NATSStoreDir() string {
	if c.NATS.StoreDir != "" {
		return c.NATS.StoreDir
	}
	return filepath.Join(c.DataDir, "nats")
}

// BaseURL is the public URL clients use to reach the client API.
func (c *Config) BaseURL() string {
	if c.PublicBaseURL != "" {
		return strings.TrimSuffix(c.PublicBaseURL, "/")
	}
	host, port, err := net.SplitHostPort(c.Listen.Client)
	if err != nil {
		return "http://" + c.ServerName
	}
	if host == "127.0.0.1" || host == "::1" || host == "" || host == "0.0.0.0" || host == "::" {
		host = strings.TrimSuffix(strings.TrimPrefix(c.ServerName, "["), "]") // a bare [IPv6] literal
		if h, _, err := net.SplitHostPort(c.ServerName); err == nil {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, port)
}

// validContact reports whether a support contact is a user ID or looks like an email address.
func validContact(v string) bool {
	if strings.HasPrefix(v, "@") {
		_, err := spec.ParseUserID(v)
		return err == nil
	}
	local, domain, ok := strings.Cut(v, "@")
	return ok && local != "" && domain != "" && !strings.ContainsAny(v, " \t\r\n<>")
}

// WellKnownServer is the m.server value of /.well-known/matrix/server.
func (c *Config) WellKnownServer() string {
	if c.WellKnown.Server != "" {
		return c.WellKnown.Server
	}
	if fed := c.FederationListen(); fed != "" {
		// The TLS federation listener, on the host of server_name.
		_, port, _ := net.SplitHostPort(fed)
		host := strings.TrimSuffix(strings.TrimPrefix(c.ServerName, "["), "]")
		if h, _, err := net.SplitHostPort(c.ServerName); err == nil {
			host = h
		}
		return net.JoinHostPort(host, port)
	}
	u, err := url.Parse(c.BaseURL())
	if err != nil || u.Host == "" {
		return c.ServerName
	}
	if u.Port() == "" {
		if u.Scheme == "https" {
			return net.JoinHostPort(u.Hostname(), "443")
		}
		return net.JoinHostPort(u.Hostname(), "80")
	}
	return u.Host
}

// Problem is one thing wrong with a configuration, at a key path such as database.postgres_dsn.
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// Validate reports every problem in the configuration, not just the first.
func (c *Config) Validate() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if err := spec.ValidServerName(c.ServerName); err != nil {
		add("server_name", "%v", err)
	}
	if c.PublicBaseURL != "" {
		if u, err := url.Parse(c.PublicBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("public_baseurl", "must be an absolute http(s) URL, got %q", c.PublicBaseURL)
		}
	}
	if c.DataDir == "" {
		add("data_dir", "must not be empty")
	}
	for key, contacts := range map[string][]string{"well_known.support_admins": c.WellKnown.SupportAdmins,
		"well_known.support_security": c.WellKnown.SupportSecurity} {
		for i, v := range contacts {
			if !validContact(v) {
				add(fmt.Sprintf("%s[%d]", key, i), "must be a Matrix user ID (@user:server) or an email address, got %q", v)
			}
		}
	}
	if p := c.WellKnown.SupportPage; p != "" {
		if u, err := url.Parse(p); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("well_known.support_page", "must be an absolute http(s) URL, got %q", p)
		}
	}
	checkHostPort := func(path, v string, optional bool) {
		if v == "" {
			if !optional {
				add(path, "must be host:port")
			}
			return
		}
		_, port, err := net.SplitHostPort(v)
		if err != nil {
			add(path, "must be host:port: %v", err)
			return
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add(path, "port must be a number from 0 to 65535, got %q", port)
		}
	}
	checkHostPort("listen.client", c.Listen.Client, false)
	checkHostPort("metrics.listen", c.Metrics.Listen, true)
	switch c.Database.Backend {
	case "sqlite":
	case "postgres":
		if c.Database.PostgresDSN == "" {
			add("database.postgres_dsn", "required when database.backend is postgres (or set HS_DATABASE_POSTGRES_DSN)")
		}
	default:
		add("database.backend", "must be sqlite or postgres, got %q", c.Database.Backend)
	}
	if c.Database.MaxOpenConns < 1 {
		add("database.max_open_conns", "must be at least 1")
	}
	for i, u := range c.NATS.URLs {
		if p, err := url.Parse(u); err != nil || p.Host == "" {
			add(fmt.Sprintf("nats.urls[%d]", i), "must be a URL such as nats://host:4222, got %q", u)
		}
	}
	switch strings.ToLower(c.Logging.Level) {
	case "debug", "info", "warn", "error":
	default:
		add("logging.level", "must be debug, info, warn or error, got %q", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "text", "json":
	default:
		add("logging.format", "must be text or json, got %q", c.Logging.Format)
	}
	if c.Metrics.Enabled && !strings.HasPrefix(c.Metrics.Path, "/") {
		add("metrics.path", "must start with /")
	}
	if c.Auth.RefreshableAccessTokenLifetime < Duration(time.Second) {
		add("auth.refreshable_access_token_lifetime", "must be at least 1s")
	}
	if c.Auth.PasswordMinLength < 0 {
		add("auth.password_min_length", "must not be negative")
	}
	if c.Auth.UIASessionLifetime < Duration(time.Second) {
		add("auth.uia_session_lifetime", "must be at least 1s")
	}
	if c.Auth.OpenIDTokenLifetime < Duration(time.Second) {
		add("auth.openid_token_lifetime", "must be at least 1s")
	}
	if c.HTTP.MaxBodyBytes < 1024 {
		add("http.max_body_bytes", "must be at least 1024")
	}
	for i, p := range c.HTTP.TrustedProxies {
		if !validIPOrCIDR(p) {
			add(fmt.Sprintf("http.trusted_proxies[%d]", i), "must be an IP address or CIDR, got %q", p)
		}
	}
	for _, r := range []struct {
		name string
		rate Rate
	}{{"per_ip", c.RateLimits.PerIP}, {"per_user", c.RateLimits.PerUser}} {
		if c.RateLimits.Enabled && (r.rate.PerSecond <= 0 || r.rate.Burst < 1) {
			add("rate_limits."+r.name, "per_second must be > 0 and burst >= 1 while rate limits are enabled")
		}
	}
	for i, p := range c.RateLimits.ExemptIPs {
		if !validIPOrCIDR(p) {
			add(fmt.Sprintf("rate_limits.exempt_ips[%d]", i), "must be an IP address or CIDR, got %q", p)
		}
	}
	switch c.Presence.Visibility {
	case "shared_rooms", "everyone":
	default:
		add("presence.visibility", "must be shared_rooms or everyone, got %q", c.Presence.Visibility)
	}
	if c.Presence.IdleTimeout < Duration(100*time.Millisecond) {
		add("presence.idle_timeout", "must be at least 100ms")
	}
	if c.Presence.OfflineTimeout < Duration(100*time.Millisecond) {
		add("presence.offline_timeout", "must be at least 100ms")
	}
	if !knownRoomVersion(c.RoomVersions.Default) {
		add("room_versions.default", "must be one of %s, got %q", strings.Join(RoomVersionsSupported, ", "), c.RoomVersions.Default)
	}
	ps = append(ps, c.validateMedia()...)
	ps = append(ps, c.validateFederation()...)
	return ps
}

// RoomVersionsSupported lists the room versions this server can create and join.
var RoomVersionsSupported = []string{"6", "7", "8", "9", "10", "11", "12"}

func knownRoomVersion(v string) bool {
	for _, s := range RoomVersionsSupported {
		if s == v {
			return true
		}
	}
	return false
}

func validIPOrCIDR(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	_, _, err := net.ParseCIDR(s)
	return err == nil
}

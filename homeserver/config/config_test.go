package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	repo "github.com/hearthmx/homeserver"
	"github.com/hearthmx/homeserver/homeserver/config"
)

// nilEmptySlices sets every empty list of cfg to nil: "urls: []" in YAML and an unset list mean the
// same thing, and only the length of a list is ever looked at.
func nilEmptySlices(cfg *config.Config) {
	config.Walk(cfg, func(_ string, v reflect.Value) {
		if v.Kind() == reflect.Slice && v.Len() == 0 {
			v.Set(reflect.Zero(v.Type()))
		}
	})
}

func problemPaths(ps []config.Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Path)
	}
	sort.Strings(out)
	return out
}

func TestSampleConfigIsTheDefault(t *testing.T) {
	// Parsed over the defaults: no problems, valid, and nothing changed.
	overDefault := config.Default()
	if ps := config.Parse(repo.SampleConfig, overDefault); len(ps) != 0 {
		t.Fatalf("sample config has problems: %v", ps)
	}
	if ps := overDefault.Validate(); len(ps) != 0 {
		t.Fatalf("sample config does not validate: %v", ps)
	}
	nilEmptySlices(overDefault)
	if !reflect.DeepEqual(overDefault, config.Default()) {
		t.Errorf("sample parsed over Default() differs from Default():\n got %+v\nwant %+v", overDefault, config.Default())
	}

	// Parsed over an empty config, it must still equal the defaults: the sample states every one.
	overEmpty := &config.Config{}
	if ps := config.Parse(repo.SampleConfig, overEmpty); len(ps) != 0 {
		t.Fatalf("sample config parsed over an empty config has problems: %v", ps)
	}
	nilEmptySlices(overEmpty)
	if !reflect.DeepEqual(overEmpty, config.Default()) {
		want := config.Default()
		config.Walk(overEmpty, func(path string, v reflect.Value) {
			w := fieldAt(t, want, path)
			if !reflect.DeepEqual(v.Interface(), w.Interface()) {
				t.Errorf("sample states %s = %v, default is %v", path, v.Interface(), w.Interface())
			}
		})
		t.Fatal("the sample config does not state every default")
	}
}

// fieldAt returns the leaf of cfg at path.
func fieldAt(t *testing.T, cfg *config.Config, path string) reflect.Value {
	t.Helper()
	var out reflect.Value
	config.Walk(cfg, func(p string, v reflect.Value) {
		if p == path {
			out = v
		}
	})
	if !out.IsValid() {
		t.Fatalf("no config key %s", path)
	}
	return out
}

// yamlKeys maps the dotted path of every key of a YAML document to its key node.
func yamlKeys(n *yaml.Node, prefix string, out map[string]*yaml.Node) {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			yamlKeys(c, prefix, out)
		}
		return
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		p := n.Content[i].Value
		if prefix != "" {
			p = prefix + "." + p
		}
		out[p] = n.Content[i]
		yamlKeys(n.Content[i+1], p, out)
	}
}

func TestSampleConfigDocumentsEveryKey(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal(repo.SampleConfig, &doc); err != nil {
		t.Fatal(err)
	}
	keys := map[string]*yaml.Node{}
	yamlKeys(&doc, "", keys)
	n := 0
	config.Walk(config.Default(), func(path string, _ reflect.Value) {
		n++
		key, ok := keys[path]
		if !ok {
			t.Errorf("config key %s is missing from config.yaml", path)
			return
		}
		// Documented: a comment above the key, or above its parent (rate_limits.per_ip.burst).
		parent := keys[path[:max(strings.LastIndex(path, "."), 0)]]
		if key.HeadComment == "" && (parent == nil || parent.HeadComment == "") {
			t.Errorf("config key %s (config.yaml line %d) has no comment", path, key.Line)
		}
	})
	if n < 30 {
		t.Fatalf("Walk visited only %d keys", n)
	}
}

func TestEnvName(t *testing.T) {
	if got := config.EnvName("database.postgres_dsn"); got != "HS_DATABASE_POSTGRES_DSN" {
		t.Fatalf("EnvName = %q", got)
	}
	// No two keys share an environment variable.
	seen := map[string]string{}
	config.Walk(config.Default(), func(path string, _ reflect.Value) {
		name := config.EnvName(path)
		if other, ok := seen[name]; ok {
			t.Errorf("%s and %s both map to %s", other, path, name)
		}
		seen[name] = path
	})
}

func TestApplyEnv(t *testing.T) {
	cfg := config.Default()
	ps := config.ApplyEnv(cfg, []string{
		"HS_SERVER_NAME=example.org",
		"HS_METRICS_ENABLED=false",
		"HS_DATABASE_MAX_OPEN_CONNS=7",
		"HS_HTTP_MAX_BODY_BYTES=2048",
		"HS_RATE_LIMITS_PER_IP_PER_SECOND=2.5",
		"HS_AUTH_UIA_SESSION_LIFETIME=90s",
		"HS_NATS_URLS=nats://a:4222, nats://b:4222,",
		"HS_REGISTRATION_ENABLED=true",
		"HS_DATABASE_POSTGRES_DSN=postgres://u:p=q@h/db", // the value may contain '='
		// Ignored: other prefixes, and the test harness's own variables.
		"HS_TEST_POSTGRES_DSN=x",
		"HS_E2E_ANYTHING=x",
		"PATH=/bin",
		"NOEQUALS",
	})
	if len(ps) != 0 {
		t.Fatalf("problems: %v", ps)
	}
	if cfg.ServerName != "example.org" {
		t.Errorf("server_name = %q", cfg.ServerName)
	}
	if cfg.Metrics.Enabled {
		t.Error("metrics.enabled still true")
	}
	if cfg.Database.MaxOpenConns != 7 {
		t.Errorf("database.max_open_conns = %d", cfg.Database.MaxOpenConns)
	}
	if cfg.HTTP.MaxBodyBytes != 2048 {
		t.Errorf("http.max_body_bytes = %d", cfg.HTTP.MaxBodyBytes)
	}
	if cfg.RateLimits.PerIP.PerSecond != 2.5 {
		t.Errorf("rate_limits.per_ip.per_second = %v", cfg.RateLimits.PerIP.PerSecond)
	}
	if cfg.Auth.UIASessionLifetime.D() != 90*time.Second {
		t.Errorf("auth.uia_session_lifetime = %v", cfg.Auth.UIASessionLifetime)
	}
	if !slices.Equal(cfg.NATS.URLs, []string{"nats://a:4222", "nats://b:4222"}) {
		t.Errorf("nats.urls = %q", cfg.NATS.URLs)
	}
	if cfg.Registration.Enabled == nil || !*cfg.Registration.Enabled {
		t.Errorf("registration.enabled = %v, want pointer to true", cfg.Registration.Enabled)
	}
	if !cfg.RegistrationOpen() {
		t.Error("RegistrationOpen false although registration.enabled is true")
	}
	if cfg.Database.PostgresDSN != "postgres://u:p=q@h/db" {
		t.Errorf("database.postgres_dsn = %q", cfg.Database.PostgresDSN)
	}
	// Untouched keys keep their defaults.
	if cfg.Logging.Level != "info" || cfg.RateLimits.PerUser.Burst != 50 {
		t.Errorf("untouched keys changed: %+v %+v", cfg.Logging, cfg.RateLimits.PerUser)
	}

	if ps := config.ApplyEnv(cfg, nil); len(ps) != 0 {
		t.Errorf("empty environment: %v", ps)
	}
}

func TestApplyEnvReportsBadValues(t *testing.T) {
	cfg := config.Default()
	ps := config.ApplyEnv(cfg, []string{
		"HS_METRICS_ENABLED=maybe",
		"HS_DATABASE_MAX_OPEN_CONNS=many",
		"HS_RATE_LIMITS_PER_IP_PER_SECOND=fast",
		"HS_AUTH_UIA_SESSION_LIFETIME=forever",
		"HS_REGISTRATION_ENABLED=perhaps",
		"HS_DATABSE_BACKEND=postgres", // typo
		"HS_LOGGING_LEVEL=debug",      // a good one among the bad
	})
	want := []string{
		"HS_DATABSE_BACKEND",
		"auth.uia_session_lifetime",
		"database.max_open_conns",
		"metrics.enabled",
		"rate_limits.per_ip.per_second",
		"registration.enabled",
	}
	if got := problemPaths(ps); !slices.Equal(got, want) {
		t.Fatalf("problem paths = %v, want %v (problems: %v)", got, want, ps)
	}
	for _, p := range ps {
		if p.Path != "HS_DATABSE_BACKEND" && !strings.Contains(p.Message, config.EnvName(p.Path)) {
			t.Errorf("problem %v does not name its variable", p)
		}
	}
	// Bad values leave the keys as they were; good ones apply.
	if !cfg.Metrics.Enabled || cfg.Database.MaxOpenConns != 20 || cfg.Registration.Enabled != nil ||
		cfg.Auth.UIASessionLifetime.D() != 15*time.Minute || cfg.RateLimits.PerIP.PerSecond != 1 {
		t.Errorf("bad values changed the config: %+v", cfg)
	}
	if cfg.Logging.Level != "debug" {
		t.Errorf("logging.level = %q, want debug", cfg.Logging.Level)
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	const doc = `
server_name: example.org
bogus: 1
listen:
  client: [1, 2]
  extra: x
database:
  backend: postgres
  max_open_conns: lots
  sqlite_pth: typo
auth:
  uia_session_lifetime: forever
  password_min_length: 12
rate_limits:
  per_ip:
    burst: many
    per_second: 3
logging: loud
nats:
  urls: nats://single
`
	cfg := config.Default()
	ps := config.Parse([]byte(doc), cfg)
	want := []string{
		"auth.uia_session_lifetime",
		"bogus",
		"database.max_open_conns",
		"database.sqlite_pth",
		"listen.client",
		"listen.extra",
		"logging",
		"nats.urls",
		"rate_limits.per_ip.burst",
	}
	if got := problemPaths(ps); !slices.Equal(got, want) {
		t.Fatalf("problem paths = %v, want %v\nproblems: %v", got, want, ps)
	}
	for _, p := range ps {
		if p.Message == "" || !strings.HasPrefix(p.String(), p.Path+": ") {
			t.Errorf("problem %#v has no message or a bad String()", p)
		}
	}
	// Keys around the bad ones were still read.
	if cfg.ServerName != "example.org" || cfg.Database.Backend != "postgres" || cfg.Auth.PasswordMinLength != 12 ||
		cfg.RateLimits.PerIP.PerSecond != 3 {
		t.Errorf("good keys next to bad ones were not applied: %+v", cfg)
	}
}

func TestParseEdgeCases(t *testing.T) {
	cfg := config.Default()
	if ps := config.Parse(nil, cfg); len(ps) != 0 {
		t.Errorf("empty file: %v", ps)
	}
	if ps := config.Parse([]byte("# only a comment\n"), cfg); len(ps) != 0 {
		t.Errorf("comment-only file: %v", ps)
	}
	if !reflect.DeepEqual(cfg, config.Default()) {
		t.Error("empty file changed the config")
	}
	if ps := config.Parse([]byte("server_name: [unclosed\n"), cfg); len(ps) != 1 {
		t.Errorf("syntax error: %v, want one problem", ps)
	}

	// registration.enabled: true / false / null.
	cfg = config.Default()
	config.Parse([]byte("registration:\n  enabled: false\n"), cfg)
	if cfg.Registration.Enabled == nil || *cfg.Registration.Enabled {
		t.Errorf("enabled: false parsed as %v", cfg.Registration.Enabled)
	}
	config.Parse([]byte("registration:\n  enabled: null\n"), cfg)
	if cfg.Registration.Enabled != nil {
		t.Errorf("enabled: null parsed as %v", *cfg.Registration.Enabled)
	}
	if ps := config.Parse([]byte("registration:\n  enabled: sometimes\n"), cfg); !slices.Equal(problemPaths(ps), []string{"registration.enabled"}) {
		t.Errorf("enabled: sometimes: %v", ps)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("server_name: example.org\nlogging:\n  level: warn\n  colour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, ps, err := config.Load(path, []string{"HS_LOGGING_LEVEL=error", "HS_NOPE=1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := problemPaths(ps); !slices.Equal(got, []string{"HS_NOPE", "logging.colour"}) {
		t.Errorf("problems = %v", ps)
	}
	// The environment wins over the file, the file over the defaults.
	if cfg.ServerName != "example.org" || cfg.Logging.Level != "error" || cfg.Logging.Format != "text" {
		t.Errorf("loaded %+v", cfg)
	}

	cfg, ps, err = config.Load("", nil)
	if err != nil || len(ps) != 0 || !reflect.DeepEqual(cfg, config.Default()) {
		t.Errorf("Load with no file = %+v, %v, %v; want the defaults", cfg, ps, err)
	}
	if _, _, err := config.Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func TestValidateDefault(t *testing.T) {
	if ps := config.Default().Validate(); len(ps) != 0 {
		t.Fatalf("default config: %v", ps)
	}
}

func TestValidateEachProblem(t *testing.T) {
	for _, tc := range []struct {
		path   string
		mutate func(c *config.Config)
	}{
		{"server_name", func(c *config.Config) { c.ServerName = "bad name!" }},
		{"server_name", func(c *config.Config) { c.ServerName = "" }},
		{"public_baseurl", func(c *config.Config) { c.PublicBaseURL = "matrix.example.org" }},
		{"public_baseurl", func(c *config.Config) { c.PublicBaseURL = "ftp://matrix.example.org" }},
		{"data_dir", func(c *config.Config) { c.DataDir = "" }},
		{"well_known.support_admins[1]", func(c *config.Config) {
			c.WellKnown.SupportAdmins = []string{"@admin:example.org", "admin"}
		}},
		{"well_known.support_security[0]", func(c *config.Config) { c.WellKnown.SupportSecurity = []string{"@bad name:example.org"} }},
		{"well_known.support_security[0]", func(c *config.Config) { c.WellKnown.SupportSecurity = []string{"a b@example.org"} }},
		{"well_known.support_page", func(c *config.Config) { c.WellKnown.SupportPage = "example.org/help" }},
		{"listen.client", func(c *config.Config) { c.Listen.Client = "" }},
		{"listen.client", func(c *config.Config) { c.Listen.Client = "127.0.0.1" }},
		{"metrics.listen", func(c *config.Config) { c.Metrics.Listen = "9090" }},
		{"database.backend", func(c *config.Config) { c.Database.Backend = "mysql" }},
		{"database.postgres_dsn", func(c *config.Config) { c.Database.Backend = "postgres" }},
		{"database.max_open_conns", func(c *config.Config) { c.Database.MaxOpenConns = 0 }},
		{"nats.urls[1]", func(c *config.Config) { c.NATS.URLs = []string{"nats://a:4222", "not a url"} }},
		{"logging.level", func(c *config.Config) { c.Logging.Level = "verbose" }},
		{"logging.format", func(c *config.Config) { c.Logging.Format = "xml" }},
		{"metrics.path", func(c *config.Config) { c.Metrics.Path = "metrics" }},
		{"auth.refreshable_access_token_lifetime", func(c *config.Config) { c.Auth.RefreshableAccessTokenLifetime = 0 }},
		{"auth.password_min_length", func(c *config.Config) { c.Auth.PasswordMinLength = -1 }},
		{"auth.uia_session_lifetime", func(c *config.Config) { c.Auth.UIASessionLifetime = config.Duration(time.Millisecond) }},
		{"auth.openid_token_lifetime", func(c *config.Config) { c.Auth.OpenIDTokenLifetime = 0 }},
		{"http.max_body_bytes", func(c *config.Config) { c.HTTP.MaxBodyBytes = 100 }},
		{"http.trusted_proxies[0]", func(c *config.Config) { c.HTTP.TrustedProxies = []string{"proxy.local", "10.0.0.0/8"} }},
		{"rate_limits.per_ip", func(c *config.Config) { c.RateLimits.PerIP.PerSecond = 0 }},
		{"rate_limits.per_user", func(c *config.Config) { c.RateLimits.PerUser.Burst = 0 }},
		{"rate_limits.exempt_ips[0]", func(c *config.Config) { c.RateLimits.ExemptIPs = []string{"10.0.0.0/33"} }},
		{"room_versions.default", func(c *config.Config) { c.RoomVersions.Default = "5" }},
	} {
		c := config.Default()
		tc.mutate(c)
		if got := problemPaths(c.Validate()); !slices.Equal(got, []string{tc.path}) {
			t.Errorf("want a problem at %s, got %v", tc.path, c.Validate())
		}
	}
}

func TestValidateReportsAllAtOnce(t *testing.T) {
	c := config.Default()
	c.ServerName = "bad name!"
	c.Database.Backend = "postgres" // without a DSN
	c.Listen.Client = "nohost"
	c.Metrics.Listen = "also-no-port"
	c.Logging.Level = "loud"
	c.HTTP.TrustedProxies = []string{"::1", "not-an-ip"}
	c.RateLimits.PerIP = config.Rate{}
	c.RateLimits.PerUser = config.Rate{PerSecond: 1}
	c.RoomVersions.Default = "99"
	want := []string{
		"database.postgres_dsn",
		"http.trusted_proxies[1]",
		"listen.client",
		"logging.level",
		"metrics.listen",
		"rate_limits.per_ip",
		"rate_limits.per_user",
		"room_versions.default",
		"server_name",
	}
	if got := problemPaths(c.Validate()); !slices.Equal(got, want) {
		t.Fatalf("problems = %v, want paths %v", c.Validate(), want)
	}

	// With rate limits off, zero rates are fine; valid proxies and versions are fine.
	c = config.Default()
	c.RateLimits.Enabled = false
	c.RateLimits.PerIP = config.Rate{}
	c.RateLimits.PerUser = config.Rate{}
	c.HTTP.TrustedProxies = []string{"::1", "10.0.0.0/8", "192.168.1.1"}
	c.RoomVersions.Default = "12"
	c.ServerName = "[2001:db8::1]:8448"
	c.Database = config.Database{Backend: "postgres", PostgresDSN: "postgres://localhost/hs", MaxOpenConns: 1}
	c.NATS.URLs = []string{"nats://nats1:4222"}
	c.PublicBaseURL = "https://matrix.example.org/"
	c.Metrics.Listen = "[::1]:9090"
	if ps := c.Validate(); len(ps) != 0 {
		t.Fatalf("valid config reported: %v", ps)
	}
}

func TestRegistrationOpen(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		server  string
		enabled *bool
		want    bool
	}{
		{"localhost", nil, true},
		{"example.org", nil, false},
		{"localhost:8448", nil, false},
		{"localhost", &no, false},
		{"example.org", &yes, true},
	} {
		c := config.Default()
		c.ServerName, c.Registration.Enabled = tc.server, tc.enabled
		if got := c.RegistrationOpen(); got != tc.want {
			t.Errorf("server %s, enabled %v: RegistrationOpen = %v, want %v", tc.server, tc.enabled, got, tc.want)
		}
	}
}

func TestDerivedURLs(t *testing.T) {
	for _, tc := range []struct {
		server, baseURL, listen, wellKnown string
		wantBase, wantServer               string
	}{
		// Defaults: the server name with the listener's port.
		{"localhost", "", "127.0.0.1:8008", "", "http://localhost:8008", "localhost:8008"},
		{"example.org", "", "0.0.0.0:8008", "", "http://example.org:8008", "example.org:8008"},
		{"example.org:8448", "", "[::]:8008", "", "http://example.org:8008", "example.org:8008"},
		{"[2001:db8::1]:8448", "", "127.0.0.1:8008", "", "http://[2001:db8::1]:8008", "[2001:db8::1]:8008"},
		{"[2001:db8::1]", "", "127.0.0.1:8008", "", "http://[2001:db8::1]:8008", "[2001:db8::1]:8008"},
		// A specific listen address is reachable as such.
		{"example.org", "", "192.0.2.7:8008", "", "http://192.0.2.7:8008", "192.0.2.7:8008"},
		// public_baseurl wins, without a trailing slash; its port or scheme's port goes into m.server.
		{"example.org", "https://matrix.example.org/", "127.0.0.1:8008", "", "https://matrix.example.org", "matrix.example.org:443"},
		{"example.org", "http://matrix.example.org", "127.0.0.1:8008", "", "http://matrix.example.org", "matrix.example.org:80"},
		{"example.org", "https://matrix.example.org:8443/", "127.0.0.1:8008", "", "https://matrix.example.org:8443", "matrix.example.org:8443"},
		{"example.org", "https://[2001:db8::1]/", "127.0.0.1:8008", "", "https://[2001:db8::1]", "[2001:db8::1]:443"},
		// well_known.server wins for m.server.
		{"example.org", "https://matrix.example.org", "127.0.0.1:8008", "fed.example.org:8448", "https://matrix.example.org", "fed.example.org:8448"},
		// A listen address without a port falls back to the server name.
		{"example.org", "", "nonsense", "", "http://example.org", "example.org:80"},
	} {
		c := config.Default()
		c.ServerName, c.PublicBaseURL, c.Listen.Client, c.WellKnown.Server = tc.server, tc.baseURL, tc.listen, tc.wellKnown
		if got := c.BaseURL(); got != tc.wantBase {
			t.Errorf("%+v: BaseURL = %q, want %q", tc, got, tc.wantBase)
		}
		if got := c.WellKnownServer(); got != tc.wantServer {
			t.Errorf("%+v: WellKnownServer = %q, want %q", tc, got, tc.wantServer)
		}
	}
}

func TestDerivedPaths(t *testing.T) {
	c := config.Default()
	c.DataDir = "/var/lib/hs"
	if got := c.SigningKeyFile(); got != filepath.Join("/var/lib/hs", "signing.key") {
		t.Errorf("SigningKeyFile = %q", got)
	}
	if got := c.SQLiteFile(); got != filepath.Join("/var/lib/hs", "homeserver.db") {
		t.Errorf("SQLiteFile = %q", got)
	}
	if got := c.NATSStoreDir(); got != filepath.Join("/var/lib/hs", "nats") {
		t.Errorf("NATSStoreDir = %q", got)
	}
	c.SigningKeyPath, c.Database.SQLitePath, c.NATS.StoreDir = "/k", "/db", "/n"
	if c.SigningKeyFile() != "/k" || c.SQLiteFile() != "/db" || c.NATSStoreDir() != "/n" {
		t.Errorf("explicit paths ignored: %q %q %q", c.SigningKeyFile(), c.SQLiteFile(), c.NATSStoreDir())
	}
}

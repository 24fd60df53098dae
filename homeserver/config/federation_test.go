package config_test

import (
	"slices"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/config"
)

func TestFederationListen(t *testing.T) {
	cfg := config.Default()
	if got := cfg.FederationListen(); got != "" {
		t.Fatalf("no TLS material: FederationListen = %q, want none", got)
	}
	cfg.Federation.TLS.CertFile, cfg.Federation.TLS.KeyFile = "a.crt", "a.key"
	if got := cfg.FederationListen(); got != ":8448" {
		t.Fatalf("with a certificate: FederationListen = %q, want :8448", got)
	}
	cfg.Listen.Federation = "127.0.0.1:9448"
	if got := cfg.FederationListen(); got != "127.0.0.1:9448" {
		t.Fatalf("FederationListen = %q", got)
	}
	// m.server points at the federation listener, on the host of server_name.
	cfg.ServerName = "example.org"
	if got := cfg.WellKnownServer(); got != "example.org:9448" {
		t.Fatalf("WellKnownServer = %q", got)
	}
	cfg.WellKnown.Server = "matrix.example.org:443"
	if got := cfg.WellKnownServer(); got != "matrix.example.org:443" {
		t.Fatalf("WellKnownServer = %q", got)
	}
	cfg = config.Default()
	cfg.Federation.TLS.CACertFile, cfg.Federation.TLS.CAKeyFile = "ca.crt", "ca.key"
	if got := cfg.FederationListen(); got != ":8448" {
		t.Fatalf("with a CA: FederationListen = %q", got)
	}
	// The environment sets the name and the listeners (Complement).
	cfg = config.Default()
	ps := config.ApplyEnv(cfg, []string{"HS_SERVER_NAME=hs1", "HS_LISTEN_CLIENT=0.0.0.0:8008", "HS_LISTEN_FEDERATION=0.0.0.0:8448",
		"HS_FEDERATION_TLS_CA_CERT_FILE=/complement/ca/ca.crt", "HS_FEDERATION_TLS_CA_KEY_FILE=/complement/ca/ca.key",
		"HS_FEDERATION_TLS_EXTRA_CA_FILES=/complement/ca/ca.crt", "HS_FEDERATION_ALLOWED_NETWORKS=172.16.0.0/12,10.0.0.0/8"})
	if len(ps) != 0 || cfg.ServerName != "hs1" || cfg.FederationListen() != "0.0.0.0:8448" ||
		!slices.Equal(cfg.Federation.AllowedNetworks, []string{"172.16.0.0/12", "10.0.0.0/8"}) {
		t.Fatalf("env: %v %+v", ps, cfg.Federation)
	}
	if ps := cfg.Validate(); len(ps) != 0 {
		t.Fatalf("Complement-style configuration: %v", ps)
	}
}

func TestFederationValidation(t *testing.T) {
	cfg := config.Default()
	cfg.Listen.Federation = "8448"
	cfg.Federation.TLS.CertFile = "only-cert.pem"
	cfg.Federation.TLS.CACertFile = "ca.pem"
	cfg.Federation.KeyValidity = config.Duration(0)
	cfg.Federation.RequestTimeout = config.Duration(0)
	cfg.Federation.OldVerifyKeys = []string{
		"ed25519:old AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA 1700000000000", // fine
		"ed25519:old AAAA 1700000000000",
		"ed25519:old",
		"curve:old AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA 1",
		"ed25519:old AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA soon",
	}
	cfg.Federation.TrustedKeyServers = []string{
		"matrix.org ed25519:auto Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw", // fine
		"bad name ed25519:auto Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw",
		"matrix.org ed25519:a-b Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw",
	}
	cfg.Federation.AllowedNetworks = []string{"127.0.0.0/8", "localhost"}
	got := problemPaths(cfg.Validate())
	want := []string{
		"federation.allowed_networks[1]",
		"federation.key_validity",
		"federation.old_verify_keys[1]", "federation.old_verify_keys[2]", "federation.old_verify_keys[3]", "federation.old_verify_keys[4]",
		"federation.request_timeout",
		"federation.tls", "federation.tls", "federation.tls",
		"federation.trusted_key_servers[1]", "federation.trusted_key_servers[2]",
		"listen.federation", "listen.federation", // not host:port, and no certificate to serve
	}
	if !slices.Equal(got, want) {
		t.Fatalf("problems at\n %v\nwant\n %v", got, want)
	}
	// Retry waits: at least 10ms, the cap at least the first wait.
	cfg = config.Default()
	cfg.Federation.RetryInitial = config.Duration(time.Millisecond)
	if got := problemPaths(cfg.Validate()); !slices.Equal(got, []string{"federation.retry_initial"}) {
		t.Fatalf("retry_initial 1ms: %v", got)
	}
	cfg.Federation.RetryInitial, cfg.Federation.RetryMax = config.Duration(time.Minute), config.Duration(time.Second)
	if got := problemPaths(cfg.Validate()); !slices.Equal(got, []string{"federation.retry_max"}) {
		t.Fatalf("retry_max below retry_initial: %v", got)
	}
	// A federation listener without TLS material is refused.
	cfg = config.Default()
	cfg.Listen.Federation = ":8448"
	if got := problemPaths(cfg.Validate()); !slices.Equal(got, []string{"listen.federation"}) {
		t.Fatalf("listener without TLS: %v", got)
	}
}

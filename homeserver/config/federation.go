package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Federation configures the server-server API (federation/): this server's published keys, how
// other servers' keys are found, outgoing connections and the TLS of the federation listener.
type Federation struct {
	// KeyValidity is how far ahead the valid_until_ts of our /_matrix/key/v2/server answer lies.
	KeyValidity Duration `yaml:"key_validity"`
	// OldVerifyKeys are keys this server signed with before a rotation, published in
	// old_verify_keys so that its old events still verify: "<key id> <public key> <expired_ts>".
	OldVerifyKeys []string `yaml:"old_verify_keys"`
	// TrustedKeyServers are notaries asked for a server's keys when the server itself does not
	// answer: "<server name> <key id> <public key>", one entry per key.
	TrustedKeyServers []string `yaml:"trusted_key_servers"`
	// AllowedNetworks are IPs or CIDRs that outgoing federation may connect to although they
	// are loopback, private, link-local, ... (refused otherwise).
	AllowedNetworks []string `yaml:"allowed_networks"`
	// RequestTimeout bounds one outgoing federation request, response included.
	RequestTimeout Duration `yaml:"request_timeout"`
	// RetryInitial is how long the outbound queue of a destination waits after a failed
	// transaction before trying again; each further failure doubles it, up to RetryMax.
	RetryInitial Duration `yaml:"retry_initial"`
	// RetryMax caps the wait between attempts to reach a destination that is down.
	RetryMax Duration      `yaml:"retry_max"`
	TLS      FederationTLS `yaml:"tls"`
}

// FederationTLS is the TLS material of federation.
type FederationTLS struct {
	// CertFile and KeyFile are the certificate chain and key (PEM) the federation listener serves.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CACertFile and CAKeyFile are a CA (PEM) from which the server issues itself a certificate
	// for server_name at every start, instead of CertFile/KeyFile (Complement, local test setups).
	CACertFile string `yaml:"ca_cert_file"`
	CAKeyFile  string `yaml:"ca_key_file"`
	// ExtraCAFiles are PEM files of authorities trusted for outgoing federation besides the
	// system's (which SSL_CERT_FILE and SSL_CERT_DIR also extend).
	ExtraCAFiles []string `yaml:"extra_ca_files"`
	// InsecureSkipVerify accepts any certificate from other servers. Local tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

func defaultFederation() Federation {
	return Federation{KeyValidity: Duration(7 * 24 * time.Hour), RequestTimeout: Duration(time.Minute),
		RetryInitial: Duration(10 * time.Second), RetryMax: Duration(10 * time.Minute)}
}

// DefaultFederationListen is where federation is served when TLS material is configured and
// listen.federation is empty.
const DefaultFederationListen = ":8448"

// HasFederationTLS reports whether the federation listener has a certificate to serve.
func (c *Config) HasFederationTLS() bool {
	t := c.Federation.TLS
	return t.CertFile != "" && t.KeyFile != "" || t.CACertFile != "" && t.CAKeyFile != ""
}

// FederationListen is the host:port of the TLS federation listener, "" when there is none:
// listen.federation, or :8448 when it is empty and TLS material is configured.
func (c *Config) FederationListen() string {
	if c.Listen.Federation != "" {
		return c.Listen.Federation
	}
	if c.HasFederationTLS() {
		return DefaultFederationListen
	}
	return ""
}

// OldVerifyKey is one entry of federation.old_verify_keys.
type OldVerifyKey struct {
	KeyID     string
	Public    ed25519.PublicKey
	ExpiredTS int64
}

// ParseOldVerifyKey reads "<key id> <public key> <expired_ts>".
func ParseOldVerifyKey(s string) (OldVerifyKey, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return OldVerifyKey{}, fmt.Errorf("%q is not \"<key id> <public key> <expired_ts>\"", s)
	}
	pub, err := parseVerifyKey(f[0], f[1])
	if err != nil {
		return OldVerifyKey{}, err
	}
	ts, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || ts <= 0 {
		return OldVerifyKey{}, fmt.Errorf("expired_ts %q is not a timestamp in milliseconds", f[2])
	}
	return OldVerifyKey{KeyID: f[0], Public: pub, ExpiredTS: ts}, nil
}

// KeyServer is one entry of federation.trusted_key_servers.
type KeyServer struct {
	ServerName string
	KeyID      string
	Public     ed25519.PublicKey
}

// ParseKeyServer reads "<server name> <key id> <public key>".
func ParseKeyServer(s string) (KeyServer, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return KeyServer{}, fmt.Errorf("%q is not \"<server name> <key id> <public key>\"", s)
	}
	if err := spec.ValidServerName(f[0]); err != nil {
		return KeyServer{}, err
	}
	pub, err := parseVerifyKey(f[1], f[2])
	if err != nil {
		return KeyServer{}, err
	}
	return KeyServer{ServerName: f[0], KeyID: f[1], Public: pub}, nil
}

func parseVerifyKey(keyID, b64 string) (ed25519.PublicKey, error) {
	version, ok := strings.CutPrefix(keyID, "ed25519:")
	if !ok || version == "" || strings.Trim(version, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
		return nil, fmt.Errorf("key ID %q is not ed25519:<version> with a version of [a-zA-Z0-9_]", keyID)
	}
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key %q is not 32 bytes of unpadded base64", b64)
	}
	return ed25519.PublicKey(raw), nil
}

func (c *Config) validateFederation() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	f, t := c.Federation, c.Federation.TLS
	if c.Listen.Federation != "" {
		if _, port, err := net.SplitHostPort(c.Listen.Federation); err != nil {
			add("listen.federation", "must be host:port: %v", err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add("listen.federation", "port must be a number from 0 to 65535, got %q", port)
		}
		if !c.HasFederationTLS() {
			add("listen.federation", "needs federation.tls.cert_file and key_file, or ca_cert_file and ca_key_file")
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		add("federation.tls", "cert_file and key_file go together")
	}
	if (t.CACertFile == "") != (t.CAKeyFile == "") {
		add("federation.tls", "ca_cert_file and ca_key_file go together")
	}
	if t.CertFile != "" && t.CACertFile != "" {
		add("federation.tls", "give either cert_file and key_file or ca_cert_file and ca_key_file, not both")
	}
	if f.KeyValidity < Duration(time.Hour) {
		add("federation.key_validity", "must be at least 1h")
	}
	if f.RequestTimeout < Duration(time.Second) {
		add("federation.request_timeout", "must be at least 1s")
	}
	if f.RetryInitial < Duration(10*time.Millisecond) {
		add("federation.retry_initial", "must be at least 10ms")
	}
	if f.RetryMax < f.RetryInitial {
		add("federation.retry_max", "must be at least federation.retry_initial")
	}
	for i, s := range f.OldVerifyKeys {
		if _, err := ParseOldVerifyKey(s); err != nil {
			add(fmt.Sprintf("federation.old_verify_keys[%d]", i), "%v", err)
		}
	}
	for i, s := range f.TrustedKeyServers {
		if _, err := ParseKeyServer(s); err != nil {
			add(fmt.Sprintf("federation.trusted_key_servers[%d]", i), "%v", err)
		}
	}
	for i, n := range f.AllowedNetworks {
		if !validIPOrCIDR(n) {
			add(fmt.Sprintf("federation.allowed_networks[%d]", i), "must be an IP address or CIDR, got %q", n)
		}
	}
	return ps
}

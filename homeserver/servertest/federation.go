package servertest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/hearthmx/homeserver/federation/cert"
	"github.com/hearthmx/homeserver/homeserver/config"
)

// CA is a certificate authority made for one test: servers issue their federation certificates
// from it and trust it for outgoing federation.
type CA struct {
	CertFile, KeyFile string
	CertPEM, KeyPEM   []byte
	// Pool trusts the CA (for test clients talking to a federation listener).
	Pool *x509.CertPool
}

// NewCA creates a CA in a temporary directory.
func NewCA(t testing.TB) *CA {
	t.Helper()
	certPEM, keyPEM, err := cert.NewCA("hearth test CA")
	if err != nil {
		t.Fatalf("servertest: CA: %v", err)
	}
	dir := t.TempDir()
	ca := &CA{CertFile: filepath.Join(dir, "ca.crt"), KeyFile: filepath.Join(dir, "ca.key"), CertPEM: certPEM, KeyPEM: keyPEM,
		Pool: x509.NewCertPool()}
	if err := os.WriteFile(ca.CertFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca.KeyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ca.Pool.AppendCertsFromPEM(certPEM)
	return ca
}

// TLSConfig is a client TLS configuration that trusts the CA.
func (ca *CA) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}
}

// Federated configures a server for federation tests: it is named ip:port after a free port on
// ip (a 127.0.0.x address, so that several servers each have their own), serves federation over
// TLS there with a certificate issued from ca, trusts ca for outgoing federation and may connect
// to loopback addresses; registration is open (it is closed by default for a server_name other
// than localhost). Use it as a mutate function of Start.
func Federated(t testing.TB, ca *CA, ip string) func(*config.Config) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("servertest: no free port on %s: %v", ip, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	return func(cfg *config.Config) {
		cfg.ServerName = addr
		cfg.Listen.Federation = addr
		cfg.Federation.TLS.CACertFile = ca.CertFile
		cfg.Federation.TLS.CAKeyFile = ca.KeyFile
		cfg.Federation.TLS.ExtraCAFiles = []string{ca.CertFile}
		cfg.Federation.AllowedNetworks = []string{"127.0.0.0/8"}
		open := true
		cfg.Registration.Enabled = &open
	}
}

package cert

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// rsaCA is a CA with an RSA key in PKCS #1 form, as openssl and Complement make them.
func rsaCA(t *testing.T) (certPEM, keyPEM []byte) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rsa CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}

func TestIssue(t *testing.T) {
	ecCert, ecKey, err := NewCA("ec CA")
	if err != nil {
		t.Fatal(err)
	}
	rsaCert, rsaKey := rsaCA(t)
	for name, ca := range map[string][2][]byte{"ecdsa pkcs8": {ecCert, ecKey}, "rsa pkcs1": {rsaCert, rsaKey}} {
		t.Run(name, func(t *testing.T) {
			c, err := Issue(ca[0], ca[1], []string{"hs1.test", "127.0.0.2", "::1"})
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ca[0])
			for _, n := range []string{"hs1.test", "127.0.0.2", "::1"} {
				if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: pool}); err != nil {
					t.Errorf("leaf not valid for %s: %v", n, err)
				}
			}
			if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "other.test", Roots: pool}); err == nil {
				t.Error("leaf valid for a name it was not issued for")
			}
			if len(c.Certificate) != 2 {
				t.Errorf("chain has %d certificates, want leaf and CA", len(c.Certificate))
			}
			// A leaf never outlives its CA.
			if ca, _ := x509.ParseCertificate(c.Certificate[1]); c.Leaf.NotAfter.After(ca.NotAfter) {
				t.Errorf("leaf valid until %v, CA until %v", c.Leaf.NotAfter, ca.NotAfter)
			}
		})
	}
	if _, err := Issue(ecCert, ecKey, nil); err == nil {
		t.Error("issued a certificate without names")
	}
	if _, err := Issue(ecKey, ecKey, []string{"a"}); err == nil {
		t.Error("a key accepted as CA certificate")
	}
	if _, err := Issue(ecCert, ecCert, []string{"a"}); err == nil {
		t.Error("a certificate accepted as CA key")
	}
}

func TestFilesAndPool(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey, _ := NewCA("CA")
	caFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	os.WriteFile(caFile, caCert, 0o600)
	os.WriteFile(keyFile, caKey, 0o600)
	c, err := IssueFromFiles(caFile, keyFile, []string{"hs.test"})
	if err != nil {
		t.Fatal(err)
	}
	// A static pair: the issued leaf written out and loaded back.
	leafFile, leafKeyFile := filepath.Join(dir, "leaf.crt"), filepath.Join(dir, "leaf.key")
	keyDER, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	os.WriteFile(leafFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(leafKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	if _, err := Load(leafFile, leafKeyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(leafFile, keyFile); err == nil {
		t.Error("certificate loaded with another key")
	}
	pool, err := Pool([]string{caFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "hs.test", Roots: pool}); err != nil {
		t.Fatalf("pool does not trust the extra CA: %v", err)
	}
	if _, err := Pool([]string{filepath.Join(dir, "missing.pem")}); err == nil {
		t.Error("missing extra CA file accepted")
	}
	if _, err := Pool([]string{keyFile}); err == nil {
		t.Error("extra CA file without a certificate accepted")
	}
	if _, err := IssueFromFiles(filepath.Join(dir, "missing"), keyFile, []string{"a"}); err == nil {
		t.Error("missing CA file accepted")
	}
}

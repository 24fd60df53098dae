package signing_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/signing"
)

var keyIDPattern = regexp.MustCompile(`^ed25519:[a-zA-Z0-9_]+$`)

func TestLoadOrGenerate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "signing.key") // the directory is created too
	k, generated, err := signing.LoadOrGenerate(path)
	if err != nil {
		t.Fatal(err)
	}
	if !generated {
		t.Fatal("first call did not report a generated key")
	}
	if !keyIDPattern.MatchString(k.ID) {
		t.Fatalf("key ID %q does not match %s", k.ID, keyIDPattern)
	}
	if len(k.Private) != ed25519.PrivateKeySize {
		t.Fatalf("private key has %d bytes", len(k.Private))
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Fatalf("key file mode = %o, want 600", perm)
	}
	data, _ := os.ReadFile(path)
	if fields := strings.Fields(string(data)); len(fields) != 3 || fields[0] != "ed25519" || "ed25519:"+fields[1] != k.ID {
		t.Fatalf("key file = %q, want 'ed25519 <version> <seed>' with version of %s", data, k.ID)
	}

	again, generated, err := signing.LoadOrGenerate(path)
	if err != nil {
		t.Fatal(err)
	}
	if generated {
		t.Fatal("second call generated a new key")
	}
	if again.ID != k.ID || !again.Private.Equal(k.Private) {
		t.Fatalf("loaded key %s differs from generated key %s", again.ID, k.ID)
	}

	// A signature made with the generated key verifies with the loaded public key.
	msg := []byte("hello")
	if !ed25519.Verify(again.Public(), msg, ed25519.Sign(k.Private, msg)) {
		t.Fatal("signature does not verify with the reloaded key")
	}
	pub, err := base64.RawStdEncoding.DecodeString(k.PublicBase64())
	if err != nil || !ed25519.PublicKey(pub).Equal(k.Public()) || strings.HasSuffix(k.PublicBase64(), "=") {
		t.Fatalf("PublicBase64 = %q is not the unpadded public key", k.PublicBase64())
	}

	// Two servers get different keys.
	other, _, err := signing.LoadOrGenerate(filepath.Join(t.TempDir(), "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	if other.Private.Equal(k.Private) {
		t.Fatal("two generated keys are equal")
	}
	if !keyIDPattern.MatchString(other.ID) {
		t.Fatalf("key ID %q does not match %s", other.ID, keyIDPattern)
	}
}

func TestLoadOrGenerateRefusesReadableKey(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		path := filepath.Join(t.TempDir(), "signing.key")
		if _, _, err := signing.LoadOrGenerate(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, _, err := signing.LoadOrGenerate(path); err == nil {
			t.Errorf("key file with mode %o was accepted", mode)
		}
	}
	// A 0400 file is fine.
	path := filepath.Join(t.TempDir(), "signing.key")
	if _, _, err := signing.LoadOrGenerate(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, _, err := signing.LoadOrGenerate(path); err != nil {
		t.Errorf("key file with mode 400: %v", err)
	}
}

func TestLoadOrGenerateUnreadableDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if _, _, err := signing.LoadOrGenerate(filepath.Join(dir, "signing.key")); err == nil {
		t.Fatal("generating into a read-only directory succeeded")
	}
}

// The key of the spec's signing test vectors (appendices, "Signing JSON" test vectors).
const specSeed = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"

func TestParseSpecVector(t *testing.T) {
	for _, file := range []string{
		"ed25519 1 " + specSeed,
		"ed25519 1 " + specSeed + "=\n",                     // padded base64 is accepted too
		"# comment\n\n  ed25519   1   " + specSeed + "  \n", // comments, blank lines, spacing
	} {
		k, err := signing.Parse(file)
		if err != nil {
			t.Fatalf("Parse(%q): %v", file, err)
		}
		if k.ID != "ed25519:1" {
			t.Fatalf("ID = %q", k.ID)
		}
		// Signing the canonical JSON of {} gives the spec's signature.
		const want = "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
		if got := base64.RawStdEncoding.EncodeToString(ed25519.Sign(k.Private, []byte("{}"))); got != want {
			t.Fatalf("signature of {} = %s, want %s", got, want)
		}
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	for name, file := range map[string]string{
		"empty":            "",
		"only comments":    "# nothing here\n\n",
		"two fields":       "ed25519 1",
		"four fields":      "ed25519 1 " + specSeed + " extra",
		"other algorithm":  "curve25519 1 " + specSeed,
		"bad base64":       "ed25519 1 !!!notbase64!!!",
		"short seed":       "ed25519 1 " + base64.RawStdEncoding.EncodeToString(make([]byte, 31)),
		"long seed":        "ed25519 1 " + base64.RawStdEncoding.EncodeToString(make([]byte, 33)),
		"bad key version":  "ed25519 a-b " + specSeed,
		"key id with alg":  "ed25519 ed25519:1 " + specSeed,
		"junk line first":  "garbage\ned25519 1 " + specSeed,
		"url-safe base64":  "ed25519 1 " + base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("\xff", 32))),
		"seed is a number": "ed25519 1 12345",
	} {
		if k, err := signing.Parse(file); err == nil {
			t.Errorf("%s: Parse(%q) accepted key %s", name, file, k.ID)
		}
	}
}

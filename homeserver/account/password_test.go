package account_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/hearthmx/homeserver/homeserver/account"
)

func TestHashPasswordRoundTrip(t *testing.T) {
	h1, err := account.HashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h1, "$argon2id$v=19$") {
		t.Fatalf("hash %q is not an argon2id PHC string", h1)
	}
	if strings.Contains(h1, "correct horse") {
		t.Fatal("hash contains the password")
	}
	ok, err := account.VerifyPassword(h1, "correct horse battery staple")
	if err != nil || !ok {
		t.Fatalf("VerifyPassword(right) = %v, %v", ok, err)
	}
	for _, wrong := range []string{"correct horse battery stapl", "Correct horse battery staple", ""} {
		if ok, err := account.VerifyPassword(h1, wrong); err != nil || ok {
			t.Fatalf("VerifyPassword(%q) = %v, %v; want false, nil", wrong, ok, err)
		}
	}

	h2, err := account.HashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if h1 == h2 {
		t.Fatal("two hashes of the same password are equal (no random salt)")
	}
	if ok, err := account.VerifyPassword(h2, "correct horse battery staple"); err != nil || !ok {
		t.Fatalf("second hash does not verify: %v, %v", ok, err)
	}
}

// argonHash builds a PHC argon2id string with the given parameters, as an older or newer server
// version might have stored.
func argonHash(password string, m, tm uint32, p uint8) string {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte(password), salt, tm, m, p, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, tm, p, b64.EncodeToString(salt), b64.EncodeToString(key))
}

func TestVerifyPasswordUsesEncodedParameters(t *testing.T) {
	h := argonHash("hunter22", 64, 1, 1)
	if ok, err := account.VerifyPassword(h, "hunter22"); err != nil || !ok {
		t.Fatalf("hash with other parameters: %v, %v", ok, err)
	}
	if ok, err := account.VerifyPassword(h, "hunter23"); err != nil || ok {
		t.Fatalf("wrong password against hash with other parameters: %v, %v", ok, err)
	}
}

func TestVerifyPasswordBcrypt(t *testing.T) {
	b, err := bcrypt.GenerateFromPassword([]byte("imported password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	hash := string(b)
	// Synapse writes $2b$; PHP-era hashes have $2y$.
	for _, h := range []string{hash, "$2b$" + hash[4:], "$2y$" + hash[4:]} {
		if ok, err := account.VerifyPassword(h, "imported password"); err != nil || !ok {
			t.Fatalf("bcrypt hash %q: %v, %v", h[:4], ok, err)
		}
		if ok, err := account.VerifyPassword(h, "imported passwort"); err != nil || ok {
			t.Fatalf("wrong password against bcrypt hash %q: %v, %v", h[:4], ok, err)
		}
	}
}

func TestVerifyPasswordGarbage(t *testing.T) {
	good := argonHash("pw", 64, 1, 1)
	parts := strings.Split(good, "$")
	for _, h := range []string{
		"plaintext-password",
		"$argon2id$",
		"$argon2id$garbage",
		"$argon2i$v=19$m=64,t=1,p=1$" + parts[4] + "$" + parts[5],    // argon2i, not argon2id
		"$argon2id$v=16$m=64,t=1,p=1$" + parts[4] + "$" + parts[5],   // other version
		"$argon2id$v=19$m=x,t=1,p=1$" + parts[4] + "$" + parts[5],    // bad parameters
		"$argon2id$v=19$m=64,t=0,p=1$" + parts[4] + "$" + parts[5],   // zero passes (argon2 panics)
		"$argon2id$v=19$m=64,t=1,p=0$" + parts[4] + "$" + parts[5],   // zero lanes (argon2 panics)
		"$argon2id$v=19$m=64,t=1,p=300$" + parts[4] + "$" + parts[5], // lanes out of range
		"$argon2id$v=19$m=64,t=1,p=1$!!!$" + parts[5],                // bad salt
		"$argon2id$v=19$m=64,t=1,p=1$" + parts[4] + "$!!!",           // bad key
		"$argon2id$v=19$m=64,t=1,p=1$" + parts[4] + "$",              // empty key
		"$argon2id$v=19$m=64,t=1,p=1$" + parts[4] + "$" + parts[5] + "$extra",
		"$2a$10$tooshort",
		"$2b$",
		"$pbkdf2-sha256$29000$abc$def",
	} {
		ok, err := account.VerifyPassword(h, "pw")
		if err == nil || ok {
			t.Errorf("VerifyPassword(%q) = %v, %v; want false and an error", h, ok, err)
		}
	}
	// No hash (an account without a password) is a plain mismatch.
	if ok, err := account.VerifyPassword("", ""); ok || err != nil {
		t.Errorf("VerifyPassword of an empty hash = %v, %v; want false, nil", ok, err)
	}
}

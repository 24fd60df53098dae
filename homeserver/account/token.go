package account

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Token prefixes make leaked tokens recognisable (secret scanners) and say what a token is for.
const (
	accessTokenPrefix  = "mat_"
	refreshTokenPrefix = "mrt_"
	openIDTokenPrefix  = "moi_"
)

// newToken returns prefix + 32 random bytes in URL-safe base64.
func newToken(prefix string) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("account: crypto/rand failed: " + err.Error())
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// HashToken is how tokens are stored: hex SHA-256. Tokens have 256 bits of entropy, so a fast hash
// is enough; the database never holds a usable token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newDeviceID returns a device ID of 10 upper-case letters, as other servers generate.
func newDeviceID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("account: crypto/rand failed: " + err.Error())
	}
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(letters[int(c)%len(letters)])
	}
	return sb.String()
}

// NewSessionID returns a random ID for UIA sessions and nonces.
func NewSessionID() string {
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("account: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

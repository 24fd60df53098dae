// Package signing holds the server's ed25519 signing key: generated on first start, kept on disk
// with mode 0600 in the format Synapse and Dendrite also read ("ed25519 <key id> <base64 seed>").
package signing

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Key is the server's signing key.
type Key struct {
	ID      string // e.g. ed25519:a_Bc12
	Private ed25519.PrivateKey
}

// Public returns the public half.
func (k Key) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// PublicBase64 is the public key in unpadded base64, as the federation key API publishes it.
func (k Key) PublicBase64() string { return base64.RawStdEncoding.EncodeToString(k.Public()) }

// LoadOrGenerate reads the key file, creating it with a new key (mode 0600) if it does not exist.
// The second result says whether a key was generated.
func LoadOrGenerate(path string) (Key, bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := generate()
		if err != nil {
			return Key{}, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return Key{}, false, err
		}
		line := fmt.Sprintf("ed25519 %s %s\n", strings.TrimPrefix(k.ID, "ed25519:"),
			base64.RawStdEncoding.EncodeToString(k.Private.Seed()))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return Key{}, false, err
		}
		if _, err := f.WriteString(line); err != nil {
			f.Close()
			return Key{}, false, err
		}
		return k, true, f.Close()
	}
	if err != nil {
		return Key{}, false, err
	}
	if info, err := os.Stat(path); err == nil && info.Mode().Perm()&0o077 != 0 {
		return Key{}, false, fmt.Errorf("signing key %s is readable by others (mode %o); chmod 600 it", path, info.Mode().Perm())
	}
	k, err := Parse(string(data))
	return k, false, err
}

// Parse reads the first key line of a key file.
func Parse(s string) (Key, error) {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 3 || f[0] != "ed25519" {
			return Key{}, errors.New("signing key: expected a line 'ed25519 <key id> <base64 seed>'")
		}
		if !validKeyVersion(f[1]) {
			return Key{}, fmt.Errorf("signing key: key version %q must match [a-zA-Z0-9_]+", f[1])
		}
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
		if err != nil || len(seed) != ed25519.SeedSize {
			return Key{}, errors.New("signing key: the seed must be 32 bytes of base64")
		}
		return Key{ID: "ed25519:" + f[1], Private: ed25519.NewKeyFromSeed(seed)}, nil
	}
	return Key{}, errors.New("signing key: file has no key")
}

// validKeyVersion checks the version part of a key ID: the spec allows [a-zA-Z0-9_].
func validKeyVersion(v string) bool {
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return v != ""
}

func generate() (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, err
	}
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Key{}, err
	}
	id := []byte("a_")
	for _, c := range b {
		id = append(id, alnum[int(c)%len(alnum)])
	}
	return Key{ID: "ed25519:" + string(id), Private: priv}, nil
}

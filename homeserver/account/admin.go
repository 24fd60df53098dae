package account

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// This file holds what server admins (and admin tools) do through the Synapse-compatible admin API:
// shared-secret registration and the management of registration tokens. Errors and limits follow
// Synapse's synapse/rest/admin/users.py (UserRegisterServlet) and registration_tokens.py, since
// admin tools and test suites are written against them.

// NonceLifetime is how long a shared-secret registration nonce can be used (Synapse: 60 s).
const NonceLifetime = 60 * time.Second

// UserTypes are the user_type values shared-secret registration accepts (Synapse's
// UserTypes.ALL_USER_TYPES). They are covered by the MAC but not stored: this server has no user
// types yet.
var UserTypes = []string{"support", "bot"}

// ErrSharedSecretDisabled is Synapse's answer when registration.shared_secret is empty.
var ErrSharedSecretDisabled = spec.ErrUnknown.WithStatus(http.StatusBadRequest).With("Shared secret registration is not enabled")

// badRequest is Synapse's SynapseError(400, msg): M_UNKNOWN with status 400.
func badRequest(msg string) *spec.Error {
	return spec.ErrUnknown.WithStatus(http.StatusBadRequest).With(msg)
}

// NewRegistrationNonce issues a one-time nonce for shared-secret registration, valid for
// NonceLifetime. secret is registration.shared_secret; without one the API is off.
func (s *Service) NewRegistrationNonce(ctx context.Context, secret string) (string, error) {
	if secret == "" {
		return "", ErrSharedSecretDisabled
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("account: nonce: %w", err)
	}
	nonce := hex.EncodeToString(b[:])
	expires := s.Now().Add(NonceLifetime).UnixMilli()
	if err := s.store.Write(ctx, func(c storage.Conn) error { return c.InsertRegistrationNonce(ctx, nonce, expires) }); err != nil {
		return "", err
	}
	return nonce, nil
}

// SharedSecretRequest is the body of POST /_synapse/admin/v1/register. Pointers are fields that may
// be absent.
type SharedSecretRequest struct {
	Nonce       *string
	Username    *string
	Password    *string
	DisplayName *string
	Admin       bool
	UserType    string
	MAC         *string
	// The login part, as in /register.
	DeviceID     string
	DeviceName   *string
	InhibitLogin bool
	Refresh      bool
	IP           string
}

// SharedSecretMAC is the MAC a client of shared-secret registration sends: hex HMAC-SHA1 keyed with
// the shared secret over nonce, username, password and "admin"/"notadmin" (and user_type when
// given), separated by NUL bytes.
func SharedSecretMAC(secret, nonce, username, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	parts := []string{nonce, username, password, role}
	if userType != "" {
		parts = append(parts, userType)
	}
	m.Write([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(m.Sum(nil))
}

// RegisterWithSharedSecret creates an account for an admin tool that holds the shared secret. It
// works whether or not open registration is on. The checks run in Synapse's order: the nonce is
// used up first, so a request that fails any later check cannot be retried with the same nonce.
func (s *Service) RegisterWithSharedSecret(ctx context.Context, secret string, r SharedSecretRequest) (Tokens, error) {
	if secret == "" {
		return Tokens{}, ErrSharedSecretDisabled
	}
	if r.Nonce == nil {
		return Tokens{}, spec.ErrBadJSON.With("nonce must be specified")
	}
	var known bool
	err := s.store.Write(ctx, func(c storage.Conn) error {
		var err error
		known, err = c.TakeRegistrationNonce(ctx, *r.Nonce, s.nowMS())
		return err
	})
	if err != nil {
		return Tokens{}, err
	}
	if !known {
		return Tokens{}, badRequest("unrecognised nonce")
	}
	if r.Username == nil {
		return Tokens{}, spec.ErrBadJSON.With("username must be specified")
	}
	if len(*r.Username) > 512 || strings.ContainsRune(*r.Username, 0) {
		return Tokens{}, badRequest("Invalid username")
	}
	if r.Password == nil {
		return Tokens{}, spec.ErrBadJSON.With("password must be specified")
	}
	// Synapse would store the hash of an empty password; an account here without password hash is
	// one that cannot log in with a password at all, so an empty password is refused instead.
	if *r.Password == "" || len(*r.Password) > 512 || strings.ContainsRune(*r.Password, 0) {
		return Tokens{}, badRequest("Invalid password")
	}
	if r.UserType != "" && !slices.Contains(UserTypes, r.UserType) {
		return Tokens{}, badRequest("Invalid user type")
	}
	if r.MAC == nil {
		return Tokens{}, spec.ErrBadJSON.With("mac must be specified")
	}
	// Checked before the account exists, so that a bad name cannot leave a half-made user behind.
	if r.DisplayName != nil && utf8.RuneCountInString(*r.DisplayName) > MaxDisplayNameRunes {
		return Tokens{}, spec.ErrInvalidParam.Withf("displayname may not be longer than %d characters", MaxDisplayNameRunes)
	}
	want := SharedSecretMAC(secret, *r.Nonce, *r.Username, *r.Password, r.Admin, r.UserType)
	if !hmac.Equal([]byte(want), []byte(*r.MAC)) {
		return Tokens{}, spec.ErrForbidden.With("HMAC incorrect")
	}
	localpart := strings.ToLower(*r.Username)
	if localpart == "" {
		return Tokens{}, spec.ErrInvalidUsername.With("User ID cannot be empty")
	}
	toks, err := s.Register(ctx, RegisterParams{Localpart: localpart, Password: *r.Password, Admin: r.Admin,
		DeviceID: r.DeviceID, DeviceName: r.DeviceName, InhibitLogin: r.InhibitLogin, Refresh: r.Refresh, IP: r.IP})
	if err != nil {
		return Tokens{}, err
	}
	if r.DisplayName != nil && *r.DisplayName != "" && *r.DisplayName != localpart {
		name, _ := json.Marshal(*r.DisplayName)
		if err := s.store.Write(ctx, func(c storage.Conn) error {
			return c.SetProfileField(ctx, localpart, "displayname", name)
		}); err != nil {
			return Tokens{}, fmt.Errorf("account: set display name of new user %s: %w", localpart, err)
		}
	}
	return toks, nil
}

// Registration tokens (admin API).

// RegistrationTokenChars are the characters a registration token may contain (the spec's
// [A-Za-z0-9._~-]).
const RegistrationTokenChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"

// MaxRegistrationTokenLength is the longest token the admin API creates or accepts.
const MaxRegistrationTokenLength = 64

// RegistrationTokens lists registration tokens, oldest first. valid nil lists all; true only those
// that can still be used; false only those expired or used up.
func (s *Service) RegistrationTokens(ctx context.Context, valid *bool) ([]storage.RegistrationToken, error) {
	all, err := s.store.Read().RegistrationTokens(ctx)
	if err != nil {
		return nil, err
	}
	out := []storage.RegistrationToken{}
	now := s.nowMS()
	for _, t := range all {
		if valid == nil || t.Valid(now) == *valid {
			out = append(out, t)
		}
	}
	return out, nil
}

// RegistrationToken reads one registration token; M_NOT_FOUND if there is none.
func (s *Service) RegistrationToken(ctx context.Context, token string) (storage.RegistrationToken, error) {
	t, err := s.store.Read().RegistrationToken(ctx, token)
	if errors.Is(err, storage.ErrNotFound) {
		return t, tokenNotFound(token)
	}
	return t, err
}

func tokenNotFound(token string) error {
	return spec.ErrNotFound.Withf("No such registration token: %s", token)
}

// NewRegistrationToken describes a token to create. Token nil generates one of Length characters
// (1 to 64; Synapse's default is 16).
type NewRegistrationToken struct {
	Token       *string
	Length      int64
	UsesAllowed *int64 // nil: unlimited
	ExpiryTS    *int64 // nil: never expires
}

// CreateRegistrationToken creates a registration token. Invalid values get M_INVALID_PARAM, an
// existing token too (as in Synapse).
func (s *Service) CreateRegistrationToken(ctx context.Context, n NewRegistrationToken) (storage.RegistrationToken, error) {
	generate := n.Token == nil
	var t storage.RegistrationToken
	if generate {
		if n.Length < 1 || n.Length > MaxRegistrationTokenLength {
			return storage.RegistrationToken{}, spec.ErrInvalidParam.Withf("length must be greater than zero and not greater than %d", MaxRegistrationTokenLength)
		}
	} else if err := checkRegistrationToken(*n.Token); err != nil {
		return storage.RegistrationToken{}, err
	} else {
		t.Token = *n.Token
	}
	if err := s.checkTokenLimits(n.UsesAllowed, n.ExpiryTS); err != nil {
		return storage.RegistrationToken{}, err
	}
	t.UsesAllowed, t.ExpiryTS, t.CreatedTS = n.UsesAllowed, n.ExpiryTS, s.nowMS()
	// A generated token can collide with an existing one when it is short; try a few times.
	for attempt := 0; ; attempt++ {
		if generate {
			t.Token = randomToken(int(n.Length))
		}
		err := s.store.Write(ctx, func(c storage.Conn) error { return c.CreateRegistrationToken(ctx, t) })
		switch {
		case err == nil:
			s.log.InfoContext(ctx, "registration token created", "uses_allowed", optional(t.UsesAllowed), "expiry_ts", optional(t.ExpiryTS))
			return t, nil
		case !errors.Is(err, storage.ErrConflict):
			return storage.RegistrationToken{}, err
		case !generate:
			return storage.RegistrationToken{}, spec.ErrInvalidParam.Withf("Token already exists: %s", t.Token)
		case attempt == 2:
			return storage.RegistrationToken{}, spec.ErrUnknown.With("Unable to generate a unique registration token. Try again with a greater length")
		}
	}
}

// RegistrationTokenUpdate changes some attributes of a token. A field is changed only when its Set
// flag is true; a nil value clears it (unlimited uses, no expiry).
type RegistrationTokenUpdate struct {
	SetUsesAllowed bool
	UsesAllowed    *int64
	SetExpiryTS    bool
	ExpiryTS       *int64
}

// UpdateRegistrationToken applies u to a token and returns the token as it is now.
func (s *Service) UpdateRegistrationToken(ctx context.Context, token string, u RegistrationTokenUpdate) (storage.RegistrationToken, error) {
	var uses, expiry *int64
	if u.SetUsesAllowed {
		uses = u.UsesAllowed
	}
	if u.SetExpiryTS {
		expiry = u.ExpiryTS
	}
	if err := s.checkTokenLimits(uses, expiry); err != nil {
		return storage.RegistrationToken{}, err
	}
	if !u.SetUsesAllowed && !u.SetExpiryTS {
		return s.RegistrationToken(ctx, token)
	}
	var t storage.RegistrationToken
	err := s.store.Write(ctx, func(c storage.Conn) error {
		var err error
		if t, err = c.RegistrationToken(ctx, token); err != nil {
			return err
		}
		if u.SetUsesAllowed {
			t.UsesAllowed = u.UsesAllowed
		}
		if u.SetExpiryTS {
			t.ExpiryTS = u.ExpiryTS
		}
		return c.UpdateRegistrationToken(ctx, token, t.UsesAllowed, t.ExpiryTS)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return t, tokenNotFound(token)
	}
	return t, err
}

// DeleteRegistrationToken removes a token; M_NOT_FOUND if there is none.
func (s *Service) DeleteRegistrationToken(ctx context.Context, token string) error {
	err := s.store.Write(ctx, func(c storage.Conn) error { return c.DeleteRegistrationToken(ctx, token) })
	if errors.Is(err, storage.ErrNotFound) {
		return tokenNotFound(token)
	}
	return err
}

func checkRegistrationToken(token string) error {
	if token == "" || len(token) > MaxRegistrationTokenLength {
		return spec.ErrInvalidParam.Withf("token must not be empty and must not be longer than %d characters", MaxRegistrationTokenLength)
	}
	for i := 0; i < len(token); i++ {
		if strings.IndexByte(RegistrationTokenChars, token[i]) < 0 {
			return spec.ErrInvalidParam.With("token must consist only of characters matched by the regex [A-Za-z0-9._~-]")
		}
	}
	return nil
}

func (s *Service) checkTokenLimits(usesAllowed, expiryTS *int64) error {
	if usesAllowed != nil && *usesAllowed < 0 {
		return spec.ErrInvalidParam.With("uses_allowed must be a non-negative integer or null")
	}
	if expiryTS != nil && *expiryTS < s.nowMS() {
		return spec.ErrInvalidParam.With("expiry_time must not be in the past")
	}
	return nil
}

// randomToken returns n characters drawn uniformly from RegistrationTokenChars.
func randomToken(n int) string {
	max := big.NewInt(int64(len(RegistrationTokenChars)))
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic("account: crypto/rand failed: " + err.Error())
		}
		b[i] = RegistrationTokenChars[k.Int64()]
	}
	return string(b)
}

// optional renders an optional number for logs ("unlimited" when unset).
func optional(n *int64) any {
	if n == nil {
		return "unlimited"
	}
	return *n
}

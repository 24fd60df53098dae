// Package account owns local users: registration, passwords, login, access and refresh tokens,
// devices, user-interactive authentication, deactivation and profiles.
package account

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	gosync "sync"
	"time"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Options configure the service.
type Options struct {
	ServerName        string
	RefreshLifetime   time.Duration // lifetime of access tokens issued with a refresh token
	PasswordMinLength int
	UIALifetime       time.Duration
	OpenIDLifetime    time.Duration
}

// Service is the account service.
type Service struct {
	store *storage.Store
	bus   *bus.Bus
	opts  Options
	log   *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time

	// filters caches stored filters, which never change once stored (every /sync names one).
	filtersMu gosync.Mutex
	filters   map[filterKey]json.RawMessage

	tokens *tokenCache
}

type filterKey struct {
	localpart string
	id        int64
}

// New builds the service.
func New(store *storage.Store, b *bus.Bus, opts Options, log *slog.Logger) *Service {
	s := &Service{store: store, bus: b, opts: opts, log: log, Now: time.Now}
	s.tokens = newTokenCache(func() time.Time { return s.Now() })
	if err := s.listenRevocations(); err != nil {
		// Without the subscription another node's revocation would reach this one only through the
		// cache TTL: refuse to cache at all rather than serve revoked tokens.
		log.Error("subscribe to token revocations; access-token cache disabled", "err", err)
		s.tokens = nil
	}
	return s
}

func (s *Service) nowMS() int64 { return s.Now().UnixMilli() }

// ServerName is the server's name.
func (s *Service) ServerName() string { return s.opts.ServerName }

// UserID makes a local user ID.
func (s *Service) UserID(localpart string) spec.UserID {
	return spec.NewUserID(localpart, s.opts.ServerName)
}

// LocalpartOf returns the localpart of a user ID of this server, or M_INVALID_PARAM / M_FORBIDDEN.
func (s *Service) LocalpartOf(userID string) (string, error) {
	u, err := spec.ParseUserID(userID)
	if err != nil {
		return "", spec.ErrInvalidParam.Withf("Invalid user ID: %v", err)
	}
	if u.ServerName() != s.opts.ServerName {
		return "", spec.ErrForbidden.With("User is not local to this server")
	}
	return u.Localpart(), nil
}

// Tokens is what login, registration and refresh hand to a client.
type Tokens struct {
	UserID       spec.UserID
	DeviceID     string
	AccessToken  string
	RefreshToken string // "" unless the client asked for one
	ExpiresInMS  int64  // 0 when the access token does not expire
}

// RegisterParams describe a new account.
type RegisterParams struct {
	Localpart         string
	Password          string // "" for an account without password
	Admin             bool
	Guest             bool
	DeviceID          string // "" to generate one
	DeviceName        *string
	InhibitLogin      bool
	Refresh           bool
	RegistrationToken string // consumed in the same transaction
	// UIASession is the user-interactive auth session that authorised the registration; it is
	// deleted in the same transaction, so it cannot register a second account and its expiry does
	// not hand the registration token use back.
	UIASession string
	IP         string
}

// CheckUsername validates a requested localpart for a new account and reports whether it is free.
func (s *Service) CheckUsername(ctx context.Context, localpart string) error {
	if err := s.validLocalpart(localpart); err != nil {
		return err
	}
	taken, err := s.store.Read().AccountExists(ctx, localpart)
	if err != nil {
		return err
	}
	if taken {
		return spec.ErrUserInUse
	}
	return nil
}

func (s *Service) validLocalpart(localpart string) error {
	if !spec.ValidLocalpart(localpart) {
		return spec.ErrInvalidUsername.With("User ID may only contain a-z, 0-9, and . _ = - / +")
	}
	if len(s.UserID(localpart)) > 255 {
		return spec.ErrInvalidUsername.With("User ID may not be longer than 255 characters")
	}
	if strings.HasPrefix(localpart, "_") {
		return spec.ErrExclusive.With("User IDs starting with _ are reserved")
	}
	return nil
}

// CheckPasswordStrength applies the configured password policy.
func (s *Service) CheckPasswordStrength(password string) error {
	if len(password) < s.opts.PasswordMinLength {
		return spec.ErrWeakPassword.Withf("Password must be at least %d characters", s.opts.PasswordMinLength)
	}
	if len(password) > 512 {
		return spec.ErrWeakPassword.With("Password must be at most 512 characters")
	}
	return nil
}

// Register creates an account, and logs it in unless InhibitLogin. Everything happens in one
// transaction: the account, its default display name, the registration token use, the device and
// tokens.
func (s *Service) Register(ctx context.Context, p RegisterParams) (Tokens, error) {
	if p.Localpart == "" {
		p.Localpart = strings.ToLower(newDeviceID())
	}
	if err := s.validLocalpart(p.Localpart); err != nil {
		return Tokens{}, err
	}
	var hash string
	if p.Password != "" {
		var err error
		if hash, err = HashPassword(p.Password); err != nil {
			return Tokens{}, err
		}
	}
	now := s.nowMS()
	var toks Tokens
	err := s.store.Write(ctx, func(c storage.Conn) error {
		err := c.CreateAccount(ctx, storage.Account{Localpart: p.Localpart, PasswordHash: hash, Admin: p.Admin, Guest: p.Guest, CreatedTS: now})
		if errors.Is(err, storage.ErrConflict) {
			return spec.ErrUserInUse
		}
		if err != nil {
			return err
		}
		name, _ := json.Marshal(p.Localpart)
		if err := c.SetProfileField(ctx, p.Localpart, "displayname", name); err != nil {
			return err
		}
		if p.RegistrationToken != "" {
			if err := c.AddRegistrationTokenUse(ctx, p.RegistrationToken, -1, 1); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		if p.UIASession != "" {
			if err := c.DeleteUIASession(ctx, p.UIASession); err != nil {
				return err
			}
		}
		if p.InhibitLogin {
			toks = Tokens{UserID: s.UserID(p.Localpart)}
			return nil
		}
		toks, err = s.login(ctx, c, p.Localpart, p.DeviceID, p.DeviceName, p.Refresh, p.IP)
		return err
	})
	if err != nil {
		return Tokens{}, err
	}
	s.log.InfoContext(ctx, "account registered", "user_id", s.UserID(p.Localpart), "admin", p.Admin, "guest", p.Guest)
	if !p.InhibitLogin {
		s.announceDevice(toks.UserID, toks.DeviceID, false)
	}
	return toks, nil
}

// LoginParams describe a password login.
type LoginParams struct {
	User       string // localpart or full user ID
	Password   string
	DeviceID   string
	DeviceName *string
	Refresh    bool
	IP         string
}

// a valid argon2id hash of a random password, verified against when the user does not exist so that
// timing does not tell which user IDs exist.
var dummyHash, _ = HashPassword(newToken(""))

// Login checks a password and creates (or reuses) a device with fresh tokens.
func (s *Service) Login(ctx context.Context, p LoginParams) (Tokens, error) {
	localpart, err := s.resolveLocalpart(ctx, p.User)
	if err != nil {
		return Tokens{}, err
	}
	if err := s.CheckPassword(ctx, localpart, p.Password); err != nil {
		return Tokens{}, err
	}
	var toks Tokens
	err = s.store.Write(ctx, func(c storage.Conn) error {
		toks, err = s.login(ctx, c, localpart, p.DeviceID, p.DeviceName, p.Refresh, p.IP)
		return err
	})
	if err != nil {
		return Tokens{}, err
	}
	s.revokeTokens(localpart) // logging in again on a device replaces its old tokens
	s.announceDevice(toks.UserID, toks.DeviceID, false)
	return toks, nil
}

// resolveLocalpart turns what a user typed (localpart or user ID, any case) into the localpart of an
// existing local account; unknown users get the same error as a wrong password.
func (s *Service) resolveLocalpart(ctx context.Context, user string) (string, error) {
	localpart := user
	if strings.HasPrefix(user, "@") {
		u, err := spec.ParseUserID(user)
		if err != nil || u.ServerName() != s.opts.ServerName {
			return "", spec.ErrForbidden.With("Invalid username or password")
		}
		localpart = u.Localpart()
	}
	for _, candidate := range []string{localpart, strings.ToLower(localpart)} {
		ok, err := s.store.Read().AccountExists(ctx, candidate)
		if err != nil {
			return "", err
		}
		if ok {
			return candidate, nil
		}
	}
	_, _ = VerifyPassword(dummyHash, user)
	return "", spec.ErrForbidden.With("Invalid username or password")
}

// CheckPassword verifies a user's password: M_FORBIDDEN if wrong, M_USER_DEACTIVATED if the account
// is deactivated.
func (s *Service) CheckPassword(ctx context.Context, localpart, password string) error {
	a, err := s.store.Read().Account(ctx, localpart)
	if errors.Is(err, storage.ErrNotFound) {
		_, _ = VerifyPassword(dummyHash, password)
		return spec.ErrForbidden.With("Invalid username or password")
	}
	if err != nil {
		return err
	}
	if a.Deactivated {
		return spec.ErrUserDeactivated
	}
	ok, err := VerifyPassword(a.PasswordHash, password)
	if err != nil {
		return fmt.Errorf("account: verify password of %s: %w", localpart, err)
	}
	if !ok {
		return spec.ErrForbidden.With("Invalid username or password")
	}
	return nil
}

// login creates or reuses a device and issues its tokens inside the caller's transaction. Reusing a
// device_id invalidates the tokens previously assigned to that device.
func (s *Service) login(ctx context.Context, c storage.Conn, localpart, deviceID string, name *string, refresh bool, ip string) (Tokens, error) {
	if deviceID == "" {
		deviceID = newDeviceID()
	} else if err := c.DeleteDeviceTokensExcept(ctx, localpart, deviceID, "", ""); err != nil {
		return Tokens{}, err
	}
	now := s.nowMS()
	if err := c.UpsertDevice(ctx, storage.Device{Localpart: localpart, DeviceID: deviceID, DisplayName: name, CreatedTS: now, LastSeenIP: ip}); err != nil {
		return Tokens{}, err
	}
	if _, err := c.RecordDeviceListChange(ctx, s.UserID(localpart).String()); err != nil { // a new device (e2ee device lists)
		return Tokens{}, err
	}
	return s.issue(ctx, c, localpart, deviceID, refresh, "")
}

// issue stores a new access token (and refresh token) for a device.
func (s *Service) issue(ctx context.Context, c storage.Conn, localpart, deviceID string, refresh bool, prevRefresh string) (Tokens, error) {
	now := s.nowMS()
	t := Tokens{UserID: s.UserID(localpart), DeviceID: deviceID, AccessToken: newToken(accessTokenPrefix)}
	at := storage.AccessToken{Hash: HashToken(t.AccessToken), Localpart: localpart, DeviceID: deviceID, CreatedTS: now}
	if refresh {
		t.RefreshToken = newToken(refreshTokenPrefix)
		t.ExpiresInMS = s.opts.RefreshLifetime.Milliseconds()
		at.RefreshHash = HashToken(t.RefreshToken)
		at.ExpiresTS = now + t.ExpiresInMS
		if err := c.InsertRefreshToken(ctx, storage.RefreshToken{Hash: at.RefreshHash, Localpart: localpart, DeviceID: deviceID,
			PrevHash: prevRefresh, CreatedTS: now}); err != nil {
			return Tokens{}, err
		}
	}
	if err := c.InsertAccessToken(ctx, at); err != nil {
		return Tokens{}, err
	}
	return t, nil
}

// announceDevice tells other components and nodes that a device appeared, changed or went away.
func (s *Service) announceDevice(user spec.UserID, deviceID string, deleted bool) {
	if s.bus == nil {
		return
	}
	msg, _ := json.Marshal(map[string]any{"user_id": user, "device_id": deviceID, "deleted": deleted})
	if err := s.bus.Publish(bus.SubjectDeviceChange, msg); err != nil {
		s.log.Warn("publish device change", "err", err)
	}
}

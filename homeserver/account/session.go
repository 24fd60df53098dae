package account

import (
	"context"
	"errors"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Caller is the user and device behind an access token.
type Caller struct {
	UserID    spec.UserID
	Localpart string
	DeviceID  string
	Admin     bool
	Guest     bool
	tokenHash string
}

// Authenticate resolves an access token. Unknown or revoked tokens get M_UNKNOWN_TOKEN; expired
// tokens get it with soft_logout true so the client refreshes instead of discarding its session.
func (s *Service) Authenticate(ctx context.Context, token string) (Caller, error) {
	hash := HashToken(token)
	t, cached, epoch := s.tokens.get(hash)
	if !cached {
		var err error
		t, err = s.store.Read().AccessToken(ctx, hash)
		if errors.Is(err, storage.ErrNotFound) {
			return Caller{}, spec.UnknownToken("Unknown access token", false)
		}
		if err != nil {
			return Caller{}, err
		}
	}
	if t.Deactivated {
		return Caller{}, spec.UnknownToken("This account has been deactivated", false)
	}
	if t.ExpiresTS != 0 && t.ExpiresTS <= s.nowMS() {
		return Caller{}, spec.UnknownToken("Access token has expired", true)
	}
	if !t.Used && t.RefreshHash != "" {
		if err := s.store.Write(ctx, func(c storage.Conn) error { return c.MarkAccessTokenUsed(ctx, t) }); err != nil {
			return Caller{}, err
		}
		s.revokeTokens(t.Localpart) // the pair this one replaced is gone
		return s.caller(t, hash), nil
	}
	if !cached {
		s.tokens.put(t, epoch)
	}
	return s.caller(t, hash), nil
}

func (s *Service) caller(t storage.AccessToken, hash string) Caller {
	return Caller{UserID: s.UserID(t.Localpart), Localpart: t.Localpart, DeviceID: t.DeviceID, Admin: t.Admin, Guest: t.Guest, tokenHash: hash}
}

// Refresh exchanges a refresh token for a new access token and refresh token on the same device.
// The old refresh token stays valid until the new pair is used, so a client that lost the response
// can repeat the call.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (Tokens, error) {
	hash := HashToken(refreshToken)
	var toks Tokens
	var localpart string
	err := s.store.Write(ctx, func(c storage.Conn) error {
		rt, err := c.RefreshToken(ctx, hash)
		if errors.Is(err, storage.ErrNotFound) {
			return spec.UnknownToken("Unknown refresh token", false)
		}
		if err != nil {
			return err
		}
		if err := c.RevokeReplacedRefreshToken(ctx, hash); err != nil {
			return err
		}
		localpart = rt.Localpart
		toks, err = s.issue(ctx, c, rt.Localpart, rt.DeviceID, true, hash)
		return err
	})
	if err == nil {
		s.revokeTokens(localpart)
	}
	return toks, err
}

// Logout deletes the caller's device with its tokens.
func (s *Service) Logout(ctx context.Context, caller Caller) error {
	if err := s.store.WriteRetry(ctx, func(c storage.Conn) error {
		return c.DeleteDevice(ctx, caller.Localpart, caller.DeviceID)
	}); err != nil {
		return err
	}
	s.revokeTokens(caller.Localpart)
	s.announceDevice(caller.UserID, caller.DeviceID, true)
	return nil
}

// LogoutAll deletes every device of the caller's user.
func (s *Service) LogoutAll(ctx context.Context, caller Caller) error {
	return s.deleteDevicesExcept(ctx, caller.Localpart, "")
}

func (s *Service) deleteDevicesExcept(ctx context.Context, localpart, keep string) error {
	var deleted []string
	err := s.store.WriteRetry(ctx, func(c storage.Conn) error {
		var err error
		deleted, err = c.DeleteDevicesExcept(ctx, localpart, keep)
		return err
	})
	s.revokeTokens(localpart)
	for _, d := range deleted {
		s.announceDevice(s.UserID(localpart), d, true)
	}
	return err
}

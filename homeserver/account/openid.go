package account

import (
	"context"
	"errors"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// OpenIDToken is a token a user hands to a third party to prove its identity
// (/user/{userId}/openid/request_token).
type OpenIDToken struct {
	AccessToken string
	ExpiresInS  int64
}

// RequestOpenIDToken issues an OpenID token for a local user.
func (s *Service) RequestOpenIDToken(ctx context.Context, localpart string) (OpenIDToken, error) {
	tok := newToken(openIDTokenPrefix)
	life := s.opts.OpenIDLifetime
	err := s.store.Write(ctx, func(c storage.Conn) error {
		return c.InsertOpenIDToken(ctx, HashToken(tok), localpart, s.nowMS()+life.Milliseconds())
	})
	return OpenIDToken{AccessToken: tok, ExpiresInS: int64(life.Seconds())}, err
}

// OpenIDUser returns the user an unexpired OpenID token was issued to.
func (s *Service) OpenIDUser(ctx context.Context, token string) (spec.UserID, error) {
	localpart, expires, err := s.store.Read().OpenIDToken(ctx, HashToken(token))
	if err != nil {
		return "", err
	}
	if expires < s.nowMS() {
		return "", errors.New("account: OpenID token expired")
	}
	return s.UserID(localpart), nil
}

package account

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Auth types of user-interactive authentication this server offers.
const (
	StagePassword          = "m.login.password"
	StageDummy             = "m.login.dummy"
	StageRegistrationToken = "m.login.registration_token"
)

// Flow is one sequence of stages that completes authentication.
type Flow struct {
	Stages []string `json:"stages"`
}

// Challenge is the 401 response asking the client to (continue to) authenticate. When a stage
// failed, Err carries the errcode and message sent along.
type Challenge struct {
	Flows     []Flow
	Params    map[string]any
	Session   string
	Completed []string
	Err       *spec.Error
}

func (c *Challenge) Error() string {
	if c.Err != nil {
		return "user-interactive auth: " + c.Err.Error()
	}
	return "user-interactive auth required"
}

// HTTPStatus is always 401.
func (c *Challenge) HTTPStatus() int { return http.StatusUnauthorized }

// MarshalJSON writes the spec's 401 body.
func (c *Challenge) MarshalJSON() ([]byte, error) {
	params := c.Params
	if params == nil {
		params = map[string]any{}
	}
	body := map[string]any{"flows": c.Flows, "params": params, "session": c.Session}
	if len(c.Completed) > 0 {
		body["completed"] = c.Completed
	}
	if c.Err != nil {
		body["errcode"] = c.Err.Code
		body["error"] = c.Err.Message
	}
	return json.Marshal(body)
}

// AuthDict is the "auth" object of a request.
type AuthDict struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Password   string          `json:"password"`
	Identifier *Identifier     `json:"identifier"`
	User       string          `json:"user"` // deprecated form of identifier
	Token      string          `json:"token"`
	Raw        json.RawMessage `json:"-"`
}

// Identifier is a user identifier object (m.id.user is the one this server supports for passwords).
type Identifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// UIARequest is one attempt at an endpoint protected by user-interactive authentication.
type UIARequest struct {
	Action    string // binds the session to one operation, e.g. "delete_devices"
	Localpart string // the authenticated user; "" for registration
	Flows     []Flow
	Auth      *AuthDict // nil when the request had no auth
}

// Authorize runs one step of user-interactive authentication. It returns nil once a flow is
// complete; otherwise a *Challenge (401) or another Matrix error. It returns the session so that the
// caller can read what stages recorded (the registration token).
func (s *Service) Authorize(ctx context.Context, r UIARequest) (storage.UIASession, error) {
	now := s.nowMS()
	var sess storage.UIASession
	if r.Auth == nil || r.Auth.Session == "" {
		sess = storage.UIASession{ID: NewSessionID(), Action: r.Action, Localpart: r.Localpart, CreatedTS: now,
			ExpiresTS: now + s.opts.UIALifetime.Milliseconds()}
		if err := s.store.Write(ctx, func(c storage.Conn) error { return c.CreateUIASession(ctx, sess) }); err != nil {
			return sess, err
		}
		if r.Auth == nil || r.Auth.Type == "" {
			return sess, s.challenge(r, sess, nil)
		}
	} else {
		var err error
		sess, err = s.store.Read().UIASession(ctx, r.Auth.Session)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && sess.ExpiresTS < now) {
			return sess, spec.ErrNotFound.With("Unknown or expired user-interactive auth session").WithStatus(http.StatusBadRequest)
		}
		if err != nil {
			return sess, err
		}
		if sess.Action != r.Action || sess.Localpart != r.Localpart {
			return sess, spec.ErrForbidden.With("This auth session was started for another request")
		}
	}
	if r.Auth.Type != "" && !slices.Contains(sess.Completed, r.Auth.Type) {
		if !nextStageAllowed(r.Flows, sess.Completed, r.Auth.Type) {
			return sess, s.challenge(r, sess, spec.ErrBadJSON.Withf("Auth type %q is not expected at this point", r.Auth.Type))
		}
		if stageErr := s.runStage(ctx, r, &sess); stageErr != nil {
			var e *spec.Error
			if errors.As(stageErr, &e) && (e.Code == spec.ErrForbidden.Code || e.Code == spec.ErrUnauthorized.Code ||
				e.Code == spec.ErrUserDeactivated.Code) {
				return sess, s.challenge(r, sess, e)
			}
			return sess, stageErr
		}
		sess.Completed = append(sess.Completed, r.Auth.Type)
		if err := s.store.Write(ctx, func(c storage.Conn) error { return c.UpdateUIASession(ctx, sess) }); err != nil {
			return sess, err
		}
	}
	for _, f := range r.Flows {
		if slices.Equal(f.Stages, sess.Completed) || containsAll(sess.Completed, f.Stages) {
			return sess, nil
		}
	}
	return sess, s.challenge(r, sess, nil)
}

func (s *Service) challenge(r UIARequest, sess storage.UIASession, err *spec.Error) *Challenge {
	return &Challenge{Flows: r.Flows, Session: sess.ID, Completed: sess.Completed, Err: err}
}

// nextStageAllowed reports whether stage may come after completed in some flow (stages go in order).
func nextStageAllowed(flows []Flow, completed []string, stage string) bool {
	for _, f := range flows {
		if len(f.Stages) > len(completed) && slices.Equal(f.Stages[:len(completed)], completed) && f.Stages[len(completed)] == stage {
			return true
		}
	}
	return false
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func (s *Service) runStage(ctx context.Context, r UIARequest, sess *storage.UIASession) error {
	switch r.Auth.Type {
	case StageDummy:
		return nil
	case StagePassword:
		user := r.Auth.User
		if r.Auth.Identifier != nil {
			if r.Auth.Identifier.Type != "m.id.user" {
				return spec.ErrUnauthorized.With("Only m.id.user identifiers are supported")
			}
			user = r.Auth.Identifier.User
		}
		localpart, err := s.resolveLocalpart(ctx, user)
		if err != nil {
			return err
		}
		if localpart != r.Localpart {
			return spec.ErrForbidden.With("Authenticate as the user making the request")
		}
		return s.CheckPassword(ctx, localpart, r.Auth.Password)
	case StageRegistrationToken:
		if r.Auth.Token == "" {
			return spec.ErrMissingParam.With("auth.token is required")
		}
		return s.store.Write(ctx, func(c storage.Conn) error {
			t, err := c.RegistrationToken(ctx, r.Auth.Token)
			if errors.Is(err, storage.ErrNotFound) || (err == nil && !t.Valid(s.nowMS())) {
				return spec.ErrUnauthorized.With("Invalid registration token")
			}
			if err != nil {
				return err
			}
			sess.RegistrationToken = t.Token
			return c.AddRegistrationTokenUse(ctx, t.Token, 1, 0)
		})
	}
	return spec.ErrBadJSON.Withf("Unsupported auth type %q", r.Auth.Type)
}

// ValidRegistrationToken reports whether a registration token can currently be used.
func (s *Service) ValidRegistrationToken(ctx context.Context, token string) (bool, error) {
	t, err := s.store.Read().RegistrationToken(ctx, token)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.Valid(s.nowMS()), nil
}

// PurgeExpired removes expired UIA sessions (returning their pending registration token uses),
// OpenID tokens and nonces.
func (s *Service) PurgeExpired(ctx context.Context) error {
	now := s.nowMS()
	return s.store.Write(ctx, func(c storage.Conn) error {
		expired, err := c.ExpiredUIASessions(ctx, now)
		if err != nil {
			return err
		}
		for _, sess := range expired {
			if sess.RegistrationToken != "" {
				if err := c.AddRegistrationTokenUse(ctx, sess.RegistrationToken, -1, 0); err != nil && !errors.Is(err, storage.ErrNotFound) {
					return err
				}
			}
			if err := c.DeleteUIASession(ctx, sess.ID); err != nil {
				return err
			}
		}
		return c.PurgeExpired(ctx, now)
	})
}

// FinishUIA ends a session once the operation it authorised has succeeded, so the session cannot
// authorise the same operation again.
func (s *Service) FinishUIA(ctx context.Context, sessionID string) error {
	return s.store.Write(ctx, func(c storage.Conn) error { return c.DeleteUIASession(ctx, sessionID) })
}

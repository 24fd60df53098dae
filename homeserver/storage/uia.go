package storage

import (
	"context"
	"encoding/json"
)

// UIASession is a user-interactive authentication session.
type UIASession struct {
	ID                string
	Action            string // what the session authorises, e.g. "register", "delete_devices"
	Localpart         string // the authenticated user, "" for registration
	Completed         []string
	RegistrationToken string // the token a m.login.registration_token stage accepted
	CreatedTS         int64
	ExpiresTS         int64
}

// CreateUIASession inserts a new session.
func (c Conn) CreateUIASession(ctx context.Context, s UIASession) error {
	_, err := c.exec(ctx, `INSERT INTO uia_sessions (session_id, action, localpart, completed, registration_token, created_ts, expires_ts)
		VALUES ($1, $2, $3, '[]', '', $4, $5)`, s.ID, s.Action, s.Localpart, s.CreatedTS, s.ExpiresTS)
	return err
}

// UIASession reads a session.
func (c Conn) UIASession(ctx context.Context, id string) (UIASession, error) {
	s := UIASession{ID: id}
	var completed string
	err := c.scanOne(ctx, `SELECT action, localpart, completed, registration_token, created_ts, expires_ts FROM uia_sessions WHERE session_id = $1`,
		[]any{id}, &s.Action, &s.Localpart, &completed, &s.RegistrationToken, &s.CreatedTS, &s.ExpiresTS)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal([]byte(completed), &s.Completed)
}

// UpdateUIASession stores the completed stages and accepted registration token.
func (c Conn) UpdateUIASession(ctx context.Context, s UIASession) error {
	completed, err := json.Marshal(s.Completed)
	if err != nil {
		return err
	}
	return c.execOne(ctx, `UPDATE uia_sessions SET completed = $2, registration_token = $3 WHERE session_id = $1`,
		s.ID, string(completed), s.RegistrationToken)
}

// DeleteUIASession removes a session.
func (c Conn) DeleteUIASession(ctx context.Context, id string) error {
	_, err := c.exec(ctx, `DELETE FROM uia_sessions WHERE session_id = $1`, id)
	return err
}

// ExpiredUIASessions lists sessions that expired before now.
func (c Conn) ExpiredUIASessions(ctx context.Context, now int64) ([]UIASession, error) {
	ids, err := collect(ctx, c, `SELECT session_id FROM uia_sessions WHERE expires_ts < $1`, []any{now}, scanString)
	if err != nil {
		return nil, err
	}
	out := make([]UIASession, 0, len(ids))
	for _, id := range ids {
		s, err := c.UIASession(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

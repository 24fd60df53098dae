package account_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/hearthmx/homeserver/homeserver/account"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

var passwordFlow = []account.Flow{{Stages: []string{account.StagePassword}}}

// wantChallenge fails unless err is a *Challenge; it returns it.
func wantChallenge(t *testing.T, what string, err error) *account.Challenge {
	t.Helper()
	var ch *account.Challenge
	if !errors.As(err, &ch) {
		t.Fatalf("%s: err = %v, want a user-interactive auth challenge", what, err)
	}
	if ch.HTTPStatus() != http.StatusUnauthorized {
		t.Fatalf("%s: challenge status %d", what, ch.HTTPStatus())
	}
	return ch
}

func passwordAuth(session, user, password string) *account.AuthDict {
	return &account.AuthDict{Type: account.StagePassword, Session: session, Password: password,
		Identifier: &account.Identifier{Type: "m.id.user", User: user}}
}

func TestUIAPassword(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, _ := newService(t, s, nil)
		registerAlice(t, svc, account.RegisterParams{InhibitLogin: true})
		req := func(auth *account.AuthDict) account.UIARequest {
			return account.UIARequest{Action: "delete_devices", Localpart: "alice", Flows: passwordFlow, Auth: auth}
		}

		// No auth: a challenge with a new session and the flows.
		_, err := svc.Authorize(ctx, req(nil))
		ch := wantChallenge(t, "no auth", err)
		if ch.Session == "" || ch.Err != nil || len(ch.Completed) != 0 || !slices.EqualFunc(ch.Flows, passwordFlow,
			func(a, b account.Flow) bool { return slices.Equal(a.Stages, b.Stages) }) {
			t.Fatalf("challenge = %+v", ch)
		}
		body, err := json.Marshal(ch)
		if err != nil {
			t.Fatal(err)
		}
		var wire map[string]any
		_ = json.Unmarshal(body, &wire)
		if wire["session"] != ch.Session || wire["flows"] == nil || wire["params"] == nil || wire["errcode"] != nil {
			t.Fatalf("challenge JSON = %s", body)
		}
		session := ch.Session

		// Wrong password: a challenge on the same session carrying M_FORBIDDEN.
		_, err = svc.Authorize(ctx, req(passwordAuth(session, "alice", "wrong password")))
		ch = wantChallenge(t, "wrong password", err)
		if ch.Session != session || ch.Err == nil || ch.Err.Code != spec.ErrForbidden.Code || len(ch.Completed) != 0 {
			t.Fatalf("wrong-password challenge = %+v", ch)
		}
		body, _ = json.Marshal(ch)
		wire = nil
		_ = json.Unmarshal(body, &wire)
		if wire["errcode"] != "M_FORBIDDEN" || wire["session"] != session {
			t.Fatalf("wrong-password challenge JSON = %s", body)
		}

		// Authenticating as somebody else is refused.
		registerBob(t, svc)
		_, err = svc.Authorize(ctx, req(passwordAuth(session, "bob", alicePassword)))
		if ch := wantChallenge(t, "another user's password", err); ch.Err == nil || ch.Err.Code != spec.ErrForbidden.Code {
			t.Fatalf("another user's password: %+v", ch)
		}

		// The session cannot be used for another action or another user.
		_, err = svc.Authorize(ctx, account.UIARequest{Action: "change_password", Localpart: "alice", Flows: passwordFlow,
			Auth: passwordAuth(session, "alice", alicePassword)})
		wantErr(t, "session of another action", err, spec.ErrForbidden)
		_, err = svc.Authorize(ctx, account.UIARequest{Action: "delete_devices", Localpart: "bob", Flows: passwordFlow,
			Auth: passwordAuth(session, "bob", "bob's password")})
		wantErr(t, "session of another user", err, spec.ErrForbidden)

		// The right password completes it.
		sess, err := svc.Authorize(ctx, req(passwordAuth(session, "alice", alicePassword)))
		if err != nil {
			t.Fatalf("right password: %v", err)
		}
		if sess.ID != session || !slices.Equal(sess.Completed, []string{account.StagePassword}) {
			t.Fatalf("completed session = %+v", sess)
		}
		// The completed session answers without repeating the stage, for this action only.
		if _, err := svc.Authorize(ctx, req(&account.AuthDict{Session: session})); err != nil {
			t.Fatalf("completed session reused: %v", err)
		}
		_, err = svc.Authorize(ctx, account.UIARequest{Action: "deactivate", Localpart: "alice", Flows: passwordFlow,
			Auth: &account.AuthDict{Session: session}})
		wantErr(t, "completed session for another action", err, spec.ErrForbidden)

		// Auth with no session starts one and may complete it in one step; deprecated "user" works.
		if _, err := svc.Authorize(ctx, req(&account.AuthDict{Type: account.StagePassword, User: "@alice:example.org",
			Password: alicePassword})); err != nil {
			t.Fatalf("one-step auth: %v", err)
		}

		// Unknown sessions are refused.
		if _, err := svc.Authorize(ctx, req(passwordAuth("no-such-session", "alice", alicePassword))); err == nil {
			t.Fatal("unknown session accepted")
		} else if errors.As(err, new(*account.Challenge)) {
			t.Fatalf("unknown session answered with a challenge: %v", err)
		}
		// Other identifier types are not supported for passwords.
		_, err = svc.Authorize(ctx, req(&account.AuthDict{Type: account.StagePassword, Password: alicePassword,
			Identifier: &account.Identifier{Type: "m.id.thirdparty"}}))
		wantChallenge(t, "third-party identifier", err)
	})
}

func registerBob(t *testing.T, svc *account.Service) {
	t.Helper()
	if _, err := svc.Register(context.Background(), account.RegisterParams{Localpart: "bob", Password: "bob's password",
		InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
}

func TestUIAExpiredSession(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, clock := newService(t, s, nil)
		req := account.UIARequest{Action: "register", Flows: []account.Flow{{Stages: []string{account.StageDummy}}}}
		_, err := svc.Authorize(ctx, req)
		session := wantChallenge(t, "no auth", err).Session
		clock.advance(uiaLife + time.Second)
		req.Auth = &account.AuthDict{Type: account.StageDummy, Session: session}
		if _, err := svc.Authorize(ctx, req); err == nil || errors.As(err, new(*account.Challenge)) {
			t.Fatalf("expired session: err = %v, want a refusal", err)
		}
	})
}

func TestUIAStagesInOrder(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, _ := newService(t, s, nil)
		registerAlice(t, svc, account.RegisterParams{InhibitLogin: true})
		flows := []account.Flow{{Stages: []string{account.StageDummy, account.StagePassword}}}
		req := func(auth *account.AuthDict) account.UIARequest {
			return account.UIARequest{Action: "deactivate", Localpart: "alice", Flows: flows, Auth: auth}
		}
		_, err := svc.Authorize(ctx, req(nil))
		session := wantChallenge(t, "no auth", err).Session

		// The second stage first is refused, even with the right password, and not recorded.
		_, err = svc.Authorize(ctx, req(passwordAuth(session, "alice", alicePassword)))
		ch := wantChallenge(t, "stage out of order", err)
		if ch.Err == nil || len(ch.Completed) != 0 {
			t.Fatalf("out-of-order challenge = %+v", ch)
		}
		// A stage of no flow is refused too.
		_, err = svc.Authorize(ctx, req(&account.AuthDict{Type: account.StageRegistrationToken, Session: session, Token: "x"}))
		if ch := wantChallenge(t, "stage of no flow", err); ch.Err == nil {
			t.Fatalf("stage of no flow: %+v", ch)
		}

		// In order: dummy, then password.
		_, err = svc.Authorize(ctx, req(&account.AuthDict{Type: account.StageDummy, Session: session}))
		ch = wantChallenge(t, "first stage done", err)
		if ch.Err != nil || !slices.Equal(ch.Completed, []string{account.StageDummy}) {
			t.Fatalf("after the first stage: %+v", ch)
		}
		sess, err := svc.Authorize(ctx, req(passwordAuth(session, "alice", alicePassword)))
		if err != nil {
			t.Fatalf("second stage: %v", err)
		}
		if !slices.Equal(sess.Completed, []string{account.StageDummy, account.StagePassword}) {
			t.Fatalf("completed = %v", sess.Completed)
		}
	})
}

func i64(v int64) *int64 { return &v }

func registrationToken(t *testing.T, s *storage.Store, token string) storage.RegistrationToken {
	t.Helper()
	rt, err := s.Read().RegistrationToken(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func TestUIARegistrationToken(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, clock := newService(t, s, nil)
		if err := s.Write(ctx, func(c storage.Conn) error {
			if err := c.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "tok", UsesAllowed: i64(2), CreatedTS: 1}); err != nil {
				return err
			}
			return c.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "expired", ExpiryTS: i64(startMS - 1), CreatedTS: 1})
		}); err != nil {
			t.Fatal(err)
		}
		flows := []account.Flow{{Stages: []string{account.StageRegistrationToken}}}
		req := func(auth *account.AuthDict) account.UIARequest {
			return account.UIARequest{Action: "register", Flows: flows, Auth: auth}
		}

		if ok, err := svc.ValidRegistrationToken(ctx, "tok"); err != nil || !ok {
			t.Fatalf("ValidRegistrationToken(tok) = %v, %v", ok, err)
		}
		for _, bad := range []string{"expired", "unknown"} {
			if ok, err := svc.ValidRegistrationToken(ctx, bad); err != nil || ok {
				t.Fatalf("ValidRegistrationToken(%s) = %v, %v", bad, ok, err)
			}
			_, err := svc.Authorize(ctx, req(&account.AuthDict{Type: account.StageRegistrationToken, Token: bad}))
			if ch := wantChallenge(t, "token "+bad, err); ch.Err == nil {
				t.Fatalf("token %s: challenge without error", bad)
			}
		}
		_, err := svc.Authorize(ctx, req(&account.AuthDict{Type: account.StageRegistrationToken}))
		wantErr(t, "no token", err, spec.ErrMissingParam)

		// A use of the token is pending while the session lives.
		_, err = svc.Authorize(ctx, req(nil))
		session := wantChallenge(t, "no auth", err).Session
		sess, err := svc.Authorize(ctx, req(&account.AuthDict{Type: account.StageRegistrationToken, Session: session, Token: "tok"}))
		if err != nil {
			t.Fatalf("token stage: %v", err)
		}
		if sess.RegistrationToken != "tok" {
			t.Fatalf("session registration token = %q", sess.RegistrationToken)
		}
		if rt := registrationToken(t, s, "tok"); rt.Pending != 1 || rt.Completed != 0 {
			t.Fatalf("after the stage: pending %d completed %d, want 1 and 0", rt.Pending, rt.Completed)
		}
		// Completing the session again does not count another use.
		if _, err := svc.Authorize(ctx, req(&account.AuthDict{Type: account.StageRegistrationToken, Session: session, Token: "tok"})); err != nil {
			t.Fatal(err)
		}
		if rt := registrationToken(t, s, "tok"); rt.Pending != 1 {
			t.Fatalf("repeating a completed stage: pending %d, want 1", rt.Pending)
		}

		// The session expires unused: purging it returns the pending use.
		if err := svc.PurgeExpired(ctx); err != nil {
			t.Fatal(err)
		}
		if rt := registrationToken(t, s, "tok"); rt.Pending != 1 {
			t.Fatalf("purge before expiry: pending %d, want 1", rt.Pending)
		}
		clock.advance(uiaLife + time.Second)
		if err := svc.PurgeExpired(ctx); err != nil {
			t.Fatal(err)
		}
		if rt := registrationToken(t, s, "tok"); rt.Pending != 0 || rt.Completed != 0 {
			t.Fatalf("after purge: pending %d completed %d, want 0 and 0", rt.Pending, rt.Completed)
		}
		if _, err := s.Read().UIASession(ctx, session); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired session still stored: %v", err)
		}
	})
}

func TestRegisterConsumesRegistrationToken(t *testing.T) {
	t.Parallel()
	storagetest.ForEachBackend(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc, clock := newService(t, s, nil)
		if err := s.Write(ctx, func(c storage.Conn) error {
			return c.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "once", UsesAllowed: i64(1), CreatedTS: 1})
		}); err != nil {
			t.Fatal(err)
		}
		req := account.UIARequest{Action: "register", Flows: []account.Flow{{Stages: []string{account.StageRegistrationToken}}},
			Auth: &account.AuthDict{Type: account.StageRegistrationToken, Token: "once"}}
		sess, err := svc.Authorize(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		// While the use is pending, nobody else can take the last use.
		if ok, _ := svc.ValidRegistrationToken(ctx, "once"); ok {
			t.Fatal("token with its only use pending is still valid")
		}
		if _, err := svc.Register(ctx, account.RegisterParams{Localpart: "carol", InhibitLogin: true,
			RegistrationToken: sess.RegistrationToken, UIASession: sess.ID}); err != nil {
			t.Fatal(err)
		}
		if rt := registrationToken(t, s, "once"); rt.Pending != 0 || rt.Completed != 1 {
			t.Fatalf("after registration: pending %d completed %d, want 0 and 1", rt.Pending, rt.Completed)
		}
		// The session was consumed: it cannot register a second account with the same token use...
		req.Auth = &account.AuthDict{Session: sess.ID}
		if _, err := svc.Authorize(ctx, req); err == nil {
			t.Fatal("the session that registered carol authorised another registration")
		}
		// ...and its expiry does not hand the use back.
		clock.advance(uiaLife + time.Second)
		if err := svc.PurgeExpired(ctx); err != nil {
			t.Fatal(err)
		}
		if rt := registrationToken(t, s, "once"); rt.Pending != 0 || rt.Completed != 1 || rt.Valid(clock.now().UnixMilli()) {
			t.Fatalf("after purge: pending %d completed %d, want 0 and 1 (used up)", rt.Pending, rt.Completed)
		}
	})
}

package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/servertest"
)

// TestPushRules covers the server-default rules and a user's changes: enabling, actions, adding
// user rules with before/after, deleting, and that changes reach the user's /sync as m.push_rules.
func TestPushRules(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		res := s.Do(t, "GET", "/_matrix/client/v3/pushrules/", alice.AccessToken, nil)
		global, _ := res.JSON["global"].(map[string]any)
		override, _ := global["override"].([]any)
		if res.Status != 200 || len(override) == 0 || override[0].(map[string]any)["rule_id"] != ".m.rule.master" {
			t.Fatalf("default rules: %d %.300s", res.Status, res.Raw)
		}
		if !strings.Contains(string(res.Raw), `"pattern":"`+alice.UserID+`"`) || strings.Contains(string(res.Raw), "USER_ID") {
			t.Fatalf("invite_for_me must name the user: %.2000s", res.Raw)
		}
		base := "/_matrix/client/v3/pushrules/global/"
		if res := s.Do(t, "GET", base+"underride/.m.rule.message/actions", alice.AccessToken, nil); !strings.Contains(string(res.Raw), `"notify"`) {
			t.Fatalf("message actions: %s", res.Raw)
		}
		start := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", alice.AccessToken, nil).Str("next_batch")

		expect(t, s.Do(t, "PUT", base+"override/.m.rule.master/enabled", alice.AccessToken, map[string]any{"enabled": true}), 200, "")
		if res := s.Do(t, "GET", base+"override/.m.rule.master/enabled", alice.AccessToken, nil); res.JSON["enabled"] != true {
			t.Fatalf("master not enabled: %s", res.Raw)
		}
		expect(t, s.Do(t, "PUT", base+"underride/.m.rule.message/actions", alice.AccessToken, map[string]any{"actions": []any{}}), 200, "")
		// User rules: a, then b before a, then c after a.
		rule := map[string]any{"actions": []any{"notify"}, "pattern": "cake*"}
		expect(t, s.Do(t, "PUT", base+"content/a", alice.AccessToken, rule), 200, "")
		expect(t, s.Do(t, "PUT", base+"content/b?before=a", alice.AccessToken, rule), 200, "")
		expect(t, s.Do(t, "PUT", base+"content/c?after=a", alice.AccessToken, rule), 200, "")
		res = s.Do(t, "GET", base, alice.AccessToken, nil)
		var ids []string
		for _, r := range res.JSON["content"].([]any) {
			ids = append(ids, r.(map[string]any)["rule_id"].(string))
		}
		if strings.Join(ids, ",") != "b,a,c" {
			t.Fatalf("content rule order: %v", ids)
		}
		expect(t, s.Do(t, "PUT", base+"content/d?before=nope", alice.AccessToken, rule), 400, "M_UNKNOWN")
		expect(t, s.Do(t, "PUT", base+"content/.mine", alice.AccessToken, rule), 400, "M_INVALID_PARAM")
		expect(t, s.Do(t, "PUT", base+"content/e", alice.AccessToken, map[string]any{"actions": []any{}}), 400, "M_MISSING_PARAM")
		expect(t, s.Do(t, "PUT", base+"bogus/x", alice.AccessToken, rule), 400, "M_INVALID_PARAM")
		expect(t, s.Do(t, "DELETE", base+"content/a", alice.AccessToken, nil), 200, "")
		expect(t, s.Do(t, "GET", base+"content/a", alice.AccessToken, nil), 404, "M_NOT_FOUND")
		expect(t, s.Do(t, "DELETE", base+"override/.m.rule.master", alice.AccessToken, nil), 403, "M_FORBIDDEN")
		expect(t, s.Do(t, "PUT", base+"override/.m.rule.nope/enabled", alice.AccessToken, map[string]any{"enabled": true}), 404, "M_NOT_FOUND")

		// The changes reach /sync as m.push_rules account data, and other users are untouched.
		res = s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(start), alice.AccessToken, nil)
		var body struct {
			AccountData accountDataEvents `json:"account_data"`
		}
		_ = json.Unmarshal(res.Raw, &body)
		found := false
		for _, e := range body.AccountData.Events {
			found = found || e.Type == "m.push_rules" && strings.Contains(string(e.Content), `"rule_id":"b"`)
		}
		if !found {
			t.Fatalf("m.push_rules not in sync: %.1000s", res.Raw)
		}
		bob := s.Register(t, "bob", "bob password")
		if res := s.Do(t, "GET", base+"override/.m.rule.master/enabled", bob.AccessToken, nil); res.JSON["enabled"] != false {
			t.Fatalf("bob's master rule changed: %s", res.Raw)
		}
	})
}

// TestPushRulesConcurrent: rules added at the same time (several devices) are all kept: each
// change reads the ruleset after the one before it committed.
func TestPushRulesConcurrent(t *testing.T) {
	servertest.ForEachBackend(t, func(t *testing.T, s *servertest.Server) {
		alice := s.Register(t, "alice", "alice password")
		const n = 16
		putAtOnce(t, s, alice.AccessToken, n, func(i int) (string, any) {
			return fmt.Sprintf("/_matrix/client/v3/pushrules/global/content/r%d", i),
				map[string]any{"actions": []any{"notify"}, "pattern": fmt.Sprintf("word%d", i)}
		})
		res := s.Do(t, "GET", "/_matrix/client/v3/pushrules/global/", alice.AccessToken, nil)
		kept := 0
		for _, r := range res.JSON["content"].([]any) {
			if strings.HasPrefix(r.(map[string]any)["rule_id"].(string), "r") {
				kept++
			}
		}
		if kept != n {
			t.Fatalf("%d rules kept of %d added at once: %s", kept, n, res.Raw)
		}
	})
}

package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearthmx/homeserver/homeserver/push"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// routesPushRules mounts /pushrules.
func (a *API) routesPushRules(r chi.Router) {
	h := func(fn handler) http.HandlerFunc { return serve(a.log, fn) }
	r.Get("/pushrules/", h(a.getPushRules))
	r.Get("/pushrules/global/", h(a.getPushRulesGlobal))
	r.Get("/pushrules/global/{kind}/{ruleId}", h(a.getPushRule))
	r.Put("/pushrules/global/{kind}/{ruleId}", h(a.putPushRule))
	r.Delete("/pushrules/global/{kind}/{ruleId}", h(a.deletePushRule))
	r.Get("/pushrules/global/{kind}/{ruleId}/enabled", h(a.getPushRuleEnabled))
	r.Put("/pushrules/global/{kind}/{ruleId}/enabled", h(a.putPushRuleEnabled))
	r.Get("/pushrules/global/{kind}/{ruleId}/actions", h(a.getPushRuleActions))
	r.Put("/pushrules/global/{kind}/{ruleId}/actions", h(a.putPushRuleActions))
}

func (a *API) pushRules(r *http.Request) (push.Ruleset, error) {
	c := callerOf(r)
	return a.push.Rules(r.Context(), string(c.UserID), c.Localpart)
}

// getPushRules is GET /_matrix/client/v3/pushrules/.
func (a *API) getPushRules(r *http.Request) (any, error) {
	rs, err := a.pushRules(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"global": rs}, nil
}

// getPushRulesGlobal is GET /_matrix/client/v3/pushrules/global/.
func (a *API) getPushRulesGlobal(r *http.Request) (any, error) { return a.pushRules(r) }

// pushRuleParams reads {kind} and {ruleId}.
func pushRuleParams(r *http.Request) (kind, ruleID string, err error) {
	kind, ruleID = pathParam(r, "kind"), pathParam(r, "ruleId")
	if !push.ValidKind(kind) {
		return "", "", spec.ErrInvalidParam.Withf("Unknown push rule kind %q", kind)
	}
	return kind, ruleID, nil
}

// findPushRule returns the rule of the path.
func (a *API) findPushRule(r *http.Request) (push.Rule, error) {
	kind, id, err := pushRuleParams(r)
	if err != nil {
		return push.Rule{}, err
	}
	rs, err := a.pushRules(r)
	if err != nil {
		return push.Rule{}, err
	}
	i := rs.Find(kind, id)
	if i < 0 {
		return push.Rule{}, spec.ErrNotFound.With("The push rule was not found.")
	}
	return rs[kind][i], nil
}

// getPushRule is GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}.
func (a *API) getPushRule(r *http.Request) (any, error) { return a.findPushRule(r) }

// getPushRuleEnabled is GET .../{kind}/{ruleId}/enabled.
func (a *API) getPushRuleEnabled(r *http.Request) (any, error) {
	rule, err := a.findPushRule(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"enabled": rule.Enabled}, nil
}

// getPushRuleActions is GET .../{kind}/{ruleId}/actions.
func (a *API) getPushRuleActions(r *http.Request) (any, error) {
	rule, err := a.findPushRule(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"actions": rule.Actions}, nil
}

// putPushRule is PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}.
func (a *API) putPushRule(r *http.Request) (any, error) {
	kind, id, err := pushRuleParams(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Actions    []json.RawMessage `json:"actions"`
		Conditions []json.RawMessage `json:"conditions"`
		Pattern    *string           `json:"pattern"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Actions == nil {
		return nil, missing("actions")
	}
	rule := push.Rule{RuleID: id, Actions: body.Actions}
	switch kind {
	case "content":
		if body.Pattern == nil {
			return nil, missing("pattern")
		}
		rule.Pattern = body.Pattern
	case "override", "underride":
		rule.Conditions = body.Conditions
		if rule.Conditions == nil {
			rule.Conditions = []json.RawMessage{}
		}
	}
	c := callerOf(r)
	q := r.URL.Query()
	return empty, a.push.Put(r.Context(), string(c.UserID), c.Localpart, kind, rule, q.Get("before"), q.Get("after"))
}

// deletePushRule is DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}.
func (a *API) deletePushRule(r *http.Request) (any, error) {
	kind, id, err := pushRuleParams(r)
	if err != nil {
		return nil, err
	}
	c := callerOf(r)
	return empty, a.push.Delete(r.Context(), string(c.UserID), c.Localpart, kind, id)
}

// putPushRuleEnabled is PUT .../{kind}/{ruleId}/enabled.
func (a *API) putPushRuleEnabled(r *http.Request) (any, error) {
	kind, id, err := pushRuleParams(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Enabled == nil {
		return nil, missing("enabled")
	}
	c := callerOf(r)
	return empty, a.push.SetEnabled(r.Context(), string(c.UserID), c.Localpart, kind, id, *body.Enabled)
}

// putPushRuleActions is PUT .../{kind}/{ruleId}/actions.
func (a *API) putPushRuleActions(r *http.Request) (any, error) {
	kind, id, err := pushRuleParams(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Actions []json.RawMessage `json:"actions"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Actions == nil {
		return nil, missing("actions")
	}
	c := callerOf(r)
	return empty, a.push.SetActions(r.Context(), string(c.UserID), c.Localpart, kind, id, body.Actions)
}

// Package push holds push rules (module "Push Notifications"): the spec's server-default rules
// and each user's changes to them, stored as the user's m.push_rules account data so that /sync
// delivers them like any account data. Evaluating rules and sending to push gateways come later.
package push

import (
	_ "embed"
	"encoding/json"
	"slices"
	"strings"
)

// defaultsJSON are the spec's predefined rules (v1.17+), with @USER_ID@ standing for the user.
//
//go:embed defaults.json
var defaultsJSON []byte

// Kinds of rules, in the order they are evaluated.
var Kinds = []string{"override", "content", "room", "sender", "underride"}

// Rule is one push rule. Fields stay raw JSON where the server only stores and returns them.
type Rule struct {
	RuleID     string            `json:"rule_id"`
	Default    bool              `json:"default"`
	Enabled    bool              `json:"enabled"`
	Actions    []json.RawMessage `json:"actions"`
	Conditions []json.RawMessage `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
}

// Ruleset is the rules of one scope ("global"), by kind.
type Ruleset map[string][]Rule

// Defaults returns the server-default rules for a user.
func Defaults(userID string) Ruleset {
	quoted, _ := json.Marshal(userID)
	data := strings.ReplaceAll(string(defaultsJSON), `"@USER_ID@"`, string(quoted))
	var rs Ruleset
	if err := json.Unmarshal([]byte(data), &rs); err != nil {
		panic("push: bad defaults.json: " + err.Error())
	}
	for _, k := range Kinds {
		if rs[k] == nil {
			rs[k] = []Rule{}
		}
	}
	return rs
}

// Find returns the index of a rule of a kind, or -1.
func (rs Ruleset) Find(kind, ruleID string) int {
	return slices.IndexFunc(rs[kind], func(r Rule) bool { return r.RuleID == ruleID })
}

// ValidKind reports whether kind is one of Kinds.
func ValidKind(kind string) bool { return slices.Contains(Kinds, kind) }

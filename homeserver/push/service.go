package push

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// AccountDataType is where a user's rules live.
const AccountDataType = "m.push_rules"

// Service reads and changes users' push rules.
type Service struct {
	store *storage.Store
	bus   *bus.Bus
	log   *slog.Logger
}

// New builds the service (b may be nil).
func New(store *storage.Store, b *bus.Bus, log *slog.Logger) *Service {
	return &Service{store: store, bus: b, log: log}
}

// stored is the account data content: {"global": ruleset}.
type stored struct {
	Global Ruleset `json:"global"`
}

// Rules returns the user's global ruleset: the defaults until the user changes something.
func (s *Service) Rules(ctx context.Context, userID, localpart string) (Ruleset, error) {
	return s.load(ctx, s.store.Read(), userID, localpart)
}

func (s *Service) load(ctx context.Context, c storage.Conn, userID, localpart string) (Ruleset, error) {
	raw, err := c.GetAccountData(ctx, localpart, "", AccountDataType)
	if errors.Is(err, storage.ErrNotFound) {
		return Defaults(userID), nil
	}
	if err != nil {
		return nil, err
	}
	var st stored
	if err := json.Unmarshal(raw, &st); err != nil || st.Global == nil {
		return Defaults(userID), nil
	}
	for _, k := range Kinds {
		if st.Global[k] == nil {
			st.Global[k] = []Rule{}
		}
	}
	return st.Global, nil
}

// change applies fn to the user's ruleset and stores the result in one transaction, then
// announces the account data change so syncing clients receive the new m.push_rules.
func (s *Service) change(ctx context.Context, userID, localpart string, fn func(rs Ruleset) error) error {
	var pos int64
	err := s.store.Write(ctx, func(c storage.Conn) error {
		// The account data counter is locked before the read: two changes at once (two devices,
		// two nodes on PostgreSQL) then apply one after the other, instead of one losing the other.
		if _, err := c.LockPosition(ctx, storage.StreamAccountData); err != nil {
			return err
		}
		rs, err := s.load(ctx, c, userID, localpart)
		if err != nil {
			return err
		}
		if err := fn(rs); err != nil {
			return err
		}
		data, err := json.Marshal(stored{Global: rs})
		if err != nil {
			return err
		}
		pos, err = c.PutAccountData(ctx, localpart, "", AccountDataType, data)
		return err
	})
	if err != nil || s.bus == nil {
		return err
	}
	msg, _ := json.Marshal(map[string]any{"user_id": userID, "pos": pos})
	if err := s.bus.Publish(bus.SubjectAccountData, msg); err != nil {
		s.log.Warn("push: publish", "err", err)
	}
	return nil
}

var errNoRule = spec.ErrNotFound.With("Unknown push rule")

// SetEnabled turns a rule on or off.
func (s *Service) SetEnabled(ctx context.Context, userID, localpart, kind, ruleID string, enabled bool) error {
	return s.change(ctx, userID, localpart, func(rs Ruleset) error {
		i := rs.Find(kind, ruleID)
		if i < 0 {
			return errNoRule
		}
		rs[kind][i].Enabled = enabled
		return nil
	})
}

// SetActions replaces a rule's actions.
func (s *Service) SetActions(ctx context.Context, userID, localpart, kind, ruleID string, actions []json.RawMessage) error {
	return s.change(ctx, userID, localpart, func(rs Ruleset) error {
		i := rs.Find(kind, ruleID)
		if i < 0 {
			return errNoRule
		}
		rs[kind][i].Actions = actions
		return nil
	})
}

// Put adds or replaces a user-defined rule, placed before or after another user-defined rule of
// the same kind when asked (server-default rules cannot be used as anchors or replaced).
func (s *Service) Put(ctx context.Context, userID, localpart, kind string, rule Rule, before, after string) error {
	if strings.HasPrefix(rule.RuleID, ".") || strings.ContainsAny(rule.RuleID, "/\\") || rule.RuleID == "" {
		return spec.ErrInvalidParam.With("Rule IDs may not start with a dot (reserved for server-default rules) or contain slashes")
	}
	rule.Default = false
	rule.Enabled = true
	return s.change(ctx, userID, localpart, func(rs Ruleset) error {
		list := rs[kind]
		if i := rs.Find(kind, rule.RuleID); i >= 0 {
			rule.Enabled = list[i].Enabled
			list = append(list[:i], list[i+1:]...)
		}
		at := firstDefault(list) // user rules go before the server-default rules of their kind
		for _, anchor := range []struct {
			id    string
			delta int
		}{{before, 0}, {after, 1}} {
			if anchor.id == "" {
				continue
			}
			j := indexOf(list, anchor.id)
			if j < 0 || list[j].Default && !(anchor.delta == 1 && list[j].RuleID == ".m.rule.master") {
				return spec.ErrUnknown.WithStatus(http.StatusBadRequest).Withf("before/after rule not found: %s", anchor.id)
			}
			at = j + anchor.delta
		}
		list = append(list[:at], append([]Rule{rule}, list[at:]...)...)
		rs[kind] = list
		return nil
	})
}

// Delete removes a user-defined rule.
func (s *Service) Delete(ctx context.Context, userID, localpart, kind, ruleID string) error {
	return s.change(ctx, userID, localpart, func(rs Ruleset) error {
		i := rs.Find(kind, ruleID)
		if i < 0 {
			return errNoRule
		}
		if rs[kind][i].Default {
			return spec.ErrForbidden.With("Server-default rules cannot be deleted")
		}
		rs[kind] = append(rs[kind][:i], rs[kind][i+1:]...)
		return nil
	})
}

// firstDefault is where user rules end: before the first server-default rule, except
// .m.rule.master, which stays above everything.
func firstDefault(list []Rule) int {
	for i, r := range list {
		if r.Default && r.RuleID != ".m.rule.master" {
			return i
		}
	}
	return len(list)
}

func indexOf(list []Rule, id string) int {
	for i, r := range list {
		if r.RuleID == id {
			return i
		}
	}
	return -1
}

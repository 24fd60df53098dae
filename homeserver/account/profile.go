package account

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Profile limits (client-server API, PUT /profile/{userId}/{keyName}). The key and total limits are
// the spec's; the per-field ones are ours ("servers MAY impose size limits on individual fields"),
// the values Synapse uses.
const (
	MaxProfileKeyBytes  = 255
	MaxProfileBytes     = 64 * 1024 // the whole profile as a JSON object
	MaxDisplayNameRunes = 256
	MaxAvatarURLBytes   = 1000
)

// Profile fields the spec defines.
const (
	profileFieldDisplay  = "displayname"
	profileFieldAvatar   = "avatar_url"
	profileFieldTimeZone = "m.tz"
)

// profileLock + localpart names the stream_counters row that serialises writes to one profile.
const profileLock = "profile:"

// Errors of the profile endpoints.
var (
	ErrProfileTooLarge = spec.ErrProfileTooLarge.With("The profile would be larger than 64 KiB")
	ErrKeyTooLarge     = spec.ErrKeyTooLarge.With("Profile keys may not be longer than 255 bytes")
)

// profileKey is the keyName pattern of the spec's profile endpoints.
var profileKey = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// CheckProfileKey validates a profile key name: M_KEY_TOO_LARGE over 255 bytes, M_INVALID_PARAM if it
// is not displayname, avatar_url, m.tz or a namespaced custom key.
func CheckProfileKey(key string) error {
	if len(key) > MaxProfileKeyBytes {
		return ErrKeyTooLarge
	}
	if !profileKey.MatchString(key) {
		return spec.ErrInvalidParam.Withf("Invalid profile key %q", key)
	}
	return nil
}

// profileOwner resolves the user whose profile is read: the localpart of a local, active account.
// Unknown, deactivated and remote users all get M_NOT_FOUND (remote profiles need federation).
func (s *Service) profileOwner(ctx context.Context, userID string) (string, error) {
	u, err := spec.ParseUserID(userID)
	if err != nil {
		return "", spec.ErrInvalidParam.Withf("Invalid user ID: %v", err)
	}
	notFound := spec.ErrNotFound.With("Profile not found")
	if u.ServerName() != s.opts.ServerName {
		return "", notFound
	}
	a, err := s.store.Read().Account(ctx, u.Localpart())
	if errors.Is(err, storage.ErrNotFound) || (err == nil && a.Deactivated) {
		return "", notFound
	}
	return u.Localpart(), err
}

// Profile is GET /profile/{userId}: every field of a user's profile. A user without any field has
// no profile (M_NOT_FOUND), nor has a deactivated one.
func (s *Service) Profile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	fields, err := s.PublicProfile(ctx, userID)
	if err == nil && len(fields) == 0 {
		return nil, spec.ErrNotFound.With("Profile not found")
	}
	return fields, err
}

// PublicProfile is the profile other servers get (GET /_matrix/federation/v1/query/profile):
// every field of an existing, active user, possibly none. M_NOT_FOUND only for a user who does not
// exist here or is deactivated: a field that is not set is left out, as the spec requires, not an
// error (Synapse logs a failed request for every avatar_url it asks of a user without one).
func (s *Service) PublicProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	localpart, err := s.profileOwner(ctx, userID)
	if err != nil {
		return nil, err
	}
	fields, err := s.store.Read().Profile(ctx, localpart)
	if err != nil {
		return nil, err
	}
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	return fields, nil
}

// ProfileField is GET /profile/{userId}/{keyName}: one field's value, M_NOT_FOUND if unset.
func (s *Service) ProfileField(ctx context.Context, userID, key string) (json.RawMessage, error) {
	if err := CheckProfileKey(key); err != nil {
		return nil, err
	}
	localpart, err := s.profileOwner(ctx, userID)
	if err != nil {
		return nil, err
	}
	v, err := s.store.Read().ProfileField(ctx, localpart, key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, spec.ErrNotFound.Withf("The user has no %s", key)
	}
	return v, err
}

// profileWriter checks that the caller may change userID's profile: only their own.
func profileWriter(caller Caller, userID string) error {
	if _, err := spec.ParseUserID(userID); err != nil {
		return spec.ErrInvalidParam.Withf("Invalid user ID: %v", err)
	}
	if userID != string(caller.UserID) {
		return spec.ErrForbidden.With("You may only change your own profile")
	}
	return nil
}

// SetProfileField is PUT /profile/{userId}/{keyName}. value is the JSON the body holds under key
// (nil when the body has no such key: M_MISSING_PARAM). displayname, avatar_url and m.tz must be
// strings, avatar_url an mxc:// URI; custom keys take any JSON, null included. An empty displayname
// or avatar_url removes the field, as it always has. The whole profile must stay within 64 KiB.
func (s *Service) SetProfileField(ctx context.Context, caller Caller, userID, key string, value json.RawMessage) error {
	if err := profileWriter(caller, userID); err != nil {
		return err
	}
	if err := CheckProfileKey(key); err != nil {
		return err
	}
	if value == nil {
		return spec.ErrMissingParam.Withf("The body must have the key %q", key)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, value); err != nil {
		return spec.ErrBadJSON.Withf("%s is not valid JSON", key)
	}
	value = compact.Bytes()
	remove, err := checkProfileValue(key, value)
	if err != nil {
		return err
	}
	localpart := caller.Localpart
	return s.store.Write(ctx, func(c storage.Conn) error {
		// Bumping this per-user counter locks its row until commit, so concurrent writes to one
		// profile run one after the other and cannot together pass the size limit.
		if _, err := c.NextPosition(ctx, profileLock+localpart); err != nil {
			return err
		}
		if remove {
			return c.DeleteProfileField(ctx, localpart, key)
		}
		fields, err := c.Profile(ctx, localpart)
		if err != nil {
			return err
		}
		fields[key] = value
		if profileSize(fields) > MaxProfileBytes {
			return ErrProfileTooLarge
		}
		return c.SetProfileField(ctx, localpart, key, value)
	})
}

// DeleteProfileField is DELETE /profile/{userId}/{keyName}; deleting an unset field succeeds.
func (s *Service) DeleteProfileField(ctx context.Context, caller Caller, userID, key string) error {
	if err := profileWriter(caller, userID); err != nil {
		return err
	}
	if err := CheckProfileKey(key); err != nil {
		return err
	}
	return s.store.Write(ctx, func(c storage.Conn) error {
		if _, err := c.NextPosition(ctx, profileLock+caller.Localpart); err != nil {
			return err
		}
		return c.DeleteProfileField(ctx, caller.Localpart, key)
	})
}

// checkProfileValue validates the value of a field the spec defines, and reports whether it asks to
// remove the field (an empty display name or avatar URL).
func checkProfileValue(key string, value json.RawMessage) (remove bool, err error) {
	switch key {
	case profileFieldDisplay, profileFieldAvatar, profileFieldTimeZone:
	default:
		return false, nil // custom keys: any JSON
	}
	var str string
	if value[0] != '"' || json.Unmarshal(value, &str) != nil {
		return false, spec.ErrBadJSON.Withf("%s must be a string", key)
	}
	switch key {
	case profileFieldDisplay:
		if utf8.RuneCountInString(str) > MaxDisplayNameRunes {
			return false, spec.ErrInvalidParam.Withf("displayname may not be longer than %d characters", MaxDisplayNameRunes)
		}
		return str == "", nil
	case profileFieldAvatar:
		if str == "" {
			return true, nil
		}
		if len(str) > MaxAvatarURLBytes {
			return false, spec.ErrInvalidParam.Withf("avatar_url may not be longer than %d bytes", MaxAvatarURLBytes)
		}
		if !validMXC(str) {
			return false, spec.ErrBadJSON.With("avatar_url must be an mxc:// URI")
		}
	}
	return false, nil
}

// validMXC checks the grammar mxc://<server-name>/<media-id>, media-id of A-Za-z0-9, _ and -.
func validMXC(uri string) bool {
	rest, ok := strings.CutPrefix(uri, "mxc://")
	if !ok {
		return false
	}
	server, mediaID, ok := strings.Cut(rest, "/")
	if !ok || mediaID == "" || spec.ValidServerName(server) != nil {
		return false
	}
	for i := 0; i < len(mediaID); i++ {
		c := mediaID[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// profileSize is the length of the profile as one JSON object: {"key":value,...}. Keys are ASCII
// (profileKey) and values are stored compact.
func profileSize(fields map[string]json.RawMessage) int {
	n := 2 + max(len(fields)-1, 0) // braces and commas
	for k, v := range fields {
		n += len(strconv.Quote(k)) + 1 + len(v)
	}
	return n
}

package federation

import (
	"errors"
	"fmt"

	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/spec"
)

// What the remote membership handshakes (make_join/send_join in join.go, make_knock/send_knock in
// knock.go) share: the servers they go through, and the content they add to the template.

// tryServers runs handshake with each of servers in turn, skipping this server and repeats, and
// returns the event ID of the first that succeeds. final turns an error every server of the room
// would repeat (a refusal, a room version this server lacks) into the answer, or returns nil to go
// on with the next server. With no server to try, or when all fail, the answer is M_NOT_FOUND;
// action names the attempt in its message ("join the room", "knock on the room").
func (a *API) tryServers(servers []string, roomID, action string, handshake func(server string) (string, error), final func(error) error) (string, error) {
	var errs []error
	tried := map[string]bool{a.serverName: true}
	for _, srv := range servers {
		if tried[srv] {
			continue
		}
		tried[srv] = true
		id, err := handshake(srv)
		if err == nil {
			return id, nil
		}
		a.log.Info("federation: remote membership handshake failed", "action", action, "room_id", roomID, "server", srv, "err", err)
		if ferr := final(err); ferr != nil {
			return "", ferr
		}
		errs = append(errs, fmt.Errorf("%s: %w", srv, err))
	}
	if len(errs) == 0 {
		return "", spec.ErrNotFound.Withf("No server to %s through: give one with via or server_name", action)
	}
	return "", spec.ErrNotFound.Withf("Could not %s through any of its servers", action).WithField("details", errors.Join(errs...).Error())
}

// memberExtra is the content a joining or knocking user adds to the resident server's template:
// their profile and reason, where they have them.
func memberExtra(profile room.MemberProfile, reason string) map[string]any {
	extra := map[string]any{}
	if profile.DisplayName != "" {
		extra["displayname"] = profile.DisplayName
	}
	if profile.AvatarURL != "" {
		extra["avatar_url"] = profile.AvatarURL
	}
	if reason != "" {
		extra["reason"] = reason
	}
	return extra
}

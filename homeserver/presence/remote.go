package presence

// Presence across servers (server-server API "Presence"):
//
//	Set, Syncing, the sweep ── a real change of a local user ── Federation.Presence
//	                                 (an m.presence EDU to the servers sharing a room with them)
//	m.presence EDU ── Remote ── the remote user's state, shared with the other nodes over the bus
//
// Only changes of presence or status_msg are told, never heartbeats that change nothing. Set and
// Syncing tell from the node where the request arrived; a timeout (online → unavailable →
// offline), which every node applies by itself, is told by the nodes where the user was active.
// A remote user's state is what their server last said: no timeouts of ours, last_active_ago
// turned into a time, currently_active kept as sent; it is kept in memory only (after a restart,
// remote users are offline until their server sends a change).

// Federation is told when a local user's presence or status message changes. It must not block.
type Federation interface {
	Presence(userID string, st Status)
}

// SetFederation sets who is told about local users' presence changes. Call it before serving.
func (s *Service) SetFederation(f Federation) { s.fed = f }

// fedNotice is one call of Federation.Presence to make once mu is released.
type fedNotice struct {
	userID string
	status Status
}

// tellFederation schedules telling federation a local user's new state. mu must be held.
func (s *Service) tellFederation(e *effects, id string, st *state, now int64) {
	if s.fed != nil && !st.remote {
		e.fed = append(e.fed, fedNotice{userID: id, status: status(st, now)})
	}
}

// Remote applies the presence of a user of another server, from an m.presence EDU (the caller
// checked that the user belongs to the server that sent it): presence online, unavailable or
// offline (M_INVALID_PARAM otherwise), status message ("" for none), milliseconds since the user
// was last active, and currently_active. Users sharing a room with them see it in /sync and
// GET /presence. With presence disabled it does nothing.
func (s *Service) Remote(userID, presence, statusMsg string, lastActiveAgo int64, currentlyActive bool) error {
	return s.update(userID, presence, func(e *effects, st *state, now int64) {
		s.applyRemote(e, userID, st, presence, statusMsg, now-max(lastActiveAgo, 0), currentlyActive, now)
	})
}

// applyRemote sets a remote user's state; a change of presence, status message or
// currently_active moves the position. mu must be held.
func (s *Service) applyRemote(e *effects, id string, st *state, presence, msg string, lastActive int64, active bool, now int64) {
	st.remote = true
	st.lastActive = lastActive
	activeChanged := st.active != active
	st.active = active
	if !s.set(e, id, st, presence, msg, now, false) && activeChanged {
		s.touch(e, id, st, now, false)
	}
}

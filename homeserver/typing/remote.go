package typing

import (
	"context"
	"time"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Typing across servers (server-server API "Typing Notifications"):
//
//	Set (this node's request) ── Federation.Typing ── m.typing EDU to the room's other servers
//	expiry loop: this node's typists stopped by timeout ── Federation.Typing(false)
//	             still typing after fedRefresh ── Federation.Typing(true) again
//	m.typing EDU ── Remote ── apply and publish (every node shows it), expires after RemoteTimeout
//
// Only the node where PUT /typing arrived tells federation (changes heard on the bus never do),
// so several nodes do not send the same EDU.

// RemoteTimeout is how long a user of another server is shown typing after an m.typing EDU
// saying so: the EDU carries no timeout, and servers repeat it while their user types.
const RemoteTimeout = 30 * time.Second

// fedRefresh is how often this node repeats typing=true to other servers for its users who are
// still typing, so that their RemoteTimeout (ours: 30 s) does not end it early. A variable for
// the tests.
var fedRefresh = 20 * time.Second

// Federation is told when a user of this server starts or stops typing, through this node (the
// federation sender queues an m.typing EDU). It must not block.
type Federation interface {
	Typing(roomID, userID string, typing bool)
}

// SetFederation sets who is told about this server's typing users. Call it before serving.
func (s *Service) SetFederation(f Federation) { s.fed = f }

// notice is one call of Federation.Typing to make once mu is released.
type notice struct {
	roomID, userID string
	typing         bool
}

// refresh collects, for one room, the notices due for this node's typists: typing=false for
// those no longer typing, typing=true again for those typing for fedRefresh since the last one.
// earliest learns when the next is due. mu must be held.
func (s *Service) refresh(out []notice, roomID string, r *room, now int64, earliest func(int64)) []notice {
	for u, sent := range r.local {
		if _, typing := r.users[u]; !typing {
			delete(r.local, u)
			out = append(out, notice{roomID, u, false})
			continue
		}
		if now-sent >= fedRefresh.Milliseconds() {
			sent = now
			r.local[u] = now
			out = append(out, notice{roomID, u, true})
		}
		earliest(sent + fedRefresh.Milliseconds())
	}
	return out
}

// Remote applies an m.typing EDU about a user of another server (the caller checked that the user
// belongs to the server that sent it, and the room's ACL): the user must be joined to the room
// (M_FORBIDDEN otherwise). Typing lasts RemoteTimeout unless repeated; typing false stops it.
// The change reaches the other nodes over the bus, and is never sent back to federation.
func (s *Service) Remote(ctx context.Context, roomID, userID string, typing bool) error {
	m, err := s.members.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != "join" {
		return spec.ErrForbidden.With("The user is not joined to this room")
	}
	w := wire{RoomID: roomID, UserID: userID, Typing: typing, Node: s.node}
	if typing {
		w.ExpiresMS = time.Now().Add(RemoteTimeout).UnixMilli()
	}
	s.apply(w, false)
	s.publish(w)
	return nil
}

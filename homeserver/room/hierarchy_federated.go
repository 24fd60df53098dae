package room

import (
	"context"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The space hierarchy for other servers (server-server API, "Spaces": GET /v1/hierarchy/{roomId}).

// maxFederatedChildren bounds the children one federated /hierarchy answer describes.
const maxFederatedChildren = 250

// SpaceHierarchy is the answer of GET /_matrix/federation/v1/hierarchy/{roomId}: the room, its
// children this server knows and the asking server could peek or join, and the IDs of those it
// could not. Children this server does not know are left out.
type SpaceHierarchy struct {
	Room                 HierarchyRoom   `json:"room"`
	Children             []HierarchyRoom `json:"children"`
	InaccessibleChildren []string        `json:"inaccessible_children"`
}

// HierarchyForServer is GET /v1/hierarchy/{roomId} asked by server: M_NOT_FOUND when this server
// does not know the room or the asking server could not peek or join it. The walk itself is the
// asking server's: this answers one level, not paginated, with the children's own m.space.child
// events so that the asker can go deeper.
func (s *Service) HierarchyForServer(ctx context.Context, server, roomID string, suggestedOnly bool) (SpaceHierarchy, error) {
	c := s.store.Read()
	sums, err := loadSummaries(ctx, c, []string{roomID}, true)
	if err != nil {
		return SpaceHierarchy{}, err
	}
	notFound := spec.ErrNotFound.With("Room not found, or your server may not peek or join it")
	root := sums[roomID]
	if root == nil {
		return SpaceHierarchy{}, notFound
	}
	if ok, err := serverMayPeekOrJoin(ctx, c, root, server); err != nil {
		return SpaceHierarchy{}, err
	} else if !ok {
		return SpaceHierarchy{}, notFound
	}
	children := root.orderedChildren(suggestedOnly)
	out := SpaceHierarchy{Room: root.hierarchyRoom(children), Children: []HierarchyRoom{}, InaccessibleChildren: []string{}}
	ids := make([]string, 0, len(children))
	for _, ch := range children {
		if id := *ch.StateKey; id != roomID && !slices.Contains(ids, id) && len(ids) < maxFederatedChildren {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return out, nil
	}
	more, err := loadSummaries(ctx, c, ids, true)
	if err != nil {
		return SpaceHierarchy{}, err
	}
	for _, id := range ids {
		sum := more[id]
		if sum == nil {
			continue
		}
		ok, err := serverMayPeekOrJoin(ctx, c, sum, server)
		if err != nil {
			return SpaceHierarchy{}, err
		}
		if !ok {
			out.InaccessibleChildren = append(out.InaccessibleChildren, id)
			continue
		}
		out.Children = append(out.Children, sum.hierarchyRoom(sum.orderedChildren(suggestedOnly)))
	}
	return out, nil
}

// serverMayPeekOrJoin reports whether a server could peek into or join a room, so may learn of
// it: world_readable history, a public or knockable join rule, a member of that server joined or
// invited, or, for a restricted room, a member of that server joined to one of the allowed rooms.
func serverMayPeekOrJoin(ctx context.Context, c storage.Conn, sum *summary, server string) (bool, error) {
	if sum.WorldReadable || sum.JoinRule == JoinRulePublic {
		return true, nil
	}
	v, err := event.LookupVersion(sum.version)
	if err != nil {
		return false, nil
	}
	switch {
	case sum.JoinRule == JoinRuleKnock && v.Knocking(), sum.JoinRule == JoinRuleKnockRestricted && v.KnockRestricted():
		return true, nil
	}
	if in, err := serverHasMember(ctx, c, sum.RoomID, server, MembershipJoin, MembershipInvite); in || err != nil {
		return in, err
	}
	if sum.JoinRule != JoinRuleRestricted || !v.RestrictedJoins() {
		return false, nil
	}
	for _, id := range sum.allowedRoomIDs {
		if in, err := serverHasMember(ctx, c, id, server, MembershipJoin); in || err != nil {
			return in, err
		}
	}
	return false, nil
}

// serverHasMember reports whether a user of server has one of memberships in the room's current
// state.
func serverHasMember(ctx context.Context, c storage.Conn, roomID, server string, memberships ...string) (bool, error) {
	ms, err := c.RoomMembers(ctx, roomID, memberships...)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(ms, func(m storage.Membership) bool { return serverOf(m.UserID) == server }), nil
}

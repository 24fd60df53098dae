package room

import (
	"context"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// RoomSummary is the answer of GET /_matrix/client/v1/room_summary/{roomIdOrAlias}.
type RoomSummary struct {
	PublicRoom
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
	Membership     string   `json:"membership,omitempty"`
}

// Summary summarises a room this server knows for a user ("" when unauthenticated). The user gets
// it when they have a membership in the room, when anyone could learn of it (public, knock or
// knock_restricted join rule, world_readable history), or when a restricted room's allow list
// names a room they are joined to; otherwise the room is reported as not found.
func (s *Service) Summary(ctx context.Context, userID, roomIDOrAlias string) (RoomSummary, error) {
	roomID := roomIDOrAlias
	if strings.HasPrefix(roomIDOrAlias, "#") {
		var err error
		if roomID, _, err = s.ResolveAlias(ctx, roomIDOrAlias); err != nil {
			return RoomSummary{}, err
		}
	}
	c := s.store.Read()
	sums, err := loadSummaries(ctx, c, []string{roomID}, false)
	if err != nil {
		return RoomSummary{}, err
	}
	sum, ok := sums[roomID]
	notFound := spec.ErrNotFound.With("Room not found")
	if !ok {
		return RoomSummary{}, notFound
	}
	out := RoomSummary{PublicRoom: sum.PublicRoom, AllowedRoomIDs: sum.allowedRoomIDs, Encryption: sum.encryption, RoomVersion: sum.version}
	if userID != "" {
		if out.Membership, err = s.CurrentMembership(ctx, roomID, userID); err != nil {
			return RoomSummary{}, err
		}
	}
	switch {
	case out.Membership != "" && out.Membership != MembershipLeave:
	case sum.WorldReadable, sum.JoinRule == JoinRulePublic, sum.JoinRule == JoinRuleKnock, sum.JoinRule == joinRuleKnockRestricted:
	case userID != "" && (sum.JoinRule == joinRuleRestricted) && s.joinedAny(ctx, userID, sum.allowedRoomIDs):
	default:
		return RoomSummary{}, notFound
	}
	if out.Membership == MembershipLeave {
		out.Membership = ""
	}
	return out, nil
}

func (s *Service) joinedAny(ctx context.Context, userID string, rooms []string) bool {
	for _, r := range rooms {
		if m, err := s.CurrentMembership(ctx, r, userID); err == nil && m == MembershipJoin {
			return true
		}
	}
	return false
}

// MutualRooms lists the rooms both users are joined to.
func (s *Service) MutualRooms(ctx context.Context, userID, other string) ([]string, error) {
	mine, err := s.JoinedRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	theirs, err := s.JoinedRooms(ctx, other)
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool, len(theirs))
	for _, r := range theirs {
		set[r] = true
	}
	out := []string{}
	for _, r := range mine {
		if set[r] {
			out = append(out, r)
		}
	}
	return out, nil
}

package room

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"

	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// The space hierarchy (client-server API, "Spaces": GET /rooms/{roomId}/hierarchy).

// Hierarchy limits.
const (
	DefaultHierarchyLimit = 50
	MaxHierarchyLimit     = 100
	MaxHierarchyDepth     = 50 // also the default
	maxHierarchyRooms     = 5000
)

// HierarchyRequest is a validated /hierarchy query.
type HierarchyRequest struct {
	RoomID        string
	User          string
	SuggestedOnly bool
	MaxDepth      int // < 0: the default
	Limit         int // 0: the default
	From          string
	// Remote, when set, asks other servers about rooms this server does not know (the root
	// through Via, children through their m.space.child via lists).
	Remote HierarchyFetcher
	Via    []string
}

// HierarchyRoom is one SpaceHierarchyRoomsChunk.
type HierarchyRoom struct {
	PublicRoom
	AllowedRoomIDs []string          `json:"allowed_room_ids,omitempty"`
	Encryption     string            `json:"encryption,omitempty"`
	RoomVersion    string            `json:"room_version,omitempty"`
	ChildrenState  []json.RawMessage `json:"children_state"`
}

// HierarchyPage is a /hierarchy response.
type HierarchyPage struct {
	Rooms     []HierarchyRoom `json:"rooms"`
	NextBatch string          `json:"next_batch,omitempty"`
}

// hierarchyToken is the state of a paginated walk: the walk is repeated and the rooms already
// returned skipped, so no server-side session is kept.
type hierarchyToken struct {
	Root      string `json:"r"`
	Suggested bool   `json:"s"`
	MaxDepth  int    `json:"d"`
	Offset    int    `json:"o"`
}

func (h hierarchyToken) String() string {
	return base64.RawURLEncoding.EncodeToString(mustJSON(h))
}

// Hierarchy walks the space tree from a room depth first, over the m.space.child events of the
// space-rooms this server knows (others are asked of other servers with req.Remote, or skipped),
// and returns
// the rooms the user may see (member, invited, may join or knock, or world_readable) in the
// spec's child order.
func (s *Service) Hierarchy(ctx context.Context, req HierarchyRequest) (HierarchyPage, error) {
	maxDepth := req.MaxDepth
	if maxDepth < 0 || maxDepth > MaxHierarchyDepth {
		maxDepth = MaxHierarchyDepth
	}
	limit := req.Limit
	if limit <= 0 {
		limit = DefaultHierarchyLimit
	}
	limit = min(limit, MaxHierarchyLimit)
	tok := hierarchyToken{Root: req.RoomID, Suggested: req.SuggestedOnly, MaxDepth: maxDepth}
	if req.From != "" {
		var from hierarchyToken
		raw, err := base64.RawURLEncoding.DecodeString(req.From)
		if err != nil || json.Unmarshal(raw, &from) != nil || from.Offset < 0 || from.Root != req.RoomID {
			return HierarchyPage{}, spec.ErrInvalidParam.Withf("Unknown pagination token %q", req.From)
		}
		if from.Suggested != tok.Suggested || from.MaxDepth != tok.MaxDepth {
			return HierarchyPage{}, spec.ErrInvalidParam.With("suggested_only and max_depth cannot change on paginated requests")
		}
		tok.Offset = from.Offset
	}

	c := s.store.Read()
	ms, err := c.RoomsOfUser(ctx, req.User, MembershipJoin, MembershipInvite, MembershipKnock, MembershipLeave, MembershipBan)
	if err != nil {
		return HierarchyPage{}, err
	}
	memberships := make(map[string]string, len(ms))
	for _, m := range ms {
		memberships[m.RoomID] = m.Membership
	}
	sums, err := loadSummaries(ctx, c, []string{req.RoomID}, true)
	if err != nil {
		return HierarchyPage{}, err
	}
	remote := newRemoteWalk(req.Remote, req.SuggestedOnly)
	if sums[req.RoomID] == nil {
		sums[req.RoomID] = remote.summary(ctx, req.RoomID, req.Via)
	}
	if root := sums[req.RoomID]; root == nil || !root.accessibleTo(memberships) {
		return HierarchyPage{}, spec.ErrForbidden.With("You are not allowed to view this room")
	}

	type entry struct {
		roomID string
		depth  int
		via    []string
	}
	stack := []entry{{req.RoomID, 0, req.Via}}
	visited := map[string]bool{}
	page := HierarchyPage{Rooms: []HierarchyRoom{}}
	skip, found := tok.Offset, 0
	for len(stack) > 0 && len(visited) < maxHierarchyRooms {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if visited[e.roomID] {
			continue
		}
		visited[e.roomID] = true
		sum := sums[e.roomID]
		if sum == nil {
			sum = remote.summary(ctx, e.roomID, e.via)
		}
		if sum == nil || !sum.accessibleTo(memberships) {
			continue
		}
		if len(page.Rooms) == limit {
			// One more visible room exists: there is a next page.
			tok.Offset = found // the rooms walked so far, this page's and the earlier ones
			page.NextBatch = tok.String()
			break
		}
		children := sum.orderedChildren(req.SuggestedOnly)
		if skip > 0 {
			skip--
		} else {
			page.Rooms = append(page.Rooms, sum.hierarchyRoom(children))
		}
		found++
		if e.depth >= maxDepth || len(children) == 0 {
			continue
		}
		var unknown []string
		for _, ch := range children {
			if _, ok := sums[*ch.StateKey]; !ok && !visited[*ch.StateKey] {
				unknown = append(unknown, *ch.StateKey)
			}
		}
		if len(unknown) > 0 {
			more, err := loadSummaries(ctx, c, unknown, true)
			if err != nil {
				return HierarchyPage{}, err
			}
			for _, id := range unknown {
				sums[id] = more[id] // nil for rooms this server does not know
			}
		}
		for i := len(children) - 1; i >= 0; i-- {
			stack = append(stack, entry{*children[i].StateKey, e.depth + 1, childVia(children[i])})
		}
	}
	return page, nil
}

// accessibleTo reports whether a user with the given room memberships may see the room in a
// hierarchy: joined or invited, the join rule lets them join or knock, or it is world_readable.
func (s *summary) accessibleTo(memberships map[string]string) bool {
	switch memberships[s.RoomID] {
	case MembershipBan:
		return false
	case MembershipJoin, MembershipInvite:
		return true
	}
	if s.WorldReadable || s.JoinRule == JoinRulePublic {
		return true
	}
	v, err := event.LookupVersion(s.version)
	if err != nil {
		return false
	}
	switch s.JoinRule {
	case JoinRulePublic:
		return true
	case JoinRuleKnock:
		return v.Knocking()
	case JoinRuleKnockRestricted:
		if v.KnockRestricted() {
			return true
		}
	case JoinRuleRestricted:
		if !v.RestrictedJoins() {
			return false
		}
		for _, id := range s.allowedRoomIDs {
			if memberships[id] == MembershipJoin {
				return true
			}
		}
	}
	return false
}

// orderedChildren are the space's children (only for space-rooms), suggested ones only if asked,
// in the spec's order: valid order keys first, by order, then by origin_server_ts, then room ID.
func (s *summary) orderedChildren(suggestedOnly bool) []storage.Event {
	if s.RoomType != RoomTypeSpace {
		return nil
	}
	type child struct {
		ev    storage.Event
		order string
		valid bool
	}
	var list []child
	for _, ev := range s.children {
		content := contentOf(ev)
		if suggestedOnly {
			var suggested bool
			if json.Unmarshal(content["suggested"], &suggested) != nil || !suggested {
				continue
			}
		}
		var order string
		valid := json.Unmarshal(content["order"], &order) == nil && validChildOrder(order)
		list = append(list, child{ev, order, valid})
	}
	slices.SortFunc(list, func(a, b child) int {
		if a.valid != b.valid {
			if a.valid {
				return -1
			}
			return 1
		}
		if a.valid {
			if c := cmp.Compare(a.order, b.order); c != 0 {
				return c
			}
		}
		if c := cmp.Compare(a.ev.OriginServerTS, b.ev.OriginServerTS); c != 0 {
			return c
		}
		return cmp.Compare(*a.ev.StateKey, *b.ev.StateKey)
	})
	out := make([]storage.Event, len(list))
	for i, ch := range list {
		out[i] = ch.ev
	}
	return out
}

// validChildOrder: at most 50 characters between \x20 and \x7E.
func validChildOrder(o string) bool {
	if o == "" || len(o) > 50 {
		return false
	}
	for i := 0; i < len(o); i++ {
		if o[i] < 0x20 || o[i] > 0x7E {
			return false
		}
	}
	return true
}

// hierarchyRoom is the room's chunk with its children as stripped state events.
func (s *summary) hierarchyRoom(children []storage.Event) HierarchyRoom {
	h := HierarchyRoom{PublicRoom: s.PublicRoom, AllowedRoomIDs: s.allowedRoomIDs, Encryption: s.encryption,
		RoomVersion: s.version, ChildrenState: make([]json.RawMessage, 0, len(children))}
	for _, ev := range children {
		var e struct {
			Content json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal(ev.ClientJSON, &e)
		h.ChildrenState = append(h.ChildrenState, mustJSON(map[string]any{
			"type": ev.Type, "state_key": *ev.StateKey, "content": e.Content, "sender": ev.Sender, "origin_server_ts": ev.OriginServerTS,
		}))
	}
	return h
}

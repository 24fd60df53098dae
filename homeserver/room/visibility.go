package room

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// History visibility values.
const (
	VisibilityWorldReadable = "world_readable"
	VisibilityShared        = "shared"
	VisibilityInvited       = "invited"
	VisibilityJoined        = "joined"
)

// viewer decides which events of one room one user may see (client-server API, "History
// visibility", server behaviour). It reads the user's membership history and the room's
// history_visibility history once (two queries) and then answers per event in memory, by stream
// position: the state "at" an event is the state after the events before it in stream order.
type viewer struct {
	userID      string
	memberships []storage.PosValue // the user's membership events, by stream position
	visibility  []storage.PosValue // history_visibility values, by stream position
}

func loadViewer(ctx context.Context, c storage.Conn, roomID, userID string) (*viewer, error) {
	ms, err := c.MembershipHistory(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	hv, err := c.StateHistory(ctx, roomID, "m.room.history_visibility", "")
	if err != nil {
		return nil, err
	}
	for i := range hv {
		hv[i].Value = historyVisibility([]byte(hv[i].Value))
	}
	return &viewer{userID: userID, memberships: ms, visibility: hv}, nil
}

// at returns the value of a history at stream position pos ("" before the first entry).
// inclusive says whether an entry at exactly pos counts.
func at(h []storage.PosValue, pos int64, inclusive bool) string {
	i := sort.Search(len(h), func(i int) bool {
		if inclusive {
			return h[i].Pos > pos
		}
		return h[i].Pos >= pos
	})
	if i == 0 {
		return ""
	}
	return h[i-1].Value
}

// historyVisibility is the history_visibility of an m.room.history_visibility event (as a client
// sees it), as written ("" when it has none).
func historyVisibility(clientJSON []byte) string {
	var ev struct {
		Content struct {
			HistoryVisibility string `json:"history_visibility"`
		} `json:"content"`
	}
	_ = json.Unmarshal(clientJSON, &ev)
	return ev.Content.HistoryVisibility
}

func normaliseVisibility(v string) string {
	switch v {
	case VisibilityWorldReadable, VisibilityInvited, VisibilityJoined:
		return v
	}
	return VisibilityShared // the default, also for values not understood
}

// allowedAt applies the spec's rules with the state before (inclusive=false) or after
// (inclusive=true) the event at pos.
func (v *viewer) allowedAt(pos int64, inclusive bool) bool {
	vis := normaliseVisibility(at(v.visibility, pos, inclusive))
	membership := at(v.memberships, pos, inclusive)
	switch {
	case vis == VisibilityWorldReadable:
		return true
	case membership == MembershipJoin:
		return true
	case vis == VisibilityShared && v.joinedAfter(pos):
		return true
	case vis == VisibilityInvited && membership == MembershipInvite:
		return true
	}
	return false
}

func (v *viewer) joinedAfter(pos int64) bool {
	for _, m := range v.memberships {
		if m.Pos > pos && m.Value == MembershipJoin {
			return true
		}
	}
	return false
}

// canSee reports whether the user may see the event. The state at an event is the state before
// it; history_visibility events and the user's own membership events are visible if the state
// before or after them allows it.
func (v *viewer) canSee(e *storage.Event) bool {
	if v.allowedAt(e.StreamPos, false) {
		return true
	}
	if e.StateKey != nil && (e.Type == "m.room.history_visibility" && *e.StateKey == "" ||
		e.Type == TypeMember && *e.StateKey == v.userID) {
		return v.allowedAt(e.StreamPos, true)
	}
	return false
}

// everInRoom reports whether the user was ever joined or invited (for endpoints that refuse
// users who never had anything to do with the room).
func (v *viewer) everInRoom() bool {
	for _, m := range v.memberships {
		if m.Value == MembershipJoin || m.Value == MembershipInvite {
			return true
		}
	}
	return false
}

// current is the user's current membership ("" if none).
func (v *viewer) current() string {
	if len(v.memberships) == 0 {
		return ""
	}
	return v.memberships[len(v.memberships)-1].Value
}

// worldReadableNow reports whether the room is currently world_readable.
func (v *viewer) worldReadableNow() bool {
	if len(v.visibility) == 0 {
		return false
	}
	return normaliseVisibility(v.visibility[len(v.visibility)-1].Value) == VisibilityWorldReadable
}

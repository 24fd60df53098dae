package room

import (
	"context"
	"encoding/json"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Room summaries: what the published room directory (PublishedRoomsChunk) and the space hierarchy
// (RoomSummary) say about a room, read from its current state.

// PublicRoom is one PublishedRoomsChunk of /publicRooms.
type PublicRoom struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// summary is a room's PublicRoom plus what the hierarchy and the visibility checks need.
type summary struct {
	PublicRoom
	version        string
	encryption     string
	allowedRoomIDs []string
	children       []storage.Event // m.space.child events with a valid via, in no particular order
	createdTS      int64
}

// summaryTypes are the state event types a summary reads (all with state key "").
var summaryTypes = []string{TypeCreate, "m.room.name", "m.room.topic", "m.room.canonical_alias", "m.room.avatar",
	TypeJoinRules, "m.room.history_visibility", "m.room.guest_access", "m.room.encryption"}

// TypeSpaceChild is the m.space.child state event of a space-room; its state key is the child's ID.
const TypeSpaceChild = "m.space.child"

// RoomTypeSpace is the room type (m.room.create content.type) of a space.
const RoomTypeSpace = "m.space"

// loadSummaries reads the summaries of the rooms this server knows among ids, with three queries
// whatever the number of rooms. withChildren also reads their m.space.child events.
func loadSummaries(ctx context.Context, c storage.Conn, ids []string, withChildren bool) (map[string]*summary, error) {
	rooms, err := c.RoomsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*summary, len(rooms))
	known := make([]string, 0, len(rooms))
	for _, r := range rooms {
		out[r.RoomID] = &summary{PublicRoom: PublicRoom{RoomID: r.RoomID, JoinRule: JoinRuleInvite}, version: r.Version, createdTS: r.CreatedTS}
		known = append(known, r.RoomID)
	}
	types := summaryTypes
	if withChildren {
		types = append(append([]string(nil), summaryTypes...), TypeSpaceChild)
	}
	evs, err := c.CurrentStateEvents(ctx, known, types)
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		sum := out[e.RoomID]
		if sum == nil || e.StateKey == nil {
			continue
		}
		if e.Type == TypeSpaceChild {
			if *e.StateKey != "" && validSpaceChild(contentOf(e)) {
				sum.children = append(sum.children, e)
			}
			continue
		}
		if *e.StateKey == "" {
			sum.apply(e.Type, contentOf(e))
		}
	}
	counts, err := c.JoinedMemberCounts(ctx, known)
	if err != nil {
		return nil, err
	}
	for id, n := range counts {
		out[id].NumJoinedMembers = n
	}
	return out, nil
}

// apply reads one state event's content into the summary.
func (s *summary) apply(typ string, content map[string]json.RawMessage) {
	str := func(key string) string { return stringField(content, key) }
	switch typ {
	case TypeCreate:
		s.RoomType = str("type")
	case "m.room.name":
		s.Name = str("name")
	case "m.room.topic":
		s.Topic = plainTopic(content)
	case "m.room.canonical_alias":
		s.CanonicalAlias = str("alias")
	case "m.room.avatar":
		s.AvatarURL = str("url")
	case TypeJoinRules:
		s.JoinRule = str("join_rule")
		var allow []AllowCondition
		_ = json.Unmarshal(content["allow"], &allow)
		s.allowedRoomIDs = nil
		for _, a := range allow {
			if a.Type == "m.room_membership" && a.RoomID != "" {
				s.allowedRoomIDs = append(s.allowedRoomIDs, a.RoomID)
			}
		}
	case "m.room.history_visibility":
		s.WorldReadable = str("history_visibility") == VisibilityWorldReadable
	case "m.room.guest_access":
		s.GuestCanJoin = str("guest_access") == "can_join"
	case "m.room.encryption":
		s.encryption = str("algorithm")
	}
}

// plainTopic is the text/plain representation of an m.room.topic: from m.topic when it has one,
// else the topic field.
func plainTopic(content map[string]json.RawMessage) string {
	var rich struct {
		Text []struct {
			Body     string  `json:"body"`
			MimeType *string `json:"mimetype"`
		} `json:"m.text"`
	}
	if json.Unmarshal(content["m.topic"], &rich) == nil {
		for _, t := range rich.Text {
			if t.MimeType == nil || *t.MimeType == "text/plain" {
				return t.Body
			}
		}
	}
	var topic string
	_ = json.Unmarshal(content["topic"], &topic)
	return topic
}

// contentOf decodes the content of a stored event (nil if it has none).
// stringField is content[key] when it is a JSON string, else "".
func stringField(content map[string]json.RawMessage, key string) string {
	var v string
	_ = json.Unmarshal(content[key], &v)
	return v
}

func contentOf(e storage.Event) map[string]json.RawMessage { return clientContent(e.ClientJSON) }

// clientContent is the content of an event in its client form.
func clientContent(clientJSON []byte) map[string]json.RawMessage {
	var ev struct {
		Content map[string]json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(clientJSON, &ev)
	return ev.Content
}

// validSpaceChild reports whether m.space.child content makes the child part of the space: via is
// present and a non-empty array of strings.
func validSpaceChild(content map[string]json.RawMessage) bool {
	var via []string
	return json.Unmarshal(content["via"], &via) == nil && len(via) > 0
}

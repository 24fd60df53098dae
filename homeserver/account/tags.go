package account

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// Room tags (module "Room Tagging") are the room account data entry of type m.tag, whose content
// is {"tags": {name: object}}; the tag endpoints read and edit single names in it, and /sync
// delivers it as any room account data.

// TagType is the room account data type that holds a room's tags.
const TagType = "m.tag"

// maxTagBytes is the spec's limit on a tag's name.
const maxTagBytes = 255

// RoomTags is GET /user/{userId}/rooms/{roomId}/tags: {"tags": {...}}, empty when the room has none.
func (s *Service) RoomTags(ctx context.Context, localpart, roomID string) (json.RawMessage, error) {
	if err := checkAccountDataKey(roomID, TagType); err != nil {
		return nil, err
	}
	tags, err := readTags(ctx, s.store.Read(), localpart, roomID)
	if err != nil {
		return nil, err
	}
	return json.Marshal(tagContent{Tags: tags})
}

// SetRoomTag is PUT /user/{userId}/rooms/{roomId}/tags/{tag}: adds the tag, or replaces its object,
// which must be a JSON object whose order, if any, is a number.
func (s *Service) SetRoomTag(ctx context.Context, localpart, roomID, tag string, body json.RawMessage) error {
	if err := checkTag(roomID, tag); err != nil {
		return err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil || compact.Len() == 0 || compact.Bytes()[0] != '{' {
		return spec.ErrBadJSON.With("A tag's content must be a JSON object")
	}
	var fields struct {
		Order json.RawMessage `json:"order"`
	}
	if err := json.Unmarshal(compact.Bytes(), &fields); err != nil {
		return spec.ErrBadJSON.With("A tag's content must be a JSON object")
	}
	if fields.Order != nil {
		var n float64
		if err := json.Unmarshal(fields.Order, &n); err != nil {
			return spec.ErrBadJSON.With("A tag's order must be a number")
		}
	}
	return s.editTags(ctx, localpart, roomID, func(tags map[string]json.RawMessage) bool {
		if old, ok := tags[tag]; ok && bytes.Equal(old, compact.Bytes()) {
			return false
		}
		tags[tag] = compact.Bytes()
		return true
	})
}

// DeleteRoomTag is DELETE /user/{userId}/rooms/{roomId}/tags/{tag}. Removing a tag the room does
// not have succeeds and changes nothing.
func (s *Service) DeleteRoomTag(ctx context.Context, localpart, roomID, tag string) error {
	if err := checkTag(roomID, tag); err != nil {
		return err
	}
	return s.editTags(ctx, localpart, roomID, func(tags map[string]json.RawMessage) bool {
		if _, ok := tags[tag]; !ok {
			return false
		}
		delete(tags, tag)
		return true
	})
}

// editTags applies edit to a room's tags in one transaction and, when edit reports a change,
// stores them under a new account data position and announces it. The account data counter is
// locked before the read, so that two edits at once (two devices, or two nodes on PostgreSQL)
// apply one after the other instead of one losing the other's tag.
func (s *Service) editTags(ctx context.Context, localpart, roomID string, edit func(map[string]json.RawMessage) bool) error {
	var pos int64
	err := s.store.Write(ctx, func(c storage.Conn) error {
		if _, err := c.LockPosition(ctx, storage.StreamAccountData); err != nil {
			return err
		}
		tags, err := readTags(ctx, c, localpart, roomID)
		if err != nil || !edit(tags) {
			return err
		}
		content, err := json.Marshal(tagContent{Tags: tags})
		if err != nil {
			return err
		}
		pos, err = c.PutAccountData(ctx, localpart, roomID, TagType, content)
		return err
	})
	if err != nil || pos == 0 {
		return err
	}
	s.announceAccountData(s.UserID(localpart), pos)
	return nil
}

type tagContent struct {
	Tags map[string]json.RawMessage `json:"tags"`
}

// readTags reads a room's tags: none when there is no m.tag entry, or when the entry (which the
// account data API lets a client write as it likes) has no tags object.
func readTags(ctx context.Context, c storage.Conn, localpart, roomID string) (map[string]json.RawMessage, error) {
	raw, err := c.GetAccountData(ctx, localpart, roomID, TagType)
	if errors.Is(err, storage.ErrNotFound) {
		return map[string]json.RawMessage{}, nil
	}
	if err != nil {
		return nil, err
	}
	var content tagContent
	if json.Unmarshal(raw, &content) != nil || content.Tags == nil {
		return map[string]json.RawMessage{}, nil
	}
	for name, v := range content.Tags {
		if len(v) == 0 || v[0] != '{' { // not an object: not a tag anyone can read
			delete(content.Tags, name)
		}
	}
	return content.Tags, nil
}

func checkTag(roomID, tag string) error {
	if err := checkAccountDataKey(roomID, TagType); err != nil {
		return err
	}
	if tag == "" || len(tag) > maxTagBytes {
		return spec.ErrInvalidParam.Withf("A tag must be 1 to %d bytes long", maxTagBytes)
	}
	return nil
}

package account

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/hearthmx/homeserver/homeserver/bus"
	"github.com/hearthmx/homeserver/homeserver/spec"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// serverManagedAccountData are the account data types the server manages: clients read them like
// any other but may not set them through the account data API (module "Client Config").
var serverManagedAccountData = map[string]bool{"m.fully_read": true, "m.push_rules": true}

// maxEventTypeBytes is the spec's size limit of an event type.
const maxEventTypeBytes = 255

// checkAccountDataKey validates the room ID (when not "" = global) and type of an account data entry.
func checkAccountDataKey(roomID, dataType string) error {
	if roomID != "" && !validRoomID(roomID) {
		return spec.ErrInvalidParam.Withf("%q is not a valid room ID", roomID)
	}
	if dataType == "" || len(dataType) > maxEventTypeBytes {
		return spec.ErrInvalidParam.Withf("The account data type must be 1 to %d bytes long", maxEventTypeBytes)
	}
	return nil
}

// AccountData is GET /user/{userId}/account_data/{type} (roomID "") and
// GET /user/{userId}/rooms/{roomId}/account_data/{type}: the content of one entry of a user's
// account data, M_NOT_FOUND if there is none. Global and per-room data are separate: a room without
// an entry does not fall back to the global one.
func (s *Service) AccountData(ctx context.Context, localpart, roomID, dataType string) (json.RawMessage, error) {
	if err := checkAccountDataKey(roomID, dataType); err != nil {
		return nil, err
	}
	content, err := s.store.Read().GetAccountData(ctx, localpart, roomID, dataType)
	if errors.Is(err, storage.ErrNotFound) {
		if roomID != "" {
			return nil, spec.ErrNotFound.With("Room account data not found")
		}
		return nil, spec.ErrNotFound.With("Account data not found")
	}
	return content, err
}

// SetAccountData is PUT /user/{userId}/account_data/{type} (roomID "") and
// PUT /user/{userId}/rooms/{roomId}/account_data/{type}. content must be a JSON object. Types the
// server manages get 405 M_BAD_JSON. The entry gets a new account_data stream position, announced
// on the bus after commit.
func (s *Service) SetAccountData(ctx context.Context, localpart, roomID, dataType string, content json.RawMessage) error {
	if err := checkAccountDataKey(roomID, dataType); err != nil {
		return err
	}
	if serverManagedAccountData[dataType] {
		return spec.ErrBadJSON.WithStatus(http.StatusMethodNotAllowed).Withf("Cannot set %s through this API", dataType)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, content); err != nil || compact.Len() == 0 || compact.Bytes()[0] != '{' {
		return spec.ErrBadJSON.With("Account data content must be a JSON object")
	}
	var pos int64
	err := s.store.Write(ctx, func(c storage.Conn) error {
		var err error
		pos, err = c.PutAccountData(ctx, localpart, roomID, dataType, compact.Bytes())
		return err
	})
	if err != nil {
		return err
	}
	s.announceAccountData(s.UserID(localpart), pos)
	return nil
}

// announceAccountData tells /sync on every node that a user's account data reached position pos.
func (s *Service) announceAccountData(user spec.UserID, pos int64) {
	if s.bus == nil {
		return
	}
	msg, _ := json.Marshal(map[string]any{"user_id": user, "pos": pos})
	if err := s.bus.Publish(bus.SubjectAccountData, msg); err != nil {
		s.log.Warn("publish account data", "err", err)
	}
}

// validRoomID checks the room ID grammar (appendix "Room IDs"): "!" then either
// opaque_id:server_name (room versions 1 to 11; the opaque part is any UTF-8 but NUL and ":") or,
// without a domain (room version 12), the create event's ID hash in URL-safe unpadded base64. At
// most 255 bytes.
func validRoomID(id string) bool {
	if len(id) < 2 || len(id) > 255 || id[0] != '!' || !utf8.ValidString(id) {
		return false
	}
	opaque, server, hasDomain := strings.Cut(id[1:], ":")
	if hasDomain {
		return opaque != "" && !strings.ContainsRune(opaque, 0) && spec.ValidServerName(server) == nil
	}
	for i := 0; i < len(opaque); i++ {
		c := opaque[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
